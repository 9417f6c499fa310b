"""Riding out a store that went away (MariaDB, the read model) without losing a message.

Pure: which errors mean "the store cannot be reached for now, try again" (anything else is
a bug or a misconfiguration and stops the dispatcher, loudly); where a batch that stopped
half-way resumes, per partition (commit after the last message handled, read again from
the first one that was not: a message is never committed before it is handled, nor
handled twice because of the outage); and how long to wait before the next attempt.
The I/O is the dispatcher's (``service.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import MySQLdb
import pymongo.errors

from casatwin.backoff import Backoff
from casatwin.registry import db

MARIADB = "MariaDB"
READ_MODEL = "read model (MongoDB)"

# The server is away, shutting down, out of connections, or dropped ours; or a lock wait
# outlasted the transaction's own retries. Reconnecting later is the cure for all of them.
MARIADB_TRANSIENT = frozenset({1040, 1053, 1927, 2055, *db.CR_UNREACHABLE, *db.RETRYABLE})

Position = tuple[str, int]  # topic, partition


class StoreUnavailable(Exception):
    """A store the dispatcher writes to cannot be reached now."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store} unavailable: {reason}")
        self.store = store
        self.reason = reason


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The outage ``exc`` reports, or None if it is not one (let it surface)."""
    if isinstance(exc, StoreUnavailable):
        return exc
    # InterfaceError: a connection the server dropped is closed on our side too.
    if isinstance(exc, MySQLdb.InterfaceError) or (
        isinstance(exc, MySQLdb.OperationalError) and db.error_code(exc) in MARIADB_TRANSIENT
    ):
        return StoreUnavailable(MARIADB, _short(exc))
    if isinstance(exc, pymongo.errors.ConnectionFailure):
        return StoreUnavailable(READ_MODEL, _short(exc))
    return None


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


def resume_points(
    batch: Sequence[tuple[str, int, int]], handled: int
) -> tuple[dict[Position, int], dict[Position, int]]:
    """For a batch — (topic, partition, offset) of each message, in the order read — whose
    first ``handled`` messages were handled: the offsets to commit (after each partition's
    last handled message) and where to read again (each partition's first message left)."""
    commit: dict[Position, int] = {}
    for topic, partition, offset in batch[:handled]:
        commit[(topic, partition)] = offset + 1
    again: dict[Position, int] = {}
    for topic, partition, offset in batch[handled:]:
        again.setdefault((topic, partition), offset)
    return commit, again


@dataclass
class Outage:
    """Failed attempts in a row while a store is away, and since when (monotonic s)."""

    backoff: Backoff
    store: str = ""
    failures: int = 0
    since: float = 0.0

    def failed(self, store: str, now: float, random: Callable[[], float]) -> float:
        """Count a failed attempt; the seconds to wait before the next."""
        if not self.failures:
            self.since = now
        self.store = store
        self.failures += 1
        return self.backoff.delay(self.failures, random)

    def lasted(self, now: float) -> float:
        return now - self.since if self.failures else 0.0

    def end(self) -> None:
        self.failures = 0
