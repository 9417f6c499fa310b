"""The history API's queries: parameters checked here, documents read from the read model.

Parsing is pure (:func:`infraction_query` and friends turn query parameters into a MongoDB
filter or raise :class:`ApiError` saying what is wrong and how to fix it); the ``find_*``
functions are the blocking pymongo calls the handlers run in an executor.

Pagination is by keyset, newest first: the cursor is the (event_ts, infraction_id) of the
last item of a page, so pages stay stable while new infractions arrive.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo import DESCENDING
from pymongo.database import Database

from casatwin.bus.messages import DISPATCH_STATUSES, INFRACTION_TYPES
from casatwin.readmodel.store import CONGESTION, DISPATCH_EVENTS, INFRACTIONS

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CONGESTION_LIMIT = 2000
DAY_MS = 86_400_000
MAX_TS = 32_503_680_000_000  # year 3000: beyond it a time is a mistake, not a question
MAX_INFRACTION_RANGE_MS = 366 * DAY_MS
MAX_CONGESTION_RANGE_MS = 31 * DAY_MS
SCOPES = ("segment", "intersection", "station")


class ApiError(Exception):
    """A request the API refuses: HTTP status, what is wrong, how to fix it."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint

    def body(self) -> dict[str, str]:
        return {"error": self.message, "hint": self.hint} if self.hint else {"error": self.message}


def bad(message: str, hint: str = "") -> ApiError:
    return ApiError(400, message, hint)


# -- parameters -----------------------------------------------------------------------------


