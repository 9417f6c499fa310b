"""The latency floor of the processor's benchmarks, against the real broker and Spark local
mode: both shapes time the probe records they were sent, from the broker's append time."""

from __future__ import annotations

from typing import Any

import pytest

from casatwin.config import Settings
from casatwin.processor.floor import PROBE_RATE, floor, ratio

pytestmark = [pytest.mark.integration, pytest.mark.spark]

SECONDS = 4


def test_both_floors_time_the_probe_records_from_the_broker_to_the_sink(
    spark: Any, broker_settings: Settings
) -> None:
    found = floor(spark, broker_settings, SECONDS, warmup_s=3)

    assert set(found) == {"stateful", "stateless"}
    for shape, measured in found.items():
        # Every probe record sent after the warm-up reaches the sink once (within the
        # producer's pacing, ± one tenth of a second's step).
        assert PROBE_RATE * (SECONDS - 0.5) <= measured["records"] <= PROBE_RATE * (SECONDS + 1), (
            shape
        )
        p = measured["latency_ms"]
        # Append time → sink: positive, and not the producer's clock or a stale record's.
        assert 0 < p["p50"] <= p["p95"] <= p["p99"] < 30_000, (shape, p)
        assert measured["batch_ms_median"] is not None


def test_a_figure_over_its_floor() -> None:
    assert ratio(900.0, 300.0) == 3.0
    assert ratio(900.0, None) is None
