"""The Spark plan of the processor's stages, shared by its streaming queries.

    Kafka (casatwin-telemetry source) ── telemetry_fixes ──▶ fixes, event time, watermark
        read, parse + validate (bad records → casatwin.dlq), map-match, no-parking zones,
        all in the source's read task
    fixes ── detections ──▶ per-vehicle detectors (state store, event-time timers)

A second query (congestion windows, say) builds on :func:`telemetry_fixes` with its own
checkpoint, and passes ``dead_letters=False`` so that a bad record reaches the DLQ once.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 - Spark's convention
from pyspark.sql.streaming.state import GroupStateTimeout

from casatwin.config import Settings
from casatwin.processor.detectors import DetectorConfig
from casatwin.processor.stateful import (
    DETECTION_SCHEMA,
    INPUT_COLUMNS,
    STATE_SCHEMA,
    detection_function,
)
from casatwin.processor.telemetry_source import NAME as TELEMETRY_SOURCE
from casatwin.processor.telemetry_source import telemetry_options


def detector_config(settings: Settings) -> DetectorConfig:
    p = settings.processor
    return DetectorConfig(
        dwell_s=p.dwell_s,
        speed_tolerance_kmh=p.speed_tolerance_kmh,
        episode_gap_s=p.speeding_gap_s,
    )


def telemetry_fixes(
    spark: SparkSession,
    settings: Settings,
    query: str,
    dead_letters: bool = True,
    watermark_s: float | None = None,
) -> DataFrame:
    """Validated, map-matched fixes of ``casatwin.telemetry`` with an event-time watermark
    (``watermark_s`` behind the latest fix; default the processor's ``watermark_delay_s``).

    With ``dead_letters``, malformed records go to the DLQ (one query per application
    should: a record is set aside once).
    """
    p = settings.processor
    options = telemetry_options(settings, f"{p.client_id}-{query}", dead_letters)
    fixes = spark.readStream.format(TELEMETRY_SOURCE).options(**options).load()
    delay_s = p.watermark_delay_s if watermark_s is None else watermark_s
    return fixes.withColumn("event_time", F.timestamp_millis("ts")).withWatermark(
        "event_time", f"{int(delay_s * 1000)} milliseconds"
    )


def detections(fixes: DataFrame, settings: Settings) -> DataFrame:
    """Infractions detected per vehicle (see :mod:`casatwin.processor.detectors`), the
    vehicles' state kept in ``state_buckets`` groups (see :mod:`~.stateful`)."""
    buckets = F.pmod(F.xxhash64("vehicle_id"), F.lit(settings.processor.state_buckets))
    return (
        fixes.select(*INPUT_COLUMNS, "event_time")
        .withColumn("bucket", buckets)
        .groupBy("bucket")
        .applyInPandasWithState(
            detection_function(settings.city, detector_config(settings)),
            outputStructType=DETECTION_SCHEMA,
            stateStructType=STATE_SCHEMA,
            outputMode="append",
            timeoutConf=GroupStateTimeout.EventTimeTimeout,
        )
    )
