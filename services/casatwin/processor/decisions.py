"""Enrichment and decision: the registry, the rules engine and the ledger, per micro-batch.

One batched lookup finds every vehicle of the batch with its current driver and the
offences the repeat rule needs; the rules engine decides each infraction; the ledger records
them in one transaction and returns the decision *as stored* — for an infraction recorded
before (a replayed batch), the original one. A vehicle the registry does not know still
gets its infraction, decided with no driver (no points can be removed). Facts the rule book
cannot judge, and a driver record the law cannot have (``InvalidHistory``: a probationer
above 20 points, a valid licence at 0), are set aside for the DLQ with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.processor.sink import Decided

log = get_logger("processor")

SIMULTANEOUS_MS = 5_000  # offences of one vehicle this close in time are simultaneous


class RegistryDecider:
    """The :class:`~casatwin.processor.sink.Decider` backed by MariaDB."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Any = None
        self._book: Any = None
        self._pseudonym_key = b""

    def start(self) -> None:
        from casatwin.registry import db, pseudonyms
        from casatwin.rules.engine import load_rule_book

        self._pseudonym_key = pseudonyms.load_key(self.settings)
        self._conn = db.connect(self.settings.mariadb)
        self._book = load_rule_book(self.settings.rules.book)

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def decide(self, detections: Sequence[dict[str, Any]]) -> list[Decided]:
        from casatwin.registry import ledger, lookup
        from casatwin.rules.engine import DAY_MS, InvalidFacts, OffenceFacts, decide

        assert self._conn is not None, "start() first"
        book = self._book
        since = min(d["event_ts"] for d in detections) - book.repeat_period_days * DAY_MS
        records = lookup.lookup_vehicles(
            self._conn, {d["vehicle_id"] for d in detections}, offences_since_ms=since
        )
        unknown = {d["vehicle_id"] for d in detections} - set(records)
        if unknown:
            log.debug("vehicles unknown to the registry", vehicles=",".join(sorted(unknown)))
        items, parties = [], []
        rejected: dict[str, str] = {}
        for detection in detections:
            record = records.get(detection["vehicle_id"])
            vehicle = (
                record.to_message()
                if record is not None
                else {"vehicle_id": detection["vehicle_id"], "kind": detection["kind"]}
            )
            known = record.driver if record else None
            driver = known.to_message(self._pseudonym_key) if known else {}
            others = tuple(
                OffenceFacts.from_infraction(other) for other in simultaneous(detection, detections)
            )
            facts = OffenceFacts.from_infraction(detection, simultaneous=others)
            try:
                decision = decide(facts, record.history() if record else None, book)
            except InvalidFacts as exc:  # facts, or a driver record (InvalidHistory: e.g. a
                # probationer above 20 points), that the rule book cannot judge: set aside
                rejected[detection["infraction_id"]] = f"cannot decide: {exc}"
                continue
            # The ledger charges the driver by CIN; the CIN goes no further than MariaDB.
            charged = {"cin": known.cin} if known else {}
            items.append(({**detection, "vehicle": vehicle, "driver": charged}, decision))
            parties.append((vehicle, driver))
        outcomes = iter(ledger.record_many(self._conn, items) if items else [])
        decided = iter(parties)
        out = []
        for detection in detections:
            reason = rejected.get(detection["infraction_id"])
            if reason is not None:
                out.append(Decided({}, {}, {}, False, rejected=reason))
                continue
            (vehicle, driver), outcome = next(decided), next(outcomes)
            dispatch = bool(outcome.decision["dispatch_required"])
            out.append(Decided(vehicle, driver, outcome.decision, dispatch))
        return out


def simultaneous(
    detection: dict[str, Any], batch: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The batch's other offences of the same vehicle within :data:`SIMULTANEOUS_MS`."""
    return [
        other
        for other in batch
        if other["vehicle_id"] == detection["vehicle_id"]
        and other["infraction_id"] != detection["infraction_id"]
        and abs(other["event_ts"] - detection["event_ts"]) <= SIMULTANEOUS_MS
    ]
