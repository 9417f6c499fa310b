"""Versioned migrations (``migrations/NNNN_name.sql``) and the checks that guard them.

``casatwin db migrate`` applies the pending migrations in order and records each in
``schema_migrations`` with its checksum. Every statement is idempotent (``IF NOT EXISTS``),
so a migration interrupted half way (MariaDB's DDL is not transactional) completes when
run again. An advisory lock keeps two ``migrate`` runs from interleaving.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources

from casatwin.config import MariaDBSettings
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.registry.db import Connection, Error, error_code, open_connection

log = get_logger("registry")

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
ER_NO_SUCH_TABLE = 1146
LOCK_NAME = "casatwin.db.migrate"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def statements(self) -> list[str]:
        """The SQL statements, comments dropped; each ends with ``;`` at the end of a line."""
        lines = [ln for ln in self.sql.splitlines() if not ln.lstrip().startswith("--")]
        text = "\n".join(lines)
        return [s.strip() for s in re.split(r";\s*$", text, flags=re.M) if s.strip()]


@cache
def migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("casatwin.registry.migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return tuple(found)


def latest_version() -> int:
    return migrations()[-1].version


def applied_versions(conn: Connection) -> dict[int, str]:
    """version → checksum of the migrations this database has; empty when it has none."""
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT version, checksum FROM schema_migrations")
    except Error as exc:
        if error_code(exc) == ER_NO_SUCH_TABLE:
            return {}
        raise
    return {int(v): c for v, c in cursor.fetchall()}


def migrate_database(
    settings: MariaDBSettings, target: int | None = None
) -> tuple[list[Migration], int]:
    """Create the database if it is missing, then :func:`migrate`; (applied now, version)."""
    server = open_connection(settings, database=None)
    try:
        server.cursor().execute(
            f"CREATE DATABASE IF NOT EXISTS `{settings.database}` CHARACTER SET utf8mb4"
        )
    except Error as exc:
        raise UserError(
            f"cannot create database {settings.database!r}: {exc.args[-1]}",
            hint="create it as an administrator, or grant CREATE to the casatwin user",
        ) from None
    finally:
        server.close()
    conn = open_connection(settings)
    try:
        applied = migrate(conn, target=target)
        return applied, max(applied_versions(conn), default=0)
    finally:
        conn.close()


def migrate(conn: Connection, target: int | None = None) -> list[Migration]:
    """Apply the pending migrations up to ``target`` (default: all); the ones applied now."""
    cursor = conn.cursor()
    cursor.execute("SELECT GET_LOCK(%s, 60)", (LOCK_NAME,))
    if cursor.fetchone()[0] != 1:
        raise UserError(
            "another `casatwin db migrate` holds the migration lock",
            hint="wait for it to finish, then run this again",
        )
    try:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL,"
            " checksum CHAR(64) NOT NULL, applied_ms BIGINT NOT NULL) ENGINE=InnoDB"
        )
        done = applied_versions(conn)
        _refuse_newer(done)
        _warn_edited(done)
        applied = []
        for migration in migrations():
            if migration.version in done or (target is not None and migration.version > target):
                continue
            started = time.monotonic()
            for statement in migration.statements:
                try:
                    cursor.execute(statement)
                except Error as exc:
                    raise UserError(
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}",
                        hint="fix the cause and run `casatwin db migrate` again; "
                        "applied statements are safe to repeat",
                    ) from None
            cursor.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_ms)"
                " VALUES (%s, %s, %s, %s)",
                (migration.version, migration.name, migration.checksum, int(time.time() * 1000)),
            )
            log.info(
                "migration applied",
                version=migration.version,
                name=migration.name,
                seconds=round(time.monotonic() - started, 2),
            )
            applied.append(migration)
        return applied
    finally:
        cursor.execute("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))


def require_current(conn: Connection, database: str) -> None:
    """:class:`UserError` unless every migration of this code has been applied."""
    done = applied_versions(conn)
    _refuse_newer(done)
    missing = [m for m in migrations() if m.version not in done]
    if not missing:
        return
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
    if not done:
        message = f"database {database!r} has no CasaTwin schema"
    else:
        message = (
            f"database {database!r} has schema version {max(done)}, this casatwin needs "
            f"{latest_version()} (missing: {names})"
        )
    raise UserError(message, hint="run `casatwin db migrate`")


def require_indexes(conn: Connection) -> None:
    """:class:`UserError` while a bulk load has left secondary indexes to rebuild."""
    cursor = conn.cursor()
    cursor.execute("SELECT table_name, index_name FROM registry_deferred_indexes")
    pending = cursor.fetchall()
    if pending:
        names = ", ".join(f"{t}.{i}" for t, i in pending)
        raise UserError(
            f"the registry's last load stopped before rebuilding its indexes ({names})",
            hint="run `casatwin registry load` again to finish it",
        )


def _refuse_newer(done: dict[int, str]) -> None:
    known = {m.version for m in migrations()}
    newer = sorted(v for v in done if v not in known)
    if newer:
        raise UserError(
            f"the database has schema version {max(newer)}, newer than this casatwin knows "
            f"({latest_version()})",
            hint="upgrade casatwin on this node",
        )


def _warn_edited(done: dict[int, str]) -> None:
    known = {m.version: m for m in migrations()}
    for version, checksum in done.items():
        if known[version].checksum != checksum:
            log.warning(
                "an applied migration differs from its file (edited after it ran?)",
                version=version,
                name=known[version].name,
            )


def status(conn: Connection) -> list[tuple[Migration, bool]]:
    done = applied_versions(conn)
    return [(m, m.version in done) for m in migrations()]
