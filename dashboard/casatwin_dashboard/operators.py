"""Operators: hashed passwords, login sessions, the login rate limit, the identity audit.

Where things live, and why:

* operators and the audit of identity views are tables in **MariaDB**, the system of
  record. The audit is evidence of who saw which driver's identity: it must be durable,
  transactional and kept as long as the ledger whose people it concerns. The read model
  (MongoDB) is a disposable projection, pruned for retention and rebuilt from the topics —
  the wrong place for evidence. An identity is shown only after its audit row is committed
  (fail closed).
* passwords are stored as scrypt hashes (``hashlib.scrypt``, N=2^17, r=8, p=1, the OWASP
  minimum; parameters are stored with the hash so that they can be raised later);
* sessions live in the dashboard's memory (a random token in an HttpOnly, SameSite=Strict
  cookie); a restart logs operators out, which is acceptable for a control-room screen. A
  session ends after ``session_ttl_s``, after ``session_idle_s`` without a request, and as
  soon as its operator's password changes or the operator is removed: each authenticated
  request compares the session's credential stamp with the operator's row in MariaDB
  (another process — the CLI, the playbook — makes those changes).

The tables come with the registry's migrations (``0005_operators.sql``, applied by
``casatwin db migrate``): the dashboard's database account needs no right to create tables.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import MySQLdb.cursors

from casatwin.config import MariaDBSettings
from casatwin.errors import UserError
from casatwin.registry import db
from casatwin.registry.charged import ChargedIdentity, charged_identity

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 12

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
SCRYPT_MAXMEM = 256 * 1024 * 1024


# -- passwords ----------------------------------------------------------------------------


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), a fresh random salt each time."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=32,
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


@functools.cache
def _decoy_hash() -> str:
    """Verified against when the name is unknown, so that the response takes as long and
    timing does not tell which operator names exist."""
    return hash_password(secrets.token_urlsafe(16))


def check_new_operator(name: str, password: str) -> None:
    if not NAME_PATTERN.match(name):
        raise UserError(
            f"operator name {name!r} is not valid",
            hint="use 2-64 lowercase letters, digits, dots, dashes or underscores, e.g. amina.b",
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"the password is too short ({len(password)} characters)",
            hint=f"use at least {MIN_PASSWORD_LENGTH} characters; a few words make a good one",
        )


# -- the login rate limit -----------------------------------------------------------------


@dataclass
class LoginLimiter:
    """At most ``max_failures`` failed logins per key (address, name) within ``window_s``.

    An attempt is counted as failed *before* its password is checked (:meth:`reserve`) and
    forgiven when it succeeds: checking takes most of a second of scrypt, and attempts
    counted only once checked would all pass the limit together when sent at once.
    """

    max_failures: int = 5
    window_s: float = 900.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, keys: list[str], now: float) -> float:
        """Seconds until these keys may try again (0: now)."""
        wait = 0.0
        for key in keys:
            failures = self._recent(key, now)
            if len(failures) >= self.max_failures:
                wait = max(wait, failures[0] + self.window_s - now)
        return wait

    def reserve(self, keys: list[str], now: float) -> float:
        """Count an attempt at ``now`` as failed until it succeeds, and return 0; or the
        seconds to wait, counting nothing, if these keys have no attempt left."""
        wait = self.retry_after(keys, now)
        if wait > 0:
            return wait
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > 10_000:  # a bounded memory under a spray of names
            for key in [k for k in self._failures if not self._recent(k, now)]:
                del self._failures[key]
        return 0.0

    def release(self, keys: list[str], at: float) -> None:
        """Give back the attempt reserved at ``at``: it was never judged (a store failed)."""
        for key in keys:
            failures = self._failures.get(key)
            if failures and at in failures:
                failures.remove(at)

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures


# -- sessions -----------------------------------------------------------------------------


def credential_stamp(password_hash: str) -> str:
    """What a session remembers of the password it was opened with: a digest of the stored
    hash (a fresh salt at each change), so that a changed password is seen without keeping
    the hash itself in memory."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


@dataclass
class Session:
    operator: str
    stamp: str  # credential_stamp of the operator's password at login
    expires_at: float
    last_used: float


