"""Collections of the read model, their indexes, and idempotent writes.

Every write is an upsert keyed by a deterministic ``_id`` so that a replay after a crash
rewrites the same documents instead of adding copies:

``infractions``       ``_id`` = infraction_id; the infraction message (vehicle, the
                      driver's pseudonymous reference, decision, location) as published on
                      ``casatwin.infractions``; kept ``CASATWIN_PRIVACY_INFRACTION_RETENTION_DAYS``
``congestion``        ``_id`` = ``scope:key:window_start``; one rolling window
``dispatch_events``   ``_id`` = ``dispatch_id:status``; one step of an incident's timeline
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.database import Database

from casatwin.config import MongoSettings

INFRACTIONS = "infractions"
CONGESTION = "congestion"
DISPATCH_EVENTS = "dispatch_events"


def connect(settings: MongoSettings, timeout_ms: int = 5000) -> Database:
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.url, serverSelectionTimeoutMS=timeout_ms, tz_aware=False
    )
    return client[settings.database]


INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    INFRACTIONS: [
        [("event_ts", DESCENDING)],
        [("vehicle.plate", ASCENDING), ("event_ts", DESCENDING)],
        [("type", ASCENDING), ("event_ts", DESCENDING)],
    ],
    CONGESTION: [[("key", ASCENDING), ("window_start", DESCENDING)], [("window_end", DESCENDING)]],
    DISPATCH_EVENTS: [[("infraction_id", ASCENDING), ("ts", ASCENDING)]],
}


def ensure_indexes(db: Database, collections: Iterable[str] = tuple(INDEXES)) -> None:
    """The indexes of these collections. Each writer makes its own collections' (with
    MongoDB's authorization, its user may create indexes on those alone)."""
    for collection in collections:
        for keys in INDEXES[collection]:
            db[collection].create_index(keys)


def _upsert(db: Database, collection: str, docs: Iterable[tuple[str, dict[str, Any]]]) -> int:
    # Whole documents: a replace is a third cheaper than a $set on the SQLite stand-in, which
    # also wants the _id in the replacement (else an upsert gets a new ObjectId).
    ops = [ReplaceOne({"_id": _id}, {**doc, "_id": _id}, upsert=True) for _id, doc in docs]
    if not ops:
        return 0
    result = db[collection].bulk_write(ops, ordered=False)
    return result.upserted_count + result.modified_count


def upsert_infractions(db: Database, infractions: Iterable[dict[str, Any]]) -> int:
    return _upsert(db, INFRACTIONS, ((i["infraction_id"], i) for i in infractions))


def congestion_id(window: dict[str, Any]) -> str:
    return f"{window['scope']}:{window['key']}:{window['window_start']}"


def upsert_congestion(db: Database, windows: Iterable[dict[str, Any]]) -> int:
    return _upsert(db, CONGESTION, ((congestion_id(w), w) for w in windows))


def record_dispatch_events(db: Database, events: Iterable[dict[str, Any]]) -> int:
    return _upsert(db, DISPATCH_EVENTS, ((f"{e['dispatch_id']}:{e['status']}", e) for e in events))


def prune(db: Database, collection: str, field: str, older_than_ms: int) -> int:
    """Delete documents whose ``field`` (epoch ms) is older than the cut-off (retention)."""
    return db[collection].delete_many({field: {"$lt": older_than_ms}}).deleted_count


DAY_MS = 86_400_000


class Retention:
    """A collection's retention, enforced by its writer every ``every_s`` at most.

    Measured in event time back from the newest document written, not from the wall clock:
    a twin replaying last month (``--afap --start-ms``) keeps what it writes, and a stopped
    twin loses nothing while it is off. ``days <= 0`` keeps everything.
    """

    def __init__(self, collection: str, field: str, days: float, every_s: float = 600.0) -> None:
        self.collection = collection
        self.field = field
        self.days = days
        self.every_s = every_s
        self._applied_at: float | None = None

    def apply(self, db: Database, newest_ms: int) -> int:
        """Delete what is older than the retention (if due); how many documents went."""
        now = time.monotonic()
        if self.days <= 0 or (
            self._applied_at is not None and now - self._applied_at < self.every_s
        ):
            return 0
        self._applied_at = now
        return prune(db, self.collection, self.field, newest_ms - int(self.days * DAY_MS))
