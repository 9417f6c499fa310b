"""Congestion levels and the anomaly flag, from a window's figures. Pure.

A road segment's level comes from its **speed ratio**: the window's average speed over the
segment's free-flow speed (its limit). An intersection's level is the worse of what its
average queue and its peak wait say. An **anomaly** is a segment window much slower than
the segment's usual speed at that hour of the day (the median of its past windows).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from casatwin.bus.messages import CONGESTION_LEVELS
from casatwin.config import CongestionSettings

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _rank(value: float, light: float, moderate: float, severe: float) -> int:
    """0..3 for a figure that grows with congestion (queue, wait)."""
    return sum(value >= threshold for threshold in (light, moderate, severe))


def segment_level(speed_ratio: float, c: CongestionSettings) -> str:
    """clear ≥ light_ratio > light ≥ moderate_ratio > moderate ≥ severe_ratio > severe."""
    rank = sum(
        speed_ratio < threshold for threshold in (c.light_ratio, c.moderate_ratio, c.severe_ratio)
    )
    return CONGESTION_LEVELS[rank]


def intersection_level(avg_queue: float, peak_wait_s: float, c: CongestionSettings) -> str:
    queue = _rank(avg_queue, c.light_queue, c.moderate_queue, c.severe_queue)
    wait = _rank(peak_wait_s, c.light_wait_s, c.moderate_wait_s, c.severe_wait_s)
    return CONGESTION_LEVELS[max(queue, wait)]


def hour_of(window_end_ms: int) -> int:
    """The hour of the day (UTC) a window belongs to: the baseline's bucket."""
    return (window_end_ms % DAY_MS) // HOUR_MS


def is_anomaly(avg_speed_kmh: float, past_speeds: Sequence[float], c: CongestionSettings) -> bool:
    """Slower than ``anomaly_ratio`` × the median of ``past_speeds`` (the segment's windows at
    this hour on earlier days); never with fewer than ``baseline_min_windows`` of them."""
    if len(past_speeds) < max(c.baseline_min_windows, 1):
        return False
    return avg_speed_kmh < c.anomaly_ratio * statistics.median(past_speeds)
