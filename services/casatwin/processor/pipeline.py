"""The Spark plan of the processor's stages, shared by its streaming queries.

    Kafka (Spark's connector) ── telemetry_fixes ──▶ fixes, event time, watermark
        parse + validate (bad records → casatwin.dlq), map-match, no-parking zones: one
        mapInArrow over the records (telemetry_source)
    fixes ── detections ──▶ per-vehicle detectors (state store, event-time timers)

A second query reads the same topic with its own checkpoint and no dead letters (a bad
record reaches the DLQ once): the congestion windows read :func:`segment_panes`.
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
from casatwin.processor.telemetry_source import telemetry_rows


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
    delay_s = settings.processor.watermark_delay_s if watermark_s is None else watermark_s
    return _telemetry(spark, settings, query, dead_letters, delay_s)


def segment_panes(
    spark: SparkSession, settings: Settings, query: str, pane_ms: int, watermark_s: float
) -> DataFrame:
    """The matched fixes of ``casatwin.telemetry`` as partial aggregates per segment, vehicle
    and pane of ``pane_ms`` (:func:`~casatwin.processor.telemetry.panes`), event time the
    pane's latest fix, with a watermark; bad records are left to the infractions query."""
    return _telemetry(spark, settings, query, False, watermark_s, pane_ms)


def _telemetry(
    spark: SparkSession,
    settings: Settings,
    query: str,
    dead_letters: bool,
    watermark_s: float,
    pane_ms: int = 0,
) -> DataFrame:
    rows = telemetry_rows(spark, settings, query, dead_letters, pane_ms)
    return rows.withColumn("event_time", F.timestamp_millis("ts")).withWatermark(
        "event_time", f"{int(watermark_s * 1000)} milliseconds"
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