@dataclass
class SessionStore:
    """Login sessions: an absolute lifetime and an idle timeout, time passed in."""

    ttl_s: float
    idle_s: float
    _sessions: dict[str, Session] = field(default_factory=dict)

    def create(self, operator: str, stamp: str, now: float) -> str:
        for token in [t for t, s in self._sessions.items() if not self._alive(s, now)]:
            del self._sessions[token]
        token = secrets.token_urlsafe(32)
        self._sessions[token] = Session(operator, stamp, now + self.ttl_s, now)
        return token

    def session(self, token: str | None, now: float) -> Session | None:
        """The live session of this token, its idle clock restarted; None (and the session
        forgotten) when there is none, it expired or sat idle too long."""
        session = self._sessions.get(token or "")
        if session is None:
            return None
        if not self._alive(session, now):
            del self._sessions[token or ""]
            return None
        session.last_used = now
        return session

    def end(self, token: str | None) -> None:
        self._sessions.pop(token or "", None)

    def _alive(self, session: Session, now: float) -> bool:
        return now < session.expires_at and now - session.last_used < self.idle_s


# -- MariaDB ------------------------------------------------------------------------------


class OperatorStore:
    """Operators and the identity audit in MariaDB (blocking calls: run them in an executor)."""

    def __init__(self, settings: MariaDBSettings) -> None:
        self.settings = settings

    def _connect(self) -> db.Connection:
        # The services' own connection: the same TLS, errors and hints.
        return db.open_connection(self.settings)

    def set_operator(self, name: str, password_hash: str, *, replace: bool) -> bool:
        """Create the operator (or change its password when ``replace``); False if it exists."""
        with self._connect() as conn, conn.cursor() as cur:
            if replace:
                cur.execute(
                    "INSERT INTO dashboard_operators (name, password_hash) VALUES (%s, %s) "
                    "ON DUPLICATE KEY UPDATE password_hash = VALUES(password_hash), "
                    "password_changed_at = CURRENT_TIMESTAMP(3)",
                    (name, password_hash),
                )
            else:
                cur.execute(
                    "INSERT IGNORE INTO dashboard_operators (name, password_hash) VALUES (%s, %s)",
                    (name, password_hash),
                )
                if cur.rowcount == 0:
                    return False
            conn.commit()
        return True

    def remove_operator(self, name: str) -> bool:
        """Remove the operator (its sessions end at their next request); False if unknown.
        Its audit rows stay: they are evidence."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM dashboard_operators WHERE name = %s", (name,))
            conn.commit()
            return cur.rowcount > 0

    def password_hash(self, name: str) -> str | None:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT password_hash FROM dashboard_operators WHERE name = %s", (name,))
            row = cur.fetchone()
        return row[0] if row else None

    def credential(self, name: str) -> str | None:
        """The operator's current credential stamp (None: no such operator any more)."""
        stored = self.password_hash(name)
        return None if stored is None else credential_stamp(stored)

    def authenticate(self, name: str, password: str) -> str | None:
        """The credential stamp for a session when the password is right, else None."""
        stored = self.password_hash(name) if NAME_PATTERN.match(name) else None
        ok = verify_password(password, stored or _decoy_hash())
        return credential_stamp(stored) if ok and stored is not None else None

    def record_view(
        self, operator: str, infraction_id: str, driver_ref: str, address: str, request: str
    ) -> None:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO identity_views "
                "(operator, infraction_id, driver_ref, client_address, request) "
                "VALUES (%s, %s, %s, %s, %s)",
                (operator, infraction_id, driver_ref[:128], address[:64], request[:255]),
            )
            conn.commit()

    def identity(self, infraction_id: str) -> ChargedIdentity | None:
        """The driver charged and the vehicle's owner, from the ledger (audit first!)."""
        with self._connect() as conn, conn.cursor() as cur:
            return charged_identity(cur, infraction_id)

    def views(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest identity views, newest first (for an auditor, and the tests)."""
        with self._connect() as conn, conn.cursor(MySQLdb.cursors.DictCursor) as cur:
            cur.execute(
                "SELECT viewed_at, operator, infraction_id, driver_ref, client_address, request "
                "FROM identity_views ORDER BY id DESC LIMIT %s",
                (limit,),
            )
            return list(cur.fetchall())
