"""Connections to the system of record, and transactions that retry what MariaDB asks to.

The client is ``mysqlclient`` (libmariadb, in C): a batched lookup of 1,000 drivers parses
in about a third of PyMySQL's time, which is the difference between meeting the 20 ms
target and missing it (README, "Registry").

:func:`connect` refuses a database whose schema is missing or older than this code
("run ``casatwin db migrate``") and one whose last bulk load stopped before rebuilding its
indexes, so that no service reads a half-made registry. Dates come back as ISO strings.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import MySQLdb
import MySQLdb.connections
import MySQLdb.cursors
from MySQLdb import converters
from MySQLdb.constants import FIELD_TYPE

from casatwin.config import MariaDBSettings
from casatwin.errors import UserError

T = TypeVar("T")

Connection = MySQLdb.connections.Connection
Cursor = MySQLdb.cursors.Cursor
Error = MySQLdb.Error

# MariaDB error numbers we act on.
ER_DUP_ENTRY = 1062
ER_LOCK_WAIT_TIMEOUT = 1205
ER_LOCK_DEADLOCK = 1213
ER_BAD_DB = 1049
ER_ACCESS_DENIED = (1044, 1045)
CR_UNREACHABLE = (2002, 2003, 2005, 2006, 2013)
CR_TLS_FAILED = 2026
RETRYABLE = frozenset({ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK})

_CONVERSIONS = converters.conversions.copy()
_CONVERSIONS[FIELD_TYPE.DATE] = str  # ISO text as the server sends it: no parsing per value


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def open_connection(
    settings: MariaDBSettings, *, database: str | None = "", local_infile: bool = False
) -> Connection:
    """A raw connection (autocommit on); :class:`UserError` when MariaDB cannot be reached.

    ``database=None`` connects without choosing a database (to create it).
    """
    try:
        return MySQLdb.connect(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            password=settings.password,
            **({} if database is None else {"database": database or settings.database}),
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=max(1, round(settings.connect_timeout_s)),
            local_infile=local_infile,
            conv=_CONVERSIONS,
            **_tls_options(settings),
        )
    except MySQLdb.OperationalError as exc:
        raise _connect_error(exc, settings, database) from None


def connect(settings: MariaDBSettings, *, check_schema: bool = True) -> Connection:
    """A connection to the registry whose schema is current (the processor's entry point)."""
    conn = open_connection(settings)
    if check_schema:
        from casatwin.registry import schema

        try:
            schema.require_current(conn, settings.database)
            schema.require_indexes(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def _tls_options(settings: MariaDBSettings) -> dict[str, Any]:
    """TLS with the server's certificate checked against the CA and the host's name."""
    if not settings.tls_ca_file:
        return {}
    return {"ssl": {"ca": settings.tls_ca_file}, "ssl_mode": "VERIFY_IDENTITY"}


def _connect_error(
    exc: BaseException, settings: MariaDBSettings, database: str | None
) -> UserError:
    code = error_code(exc)
    where = f"{settings.host}:{settings.port}"
    if code in CR_UNREACHABLE:
        return UserError(
            f"cannot reach MariaDB at {where} ({exc.args[-1]})",
            hint="start it (`make run` starts one), or set CASATWIN_MARIADB_HOST and "
            "CASATWIN_MARIADB_PORT",
        )
    if code == CR_TLS_FAILED:
        return UserError(
            f"no TLS connection to MariaDB at {where}: {exc.args[-1]}",
            hint="CASATWIN_MARIADB_TLS_CA_FILE must name the CA that signed MariaDB's "
            "certificate, and CASATWIN_MARIADB_HOST a name that certificate holds",
        )
    if code in ER_ACCESS_DENIED:
        return UserError(
            f"MariaDB at {where} refused user {settings.user!r}: {exc.args[-1]}",
            hint="check CASATWIN_MARIADB_USER and CASATWIN_MARIADB_PASSWORD (and, where "
            "MariaDB requires TLS, CASATWIN_MARIADB_TLS_CA_FILE: it refuses a client without)",
        )
    if code == ER_BAD_DB:
        return UserError(
            f"MariaDB at {where} has no database {database or settings.database!r}",
            hint="run `casatwin db migrate` (it creates the database and the schema)",
        )
    return UserError(f"cannot connect to MariaDB at {where}: {exc}")


def transaction(
    conn: Connection,
    work: Callable[[Cursor], T],
    *,
    isolation: str = "READ COMMITTED",
    attempts: int = 8,
    retry_on: frozenset[int] = RETRYABLE,
) -> T:
    """Run ``work(cursor)`` in one transaction; retry it on deadlocks and lock timeouts.

    ``work`` must be safe to run again from the start (it only talks to the database).
    READ COMMITTED: every statement sees what committed before it, which is what code that
    first locks a row and then reads around it expects.
    """
    for attempt in range(attempts):
        cursor = conn.cursor()
        try:
            cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            cursor.execute("START TRANSACTION")
            result = work(cursor)
            conn.commit()
            return result
        except MySQLdb.Error as exc:
            _rollback(conn)
            if error_code(exc) not in retry_on or attempt == attempts - 1:
                raise
            # Jittered exponential backoff so that two retrying writers do not meet again.
            time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + random.random()))
        except BaseException:
            _rollback(conn)
            raise
        finally:
            cursor.close()
    raise AssertionError("unreachable")


def _rollback(conn: Connection) -> None:
    # If the connection is gone, the server rolls back on its own.
    with contextlib.suppress(MySQLdb.Error):
        conn.rollback()


def scalar(cursor: Cursor, sql: str, args: Any = None) -> Any:
    cursor.execute(sql, args)
    row = cursor.fetchone()
    return None if row is None else row[0]
