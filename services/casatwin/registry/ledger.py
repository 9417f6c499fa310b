"""The fines and points ledger: an infraction, its points and the driver's balance, at once.

:func:`record_many` writes a batch of infractions in one transaction:

1. lock the drivers concerned (``SELECT ... FOR UPDATE`` in CIN order: every writer locks
   in the same order, so writers never wait on each other in a circle);
2. find the infractions already recorded: a replay writes nothing and gets back the
   decision stored the first time, so a processor that replays after a crash publishes
   exactly what it stored;
3. decide each new infraction again, in event order, against the history read under the
   locks (:meth:`Decision.revised`): two offences of one driver in one batch, or in two
   concurrent batches, both count, the balance never goes below 0, and the second class-1
   offence is a repeat;
4. insert the infractions, the points-ledger rows (the change and the balance after it)
   and the drivers' new balance and status; commit.

A concurrent writer of the same new infraction makes the insert fail on its primary key;
the transaction is then retried from step 1 and finds it recorded. Deadlocks and lock
timeouts are retried the same way (:func:`db.transaction`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from casatwin.registry import db
from casatwin.registry.lookup import day_ms, driver_offences
from casatwin.rules.engine import DAY_MS, Decision, DriverHistory

MAX_BATCH = 500  # infractions per transaction
RETRY_ON = db.RETRYABLE | {db.ER_DUP_ENTRY}


class InvalidInfraction(ValueError):
    """An infraction message the ledger cannot record; ``str()`` names the field."""


@dataclass(frozen=True)
class RecordOutcome:
    infraction_id: str
    inserted: bool  # False: already recorded (a replay); nothing was written
    decision: dict[str, Any]  # the decision as stored (for a replay, the original one)
    cin: str | None  # the driver charged, None when unknown
    points_before: int | None
    points_after: int | None
    licence_status_after: str | None


def record(conn: db.Connection, infraction: Mapping[str, Any], decision: Decision) -> RecordOutcome:
    """Record one infraction with its decision (see the module doc)."""
    return record_many(conn, [(infraction, decision)])[0]


def record_many(
    conn: db.Connection, items: Sequence[tuple[Mapping[str, Any], Decision]]
) -> list[RecordOutcome]:
    """Record a batch; one outcome per item, in order (a repeated id gets the same outcome)."""
    unique: dict[str, tuple[Mapping[str, Any], Decision]] = {}
    for infraction, decision in items:
        unique.setdefault(_field(infraction, "infraction_id", str), (infraction, decision))
    outcomes: dict[str, RecordOutcome] = {}
    batch = list(unique.items())
    for i in range(0, len(batch), MAX_BATCH):
        part = batch[i : i + MAX_BATCH]
        outcomes.update(
            db.transaction(conn, lambda cursor, part=part: _record(cursor, part), retry_on=RETRY_ON)
        )
    seen: set[str] = set()
    out = []
    for infraction, _ in items:
        outcome = outcomes[infraction["infraction_id"]]
        if outcome.infraction_id in seen and outcome.inserted:
            outcome = RecordOutcome(**{**outcome.__dict__, "inserted": False})
        seen.add(outcome.infraction_id)
        out.append(outcome)
    return out


def _record(
    cursor: db.Cursor, items: list[tuple[str, tuple[Mapping[str, Any], Decision]]]
) -> dict[str, RecordOutcome]:
    declared = {iid: _declared_cin(inf) for iid, (inf, _) in items}
    cins = sorted({c for c in declared.values() if c})
    histories: dict[str, DriverHistory] = {}
    if cins:
        cursor.execute(
            "SELECT cin, points, status, probation_end FROM drivers WHERE cin IN %s"
            " ORDER BY cin FOR UPDATE",
            (cins,),
        )
        locked = cursor.fetchall()
        since = min(
            int(inf["event_ts"]) - d.book.repeat_period_days * DAY_MS for _, (inf, d) in items
        )
        offences = driver_offences(cursor.connection, [r[0] for r in locked], since_ms=since)
        for cin, points, status, probation_end in locked:
            histories[cin] = DriverHistory(
                cin=cin,
                points=int(points),
                status=status,
                probation_end_ms=day_ms(probation_end),
                offences=offences.get(cin, ()),
            )

    cursor.execute(
        "SELECT infraction_id, decision, cin, points_before, points_after, licence_status_after"
        " FROM infractions WHERE infraction_id IN %s",
        ([iid for iid, _ in items],),
    )
    outcomes = {
        row[0]: RecordOutcome(row[0], False, orjson.loads(row[1]), *row[2:])
        for row in cursor.fetchall()
    }
    new = sorted(
        (item for item in items if item[0] not in outcomes),
        key=lambda item: (int(item[1][0]["event_ts"]), item[0]),
    )
    now_ms = int(time.time() * 1000)
    infraction_rows, points_rows = [], []
    changed: dict[str, DriverHistory] = {}
    for iid, (infraction, decision) in new:
        cin = declared[iid] if declared[iid] in histories else None
        history = histories.get(cin) if cin else None
        final = decision.revised(history)
        message = final.to_message()
        infraction_rows.append(_infraction_row(infraction, final, cin, message, now_ms))
        if history is not None:
            after = history.with_offence(final)
            histories[cin] = after
            changed[cin] = after  # at least its latest offence changes
            if final.points_removed or after.status != history.status:
                points_rows.append(
                    (
                        cin, iid, -final.points_removed, after.points, after.status,
                        _reason(final, history), final.facts.event_ts,
                    )
                )  # fmt: skip
        outcomes[iid] = RecordOutcome(
            iid, True, message, cin, final.points_before, final.points_after,
            final.licence_status_after,
        )  # fmt: skip
    if infraction_rows:
        cursor.executemany(
            "INSERT INTO infractions (infraction_id, type, event_ts, detected_ts, recorded_ts,"
            " lat, lon, segment_id, intersection_id, measured, limit_value, vehicle_id, plate,"
            " cin, offence_class, fine_mad, points, points_before, points_after,"
            " licence_status_after, court, dispatch_required, decision) VALUES (%s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            infraction_rows,
        )
    if points_rows:
        cursor.executemany(
            "INSERT INTO points_ledger (cin, infraction_id, delta, balance_after, status_after,"
            " reason, ts) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            points_rows,
        )
    if changed:
        _update_drivers(cursor, changed)
    return outcomes


def _reason(decision: Decision, before: DriverHistory) -> str:
    """The points-ledger line an operator reads: the offence and what it did."""
    text = decision.book.rule(decision.rule_id).label
    if decision.licence_status_after == "annulled" and before.status != "annulled":
        text += " — permis annulé"
    return text[:200]


def _update_drivers(cursor: db.Cursor, changed: dict[str, DriverHistory]) -> None:
    """Every new balance, status and latest offence in one statement (rows locked already)."""
    values = " UNION ALL ".join(
        ["SELECT %s AS cin, %s AS points, %s AS status, %s AS last_ms"] * len(changed)
    )
    args = [
        x
        for h in changed.values()
        for x in (h.cin, h.points, h.status, max(o.event_ts for o in h.offences))
    ]
    cursor.execute(
        f"UPDATE drivers d JOIN ({values}) n ON d.cin = n.cin"
        " SET d.points = n.points, d.status = n.status,"
        " d.last_offence_ms = GREATEST(COALESCE(d.last_offence_ms, n.last_ms), n.last_ms)",
        args,
    )


def _infraction_row(
    infraction: Mapping[str, Any],
    decision: Decision,
    cin: str | None,
    message: dict[str, Any],
    now_ms: int,
) -> tuple[Any, ...]:
    vehicle = infraction.get("vehicle") or {}
    return (
        _field(infraction, "infraction_id", str),
        _field(infraction, "type", str),
        _field(infraction, "event_ts", int),
        int(infraction.get("detected_ts") or infraction["event_ts"]),
        now_ms,
        _field(infraction, "lat", float),
        _field(infraction, "lon", float),
        infraction.get("segment_id"),
        infraction.get("intersection_id"),
        infraction.get("measured"),
        infraction.get("limit"),
        vehicle.get("vehicle_id"),
        vehicle.get("plate"),
        cin,
        decision.offence_class,
        decision.fine_mad,
        decision.points,
        decision.points_before,
        decision.points_after,
        decision.licence_status_after,
        decision.court,
        decision.dispatch_required,
        orjson.dumps(message).decode(),
    )


def _declared_cin(infraction: Mapping[str, Any]) -> str | None:
    driver = infraction.get("driver") or {}
    cin = driver.get("cin") if isinstance(driver, Mapping) else None
    return cin if isinstance(cin, str) and cin else None


def _field(infraction: Mapping[str, Any], name: str, kind: type) -> Any:
    value = infraction.get(name)
    if value is None or isinstance(value, bool):
        raise InvalidInfraction(f"infraction field {name!r} is missing")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidInfraction(
            f"infraction field {name!r}={value!r} is not {kind.__name__}"
        ) from None
