"""The dispatch bridge's outbox: a unit's reports go out one at a time and in order, one
that failed is sent again before the unit's next, and what waits for the broker is bounded
(the oldest dropped, with a warning)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from casatwin.simulator.dispatching import _Outbox


class FakeProducer:
    """Takes reports and lets the test acknowledge or fail them."""

    def __init__(self) -> None:
        self.out: list[tuple[dict[str, Any], Callable[[bool], None]]] = []

    def send(self, report: dict[str, Any], on_delivery: Callable[[bool], None]) -> bool:
        self.out.append((report, on_delivery))
        return True

    def answer(self, acknowledged: bool) -> dict[str, Any]:
        report, on_delivery = self.out.pop(0)
        on_delivery(acknowledged)
        return report


def report(unit: str, status: str, ts: int) -> dict[str, Any]:
    return {"dispatch_id": f"D-{unit}", "unit_id": unit, "status": status, "ts": ts}


def test_a_units_reports_go_one_at_a_time_and_a_failed_one_again_first():
    producer = FakeProducer()
    outbox = _Outbox(producer.send)
    outbox.add(report("PU-1", "en_route", 1))
    outbox.add(report("PU-1", "on_scene", 2))
    outbox.add(report("PU-2", "en_route", 3))  # another unit does not wait for PU-1
    assert [r["ts"] for r, _ in producer.out] == [1, 3]
    assert producer.answer(False)["ts"] == 1  # failed: kept, the unit's next held back
    assert producer.answer(True)["ts"] == 3
    assert not producer.out and len(outbox) == 2
    outbox.send_again()
    outbox.send_again()  # once out, not sent twice
    assert [r for r, _ in producer.out] == [report("PU-1", "en_route", 1)]
    producer.answer(True)
    assert producer.answer(True)["status"] == "on_scene"
    assert len(outbox) == 0


def test_a_refused_report_is_sent_again_from_the_loop():
    refused: list[dict[str, Any]] = []
    outbox = _Outbox(lambda r, _: refused.append(r) and False)
    outbox.add(report("PU-1", "en_route", 1))
    outbox.send_again()
    assert [r["ts"] for r in refused] == [1, 1] and len(outbox) == 1


def test_reports_waiting_are_bounded_the_oldest_dropped_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="casatwin.simulator.dispatch")
    producer = FakeProducer()
    outbox = _Outbox(producer.send, limit=3)
    for ts, status in enumerate(["en_route", "on_scene", "closed", "en_route", "on_scene"]):
        outbox.add(report("PU-1", status, ts))
    assert len(outbox) == 3 and outbox.dropped == 2
    warnings = [r.getMessage() for r in caplog.records if "too many unit reports" in r.message]
    assert len(warnings) == 1
    # The dropped report still out is answered; the kept ones follow, in order.
    sent = [producer.answer(True)["ts"] for _ in range(4)]
    assert sent == [0, 2, 3, 4] and len(outbox) == 0