def check_known(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    for name in params:
        if name not in known:
            raise bad(f"unknown parameter {name!r}", f"known parameters: {', '.join(known)}")


def parse_time(name: str, raw: str) -> int:
    """Epoch milliseconds, or an ISO 8601 date-time (UTC unless it says otherwise), between
    1970 and the year 3000."""
    raw = raw.strip()
    try:
        if re.fullmatch(r"[0-9]{1,15}", raw):
            ms = int(raw)
        else:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ms = int(moment.timestamp() * 1000)
        if not 0 <= ms <= MAX_TS:
            raise ValueError
    except (ValueError, OverflowError):
        raise bad(
            f"{name}={raw!r} is not a time between 1970 and 3000",
            f"give epoch milliseconds (1767225600000) or ISO 8601 ({name}=2026-01-01T08:00:00Z)",
        ) from None
    return ms


def parse_range(
    params: Mapping[str, str], default_span_ms: int | None, now_ms: int, max_span_ms: int
) -> dict:
    """A Mongo range on event time from ``from``/``to``; at most ``max_span_ms`` long (an
    open end counts from now, an open start is the beginning of the history)."""
    start = parse_time("from", params["from"]) if "from" in params else None
    end = parse_time("to", params["to"]) if "to" in params else None
    if start is None and default_span_ms is not None:
        start = (end if end is not None else now_ms) - default_span_ms
    if start is not None and end is not None and start > end:
        raise bad("from is after to", "swap them, or leave one out")
    if start is not None and (end if end is not None else max(now_ms, start)) - start > max_span_ms:
        days = max_span_ms // DAY_MS
        raise bad(
            f"the time range is longer than {days} days",
            f"ask for at most {days} days at a time (from and to), and page through the rest",
        )
    out: dict[str, int] = {}
    if start is not None:
        out["$gte"] = start
    if end is not None:
        out["$lte"] = end
    return out


def parse_limit(params: Mapping[str, str], default: int, maximum: int) -> int:
    raw = params.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise bad(
            f"limit={raw!r} is not a whole number from 1 to {maximum}", f"e.g. limit={default}"
        )
    return int(raw)


def parse_choices(name: str, raw: str, choices: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in raw.split(",") if v.strip()]
    wrong = [v for v in values if v not in choices]
    if wrong or not values:
        raise bad(
            f"{name}={raw!r} is not one of {', '.join(choices)}",
            f"several may be given separated by commas, e.g. {name}={','.join(choices[:2])}",
        )
    return values


def encode_cursor(event_ts: int, infraction_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([event_ts, infraction_id])).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[int, str]:
    try:
        ts, infraction_id = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(ts, int) or not 0 <= ts <= MAX_TS or not isinstance(infraction_id, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise bad(
            "cursor is not one this API gave out",
            "pass the next_cursor of the previous page unchanged, or leave it out for page one",
        ) from None
    return ts, infraction_id


# -- infractions ------------------------------------------------------------------------------

INFRACTION_PARAMS = (
    "from",
    "to",
    "type",
    "class",
    "district",
    "plate",
    "vehicle",
    "limit",
    "cursor",
)


@dataclass(frozen=True)
class InfractionQuery:
    filter: dict[str, Any]
    limit: int


def infraction_query(params: Mapping[str, str], now_ms: int) -> InfractionQuery:
    check_known(params, INFRACTION_PARAMS)
    conditions: list[dict[str, Any]] = []
    when = parse_range(params, None, now_ms, MAX_INFRACTION_RANGE_MS)
    if when:
        conditions.append({"event_ts": when})
    if "type" in params:
        conditions.append(
            {"type": {"$in": parse_choices("type", params["type"], INFRACTION_TYPES)}}
        )
    if "class" in params:
        classes = parse_choices("class", params["class"], ("1", "2", "3"))
        conditions.append({"decision.class": {"$in": [int(c) for c in classes]}})
    if "district" in params:
        district = params["district"].strip()
        if not district:
            raise bad("district is empty", "give a district name, e.g. district=Anfa")
        conditions.append({"district": district})
    if "plate" in params:
        plate = params["plate"].strip().upper()
        if not re.fullmatch(r"[0-9A-Z\u0600-\u06FF| -]{1,20}", plate):
            raise bad(
                f"plate={params['plate']!r} does not look like a plate", "e.g. plate=12345-A-6"
            )
        conditions.append({"vehicle.plate": plate})
    if "vehicle" in params:
        conditions.append({"vehicle.vehicle_id": params["vehicle"].strip()})
    limit = parse_limit(params, DEFAULT_LIMIT, MAX_LIMIT)
    if "cursor" in params:
        ts, infraction_id = decode_cursor(params["cursor"])
        conditions.append(
            {"$or": [{"event_ts": {"$lt": ts}}, {"event_ts": ts, "_id": {"$lt": infraction_id}}]}
        )
    query: dict[str, Any] = {"$and": conditions} if len(conditions) > 1 else (conditions or [{}])[0]
    return InfractionQuery(query, limit)


def find_infractions(db: Database, query: InfractionQuery) -> tuple[list[dict], str | None]:
    """A page of infractions, newest first, and the cursor of the next page (None: last)."""
    docs = list(
        db[INFRACTIONS]
        .find(query.filter)
        .sort([("event_ts", DESCENDING), ("_id", DESCENDING)])
        .limit(query.limit + 1)
    )
    more = len(docs) > query.limit
    docs = docs[: query.limit]
    cursor = encode_cursor(docs[-1]["event_ts"], docs[-1]["_id"]) if more else None
    return docs, cursor


def find_infraction(db: Database, infraction_id: str) -> dict[str, Any] | None:
    return db[INFRACTIONS].find_one({"_id": infraction_id})


# -- congestion -------------------------------------------------------------------------------

CONGESTION_PARAMS = ("from", "to", "scope", "limit")


@dataclass(frozen=True)
class CongestionQuery:
    filter: dict[str, Any]
    limit: int


def congestion_query(key: str, params: Mapping[str, str], now_ms: int) -> CongestionQuery:
    check_known(params, CONGESTION_PARAMS)
    query: dict[str, Any] = {"key": key}
    if "scope" in params:
        query["scope"] = parse_choices("scope", params["scope"], SCOPES)[0]
    query["window_start"] = parse_range(params, DAY_MS, now_ms, MAX_CONGESTION_RANGE_MS)
    return CongestionQuery(query, parse_limit(params, 288, MAX_CONGESTION_LIMIT))


def find_congestion(db: Database, query: CongestionQuery) -> tuple[list[dict], bool]:
    """Windows in time order (the latest ``limit`` of the range) and whether some were cut."""
    docs = list(
        db[CONGESTION]
        .find(query.filter, {"_id": 0})
        .sort("window_start", DESCENDING)
        .limit(query.limit + 1)
    )
    truncated = len(docs) > query.limit
    return list(reversed(docs[: query.limit])), truncated


# -- dispatch timeline ------------------------------------------------------------------------


def find_timeline(db: Database, infraction_id: str) -> list[dict[str, Any]]:
    events = db[DISPATCH_EVENTS].find({"infraction_id": infraction_id}, {"_id": 0}).limit(1000)
    return in_lifecycle_order(events)


def in_lifecycle_order(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps in the order an incident lives them (queued, assigned, en route, on scene,
    closed), then by time: ``assigned`` carries the dispatcher's clock and the reports the
    simulator's (or a unit's), so ``ts`` alone can put a report before its order."""
    rank = {status: i for i, status in enumerate(DISPATCH_STATUSES)}
    return sorted(events, key=lambda e: (rank.get(e.get("status"), len(rank)), e.get("ts", 0)))
