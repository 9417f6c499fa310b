"""Spark's own progress as metrics: a StreamingQueryListener that Spark calls after each
micro-batch, so batch durations are observed one by one (the progress line only samples)."""

from __future__ import annotations

from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

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


class MetricsListener(StreamingQueryListener):
    """Micro-batch duration, rows read and processing rate, by query name."""

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 (Spark's names)
        pass

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        progress = event.progress
        observe_progress(
            progress.name or str(progress.id),
            int(progress.batchDuration),
            int(progress.numInputRows),
            float(progress.processedRowsPerSecond or 0.0),
        )

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        pass
