"""``casatwin-telemetry``: the Kafka source reading ``casatwin.telemetry`` as fixes.

The stateless stage (:mod:`~casatwin.processor.telemetry`: parse, validate, map-match,
zone) runs inside the source's read task, on the records as they come from Kafka: one pass
in Python per record, where a separate ``mapInArrow`` stage would cost a second Python
round trip (and tens of milliseconds of task overhead per micro-batch).

Bad records go to ``casatwin.dlq`` from the task; the task (hence the batch) succeeds only
once the DLQ has acknowledged them. A replayed batch sends its dead letters again (they
carry the record's topic/partition/offset, which identifies duplicates). A query that only
needs the fixes (a second query over the telemetry) reads with ``deadLetters=false`` so
that each bad record is set aside once. With ``paneMs``, the rows are not fixes but their
partial aggregates per segment, vehicle and pane (:func:`~casatwin.processor.telemetry.panes`),
which is what the congestion windows need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from casatwin.bus import topics
from casatwin.config import CitySettings, KafkaSettings, Settings
from casatwin.processor.kafka_source import KafkaSource, kafka_settings, source_options
from casatwin.processor.telemetry import FIX_SCHEMA, PANE_SCHEMA, STAGE, locate, panes, parse

NAME = "casatwin-telemetry"


class TelemetryDecoder:
    """Records → fixes (and dead letters), in the read task."""

    def __init__(
        self,
        kafka: KafkaSettings,
        city: CitySettings,
        client_id: str,
        dead_letters: bool,
        pane_ms: int = 0,
    ) -> None:
        self.kafka = kafka
        self.city = city
        self.client_id = client_id
        self.dead_letters = dead_letters
        self.pane_ms = pane_ms

    def schema(self) -> StructType:
        return from_arrow_schema(PANE_SCHEMA if self.pane_ms else FIX_SCHEMA)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from casatwin.bus.dlq import DeadLetterWriter
        from casatwin.processor.network import for_city

        network = for_city(self.city)
        producer = None
        for batch in batches:
            parsed = parse(batch, network.pack.bounds)
            if parsed.rejected and self.dead_letters:
                producer = producer or _dlq_producer(self.kafka, f"{self.client_id}-dlq")
                writer = DeadLetterWriter(producer, STAGE)
                for r in parsed.rejected:
                    writer.send(
                        r.raw, r.reason, topic=r.topic, partition=r.partition, offset=r.offset,
                        key=r.key,
                    )  # fmt: skip
            if len(parsed):
                fixes = locate(parsed, network)
                yield panes(fixes, self.pane_ms) if self.pane_ms else fixes
        # The batch only succeeds once the DLQ has every dead letter.
        if producer is not None and producer.flush(30.0):
            raise RuntimeError("the DLQ did not acknowledge every dead letter within 30 s")


class TelemetrySource(KafkaSource):
    """``spark.readStream.format("casatwin-telemetry")``: map-matched fixes."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def decoder(self) -> TelemetryDecoder:
        options = self.options
        return TelemetryDecoder(
            kafka_settings(options),
            CitySettings(**orjson.loads(options["city"])),
            options.get("clientId") or "casatwin-processor",
            (options.get("deadLetters") or "true").lower() == "true",
            int(options.get("paneMs") or 0),
        )


def lag_group(settings: Settings, query: str) -> str:
    """The consumer group a query reports its processed offsets to ("" for none).

    One per query: the queries read the same topic at their own pace, and one group shared
    by both would show whichever committed last (the congestion query's progress while the
    infractions query waits for MariaDB, say)."""
    prefix = settings.processor.consumer_group
    return f"{prefix}-{query}" if prefix else ""


def telemetry_options(
    settings: Settings, query: str, client_id: str, dead_letters: bool, pane_ms: int = 0
) -> dict[str, str]:
    """The options of ``readStream.format("casatwin-telemetry")`` for the streaming query
    ``query`` (``pane_ms``: panes)."""
    p = settings.processor
    return {
        **source_options(
            settings.kafka,
            [topics.TELEMETRY],
            client_id,
            starting_offsets=p.starting_offsets,
            max_records_per_batch=p.max_records_per_batch,
            records_per_task=p.records_per_task,
            consumer_group=lag_group(settings, query),
        ),
        "city": orjson.dumps(dataclasses.asdict(settings.city)).decode(),
        "deadLetters": "true" if dead_letters else "false",
        "paneMs": str(pane_ms),
    }


_PRODUCERS: dict[tuple[str, str], Any] = {}


def _dlq_producer(kafka: KafkaSettings, client_id: str) -> Any:
    """One DLQ producer per Python worker (Spark reuses workers from task to task)."""
    from casatwin.bus.producer import Producer

    key = (kafka.bootstrap, client_id)
    if key not in _PRODUCERS:
        _PRODUCERS[key] = Producer(kafka, client_id)
    return _PRODUCERS[key]
