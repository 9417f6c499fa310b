"""Reconciliation: the scenario's ground truth against the ledger (pure functions).

The simulator's ground truth (``casatwin simulator --ground-truth``) lists what the
scripted vehicles really did; the ledger (MariaDB ``infractions``) lists what the twin
decided. After a run with faults, every infraction the processor could judge must be in
the ledger exactly once:

* **lost** — a judgeable truth record with no ledger row;
* **duplicated** — a truth record matched by more than one ledger row (the same event
  recorded twice under two ids, which the ledger's primary key cannot catch);
* **unexpected** — ledger rows that match no truth record (reported, not a loss).

A ledger row matches a truth record when the vehicle and the type agree and its
``event_ts`` lies within the record's episode (``start_ts``..``end_ts``, or ``event_ts``)
give or take :data:`SLACK_MS` (the processor's red-light crossing time is interpolated
between fixes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SLACK_MS = 2_000


def judgeable(record: dict[str, Any], dwell_ms: int, end_ms: int) -> bool:
    """Could the processor judge it from the telemetry? A speeding episode needs two
    fixes, parking must last the dwell time (still parked at the end counts to the end)."""
    if record["type"] == "speeding":
        return record.get("fixes", 2) >= 2
    if record["type"] == "illegal_parking":
        return record.get("end_ts", end_ms) - record["start_ts"] >= dwell_ms
    return True


def matches(record: dict[str, Any], row: dict[str, Any]) -> bool:
    if (row["vehicle_id"], row["type"]) != (record["vehicle_id"], record["type"]):
        return False
    low = record.get("start_ts", record["event_ts"]) - SLACK_MS
    high = record.get("end_ts", record["event_ts"]) + SLACK_MS
    return low <= row["event_ts"] <= high


@dataclass
class Reconciliation:
    expected: int
    recorded: int
    lost: list[dict[str, Any]] = field(default_factory=list)
    duplicated: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.lost and not self.duplicated

    def summary(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "recorded": self.recorded,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
        }

    def report(self) -> str:
        s = self.summary()
        lines = [
            f"reconciliation: {s['expected']} infractions in the ground truth, "
            f"{s['recorded']} in the ledger — {s['lost']} lost, {s['duplicated']} duplicated, "
            f"{s['unexpected']} not in the ground truth"
        ]
        lines += [f"  LOST        {_describe(r)}" for r in self.lost]
        lines += [f"  DUPLICATED  {_describe(r)} as {', '.join(ids)}" for r, ids in self.duplicated]
        lines += [f"  UNEXPECTED  {_describe(r)} ({r['infraction_id']})" for r in self.unexpected]
        return "\n".join(lines)


def reconcile(truth: Iterable[dict[str, Any]], ledger: Iterable[dict[str, Any]]) -> Reconciliation:
    """Match the judgeable truth records with ledger rows (``infraction_id``,
    ``vehicle_id``, ``type``, ``event_ts``)."""
    truth, ledger = list(truth), list(ledger)
    result = Reconciliation(expected=len(truth), recorded=len(ledger))
    used: set[str] = set()
    for record in truth:
        found = [row for row in ledger if matches(record, row)]
        used.update(row["infraction_id"] for row in found)
        if not found:
            result.lost.append(record)
        elif len(found) > 1:
            result.duplicated.append((record, sorted(row["infraction_id"] for row in found)))
    result.unexpected = [row for row in ledger if row["infraction_id"] not in used]
    return result


def _describe(record: dict[str, Any]) -> str:
    return f"{record['type']} {record['vehicle_id']} at {record['event_ts']}"
