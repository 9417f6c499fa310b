"""The faults demo's reconciliation: ground truth against ledger rows."""

from casatwin.demo.reconcile import judgeable, reconcile

SPEEDING = {"type": "speeding", "vehicle_id": "TX-00201", "event_ts": 10_500,
            "start_ts": 10_000, "end_ts": 14_000, "fixes": 5}  # fmt: skip
RED = {"type": "red_light", "vehicle_id": "TX-00202", "event_ts": 50_000}


def row(infraction_id, record, event_ts=None):
    return {
        "infraction_id": infraction_id,
        "vehicle_id": record["vehicle_id"],
        "type": record["type"],
        "event_ts": record["event_ts"] if event_ts is None else event_ts,
    }


def test_every_record_once_is_clean():
    result = reconcile([SPEEDING, RED], [row("SP-1", SPEEDING, 12_000), row("RL-1", RED, 50_900)])
    assert result.clean
    assert result.summary() == {
        "expected": 2, "recorded": 2, "lost": 0, "duplicated": 0, "unexpected": 0
    }  # fmt: skip


def test_lost_duplicated_and_unexpected_are_told_apart():
    stranger = {"type": "speeding", "vehicle_id": "TX-09999", "event_ts": 1}
    result = reconcile(
        [SPEEDING, RED],
        [row("SP-1", SPEEDING), row("SP-2", SPEEDING, 13_900), row("X", stranger)],
    )
    assert not result.clean
    assert [r["vehicle_id"] for r in result.lost] == ["TX-00202"]
    assert result.duplicated == [(SPEEDING, ["SP-1", "SP-2"])]
    assert [r["infraction_id"] for r in result.unexpected] == ["X"]
    assert "1 lost, 1 duplicated, 1 not in the ground truth" in result.report()


def test_a_row_outside_the_episode_does_not_match():
    assert reconcile([RED], [row("RL-1", RED, 50_000 + 60_000)]).lost == [RED]


def test_judgeable_needs_two_fixes_or_the_dwell():
    assert not judgeable({**SPEEDING, "fixes": 1}, 120_000, 0)
    parked = {"type": "illegal_parking", "vehicle_id": "v", "event_ts": 0, "start_ts": 0}
    assert judgeable(parked, 120_000, end_ms=130_000)  # still parked at the end
    assert not judgeable({**parked, "end_ts": 60_000}, 120_000, end_ms=130_000)
