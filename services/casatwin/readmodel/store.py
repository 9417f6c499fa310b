"""Collections of the read model, their indexes, and idempotent writes.

Every write is an upsert keyed by a deterministic ``_id`` so that a replay after a crash
rewrites the same documents instead of adding copies:

``infractions``       ``_id`` = infraction_id; the infraction message (vehicle, driver,
                      decision, location) as published on ``casatwin.infractions``
``congestion``        ``_id`` = ``scope:key:window_start``; one rolling window
``dispatch_events``   ``_id`` = ``dispatch_id:status``; one step of an incident's timeline
"""

from __future__ import annotations

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


def ensure_indexes(db: Database) -> None:
    db[INFRACTIONS].create_index([("event_ts", DESCENDING)])
    db[INFRACTIONS].create_index([("vehicle.plate", ASCENDING), ("event_ts", DESCENDING)])
    db[INFRACTIONS].create_index([("type", ASCENDING), ("event_ts", DESCENDING)])
    db[CONGESTION].create_index([("key", ASCENDING), ("window_start", DESCENDING)])
    db[CONGESTION].create_index([("window_end", DESCENDING)])
    db[DISPATCH_EVENTS].create_index([("infraction_id", ASCENDING), ("ts", ASCENDING)])


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
