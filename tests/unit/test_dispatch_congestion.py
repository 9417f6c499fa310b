"""Congestion in the dispatcher's routing: the newest window of a segment sets its speed."""

import pytest

from casatwin.city import load, synthetic
from casatwin.dispatch.planner import Planner, freshness, supersedes

START, END = 60_000, 360_000  # a 5-minute window


def window(start_ms: int, end_ms: int) -> dict:
    return {"key": "s-1", "scope": "segment", "window_start": start_ms, "window_end": end_ms}


def test_freshness_is_the_end_then_the_start():
    assert freshness(window(START, END)) == (END, START)


@pytest.mark.parametrize(
    ("new", "current", "replaces"),
    [
        ((END, START), None, True),  # the segment's first window
        ((END + 60_000, START + 60_000), (END, START), True),  # the next slide
        ((END, START), (END + 60_000, START + 60_000), False),  # a late re-publication
        ((END, START + 60_000), (END, START), True),  # same end: the later start is newer
        ((END, START), (END, START + 60_000), False),
        ((END, START), (END, START), True),  # the same window re-emitted with more fixes
    ],
)
def test_an_older_window_never_replaces_a_newer_one(new, current, replaces):
    assert supersedes(new, current) is replaces


@pytest.fixture
def planner():
    return Planner(load.from_dict(synthetic.grid()), min_speed_kmh=5)


def routed_speed_kmh(planner: Planner, segment: int) -> float:
    planner.refresh()
    return float(planner.pack.seg_length_m[segment] / planner.router.weights_s[segment] * 3.6)


def test_a_late_older_window_does_not_overwrite_the_newer_speed(planner):
    segment_id = planner.pack.segment_ids[3]
    older, newer = (END, START), (END + 60_000, START + 60_000)
    assert planner.observe_speed(segment_id, 12.0, newer)
    assert not planner.observe_speed(segment_id, 45.0, older)
    assert routed_speed_kmh(planner, 3) == pytest.approx(12.0)
    assert planner.observe_speed(segment_id, 20.0, newer)  # the newest window, updated
    assert routed_speed_kmh(planner, 3) == pytest.approx(20.0)


def test_windows_arriving_in_order_each_take_over(planner):
    segment_id = planner.pack.segment_ids[3]
    for i, speed in enumerate((30.0, 8.0, 25.0)):
        assert planner.observe_speed(segment_id, speed, (END + i * 60_000, START + i * 60_000))
        assert routed_speed_kmh(planner, 3) == pytest.approx(speed)


def test_each_segment_keeps_its_own_newest_window(planner):
    first, second = planner.pack.segment_ids[3], planner.pack.segment_ids[4]
    assert planner.observe_speed(first, 10.0, (END + 60_000, START + 60_000))
    assert planner.observe_speed(second, 40.0, (END, START))  # older than first's, not stale
    assert routed_speed_kmh(planner, 3) == pytest.approx(10.0)
    assert routed_speed_kmh(planner, 4) == pytest.approx(40.0)
