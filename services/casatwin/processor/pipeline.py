"""The Spark plan of the processor's stages, shared by its streaming queries.

    Kafka (casatwin-kafka source) ── telemetry_fixes ──▶ fixes with event time + watermark
        parse + validate (bad records → casatwin.dlq), map-match, no-parking zones
    fixes ── detections ──▶ per-vehicle detectors (state store, event-time timers)

A second query (congestion windows, say) builds on :func:`telemetry_fixes` with its own
checkpoint, and passes ``dead_letters=False`` so that a bad record reaches the DLQ once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark import Accumulator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 - Spark's convention
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.streaming.state import GroupStateTimeout

from casatwin.bus import topics
from casatwin.config import CitySettings, KafkaSettings, Settings
from casatwin.processor.detectors import DetectorConfig
from casatwin.processor.kafka_source import NAME as KAFKA_SOURCE
from casatwin.processor.kafka_source import source_options
from casatwin.processor.stateful import (
    DETECTION_SCHEMA,
    INPUT_COLUMNS,
    STATE_SCHEMA,
    detection_function,
)
from casatwin.processor.telemetry import FIX_SCHEMA, STAGE, locate, parse


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
    dead_letters: Accumulator[int] | None,
) -> DataFrame:
    """Validated, map-matched fixes of ``casatwin.telemetry`` with an event-time watermark.

    With ``dead_letters`` (an accumulator counting them), malformed records go to the DLQ.
    """
    p = settings.processor
    client_id = f"{p.client_id}-{query}"
    raw = (
        spark.readStream.format(KAFKA_SOURCE)
        .options(
            **source_options(
                settings.kafka,
                [topics.TELEMETRY],
                client_id,
                starting_offsets=p.starting_offsets,
                max_records_per_batch=p.max_records_per_batch,
                records_per_task=p.records_per_task,
                consumer_group=p.consumer_group,
            )
        )
        .load()
    )
    stage = locate_function(settings.kafka, settings.city, client_id, dead_letters)
    fixes = raw.mapInArrow(stage, from_arrow_schema(FIX_SCHEMA))
    return fixes.withColumn("event_time", F.timestamp_millis("ts")).withWatermark(
        "event_time", f"{int(p.watermark_delay_s * 1000)} milliseconds"
    )


def locate_function(
    kafka: KafkaSettings, city: CitySettings, client_id: str, dead_letters: Accumulator[int] | None
) -> Any:
    """The ``mapInArrow`` function of the stateless stage (small and picklable)."""

    def stage(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from casatwin.bus.dlq import DeadLetterWriter
        from casatwin.processor.network import for_city

        network = for_city(city)
        producer = None
        rejected = 0
        for batch in batches:
            parsed = parse(batch, network.pack.bounds)
            if parsed.rejected and dead_letters is not None:
                producer = producer or _dlq_producer(kafka, f"{client_id}-dlq")
                writer = DeadLetterWriter(producer, STAGE)
                for r in parsed.rejected:
                    writer.send(
                        r.raw, r.reason, topic=r.topic, partition=r.partition, offset=r.offset,
                        key=r.key,
                    )  # fmt: skip
                rejected += len(parsed.rejected)
            if len(parsed):
                yield locate(parsed, network)
        if producer is not None:
            # The task (hence the batch) only succeeds once the DLQ has every dead letter.
            if producer.flush(30.0):
                raise RuntimeError("the DLQ did not acknowledge every dead letter in 30 s")
            dead_letters.add(rejected)  # type: ignore[union-attr]

    return stage


_PRODUCERS: dict[tuple[str, str], Any] = {}


def _dlq_producer(kafka: KafkaSettings, client_id: str) -> Any:
    """One DLQ producer per Python worker (Spark reuses workers from task to task)."""
    from casatwin.bus.producer import Producer

    key = (kafka.bootstrap, client_id)
    if key not in _PRODUCERS:
        _PRODUCERS[key] = Producer(kafka, client_id)
    return _PRODUCERS[key]


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
