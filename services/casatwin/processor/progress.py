"""Spark's own progress as metrics: every micro-batch's duration, rows and rate.

The supervisor reads each query's ``recentProgress`` every couple of seconds and observes
the batches it has not seen yet, so batch durations are recorded one by one. Not a
``StreamingQueryListener``: a Python listener is a py4j callback, and Spark's side of it
(resolving the event's fields by reflection, class lookups through the whole classpath)
took about a quarter of the JVM's CPU on a 2-core machine — time taken from the batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from casatwin.observability.families import (
    SPARK_BATCH_ROWS,
    SPARK_BATCH_SECONDS,
    SPARK_PROCESSED_RATE,
)


def observe_progress(name: str, batch_ms: int, rows: int, processed_per_s: float) -> None:
    """Record one micro-batch's figures (pure of Spark: the tests call it directly)."""
    SPARK_BATCH_SECONDS.labels(name).observe(batch_ms / 1000)
    SPARK_BATCH_ROWS.labels(name).inc(rows)
    SPARK_PROCESSED_RATE.labels(name).set(processed_per_s)


def observe_batches(name: str, progress: Iterable[dict[str, Any]]) -> None:
    """Record the batches of a query's progress entries (``StreamingQuery.recentProgress``)."""
    for p in progress:
        observe_progress(
            name,
            int(p.get("batchDuration") or p["durationMs"].get("triggerExecution", 0)),
            int(p["numInputRows"]),
            float(p.get("processedRowsPerSecond") or 0.0),
        )


def new_batches(progress: Iterable[dict[str, Any]], after_batch: int) -> list[dict[str, Any]]:
    """The entries of batches after ``after_batch`` (a batch id), in order."""
    return sorted((p for p in progress if p["batchId"] > after_batch), key=lambda p: p["batchId"])
