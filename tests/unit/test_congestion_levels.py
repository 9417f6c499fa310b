"""Congestion levels and the anomaly flag (pure), at and around the configured thresholds."""

from __future__ import annotations

import pytest

from casatwin.config import CongestionSettings
from casatwin.processor import levels

C = CongestionSettings()  # ratios 0.75 / 0.5 / 0.25; queue 5 / 10 / 20; wait 45 / 90 / 150 s


@pytest.mark.parametrize(
    ("ratio", "level"),
    [(1.2, "clear"), (0.75, "clear"), (0.74, "light"), (0.5, "light"), (0.49, "moderate"),
     (0.25, "moderate"), (0.24, "severe"), (0.0, "severe")],
)  # fmt: skip
def test_segment_level_from_speed_ratio(ratio: float, level: str) -> None:
    assert levels.segment_level(ratio, C) == level


def test_intersection_level_is_the_worse_of_queue_and_wait() -> None:
    assert levels.intersection_level(0, 0, C) == "clear"
    assert levels.intersection_level(5, 0, C) == "light"
    assert levels.intersection_level(8, 100, C) == "moderate"
    assert levels.intersection_level(25, 10, C) == "severe"
    assert levels.intersection_level(0, 150, C) == "severe"


def test_anomaly_needs_a_baseline_and_a_large_drop() -> None:
    usual = [40.0] * 9 + [10.0]  # median 40
    assert levels.is_anomaly(19.0, usual, C)
    assert not levels.is_anomaly(21.0, usual, C)
    assert not levels.is_anomaly(5.0, usual[:9], C)  # 9 < baseline_min_windows


def test_hour_of_window_end_is_utc() -> None:
    assert levels.hour_of(1_800_000_000_000) == 8  # 2027-01-15T08:00Z
    assert levels.hour_of(1_800_000_000_000 + 3_599_999) == 8
