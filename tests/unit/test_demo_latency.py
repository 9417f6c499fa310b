"""The latency budget traces an infraction from what the screen shows: the public view."""

from __future__ import annotations

from casatwin.demo.latency import against_floor, budget_table, milestones, render
from casatwin.processor.detectors import infraction_id, vehicle_of
from casatwin_dashboard.privacy import public_infraction


def test_the_vehicle_of_an_infraction_id():
    assert vehicle_of(infraction_id("speeding", "TX-00042", 1795322664000)) == "TX-00042"
    assert vehicle_of(infraction_id("red_light", "POL-3", 1)) == "POL-3"


def test_milestones_of_an_infraction_as_an_anonymous_screen_receives_it():
    """The screen is anonymous: no vehicle id in what it receives (issue 15), and the
    evidence fix is still found by the vehicle its infraction id names."""
    evidence_ts = 1_795_322_664_000
    infraction = {
        "infraction_id": infraction_id("speeding", "TX-00042", evidence_ts),
        "vehicle_id": "TX-00042",
        "vehicle": {"kind": "taxi", "plate": "12345-A-6"},
        "type": "speeding",
        "evidence_ts": evidence_ts,
        "detected_ts": evidence_ts + 400,
        "published_ts": evidence_ts + 450,
    }
    shown = public_infraction(infraction)
    assert "vehicle_id" not in shown
    fix_seen = {("TX-00042", evidence_ts): evidence_ts + 20.0}
    batches = [(evidence_ts + 100.0, evidence_ts + 420.0)]
    found = milestones(shown, evidence_ts + 460, evidence_ts + 470, fix_seen, batches)
    assert found == {
        "t0": evidence_ts,
        "t1": evidence_ts + 20.0,
        "t2": evidence_ts + 100.0,
        "t3": evidence_ts + 400,
        "t4": evidence_ts + 450,
        "t5": evidence_ts + 460,
        "t6": evidence_ts + 470,
    }
    assert milestones(shown, 0, 0, {}, batches) is None  # its fix was not seen


def test_the_budget_gives_the_processors_part_and_the_whole_over_the_floor():
    rows = [
        {"t0": 0, "t1": 10, "t2": 50, "t3": 300, "t4": 310, "t5": 320, "t6": 330} for _ in range(20)
    ]
    floor = {
        "stateful": {"latency_ms": {"p50": 150.0, "p95": 200.0, "p99": 250.0}},
        "stateless": {"latency_ms": {"p50": 60.0, "p95": 100.0, "p99": 120.0}},
    }
    result = {**budget_table(rows, [10.0] * 20), **against_floor(rows, floor)}
    assert result["processor_ms"]["p95"] == 300.0  # t1 → t4
    assert result["processor_p95_vs_floor"] == 1.5
    assert result["end_to_end_p95_vs_floor"] == 1.65
    table = render(result)
    assert "| floor, stateful micro-batch | 150.0 | 200.0 | 250.0 |" in table
    assert "processor / floor 1.5" in table
