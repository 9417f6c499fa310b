"""``casatwin.telemetry`` as fixes: Spark's Kafka connector, then the stateless stage.

The stateless stage (:mod:`~casatwin.processor.telemetry`: parse, validate, map-match,
zone) is one ``mapInArrow`` over the connector's records (:func:`telemetry_rows`): one pass
in Python per record. The connector reads one Spark partition per Kafka partition; they are
coalesced into ``processor.read_tasks`` tasks (default: Spark's parallelism, the cores), so
that a small micro-batch pays for a few Python tasks, not one per partition.

Bad records go to ``casatwin.dlq`` from the task; the task (hence the batch) succeeds only
once the DLQ has acknowledged them. A replayed batch sends its dead letters again (they
carry the record's topic/partition/offset, which identifies duplicates). A query that only
needs the fixes (a second query over the telemetry) reads with ``dead_letters=False`` so
that each bad record is set aside once. With ``pane_ms``, the rows are not fixes but their
partial aggregates per segment, vehicle and pane (:func:`~casatwin.processor.telemetry.panes`),
which is what the congestion windows need.

The query also reads ``casatwin.processor.timers``, where the application asks for a batch
when timers are due and the telemetry is silent (:mod:`~casatwin.processor.timers`); those
records start the batch and go no further than the connector.

The rows coming out of the stage are counted in the progress of each batch
(``observedMetrics["decoded"]``, :func:`decoded_rows`), and so are the timers' records
(:func:`telemetry_records`): the telemetry records read minus the fixes is what was set
aside.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from casatwin.bus import topics
from casatwin.config import CitySettings, KafkaSettings, Settings
from casatwin.processor.source import kafka_records
from casatwin.processor.telemetry import FIX_SCHEMA, PANE_SCHEMA, STAGE, locate, panes, parse

DECODED = "decoded"  # the name of the observed metrics of the stage
ASKED = "asked"  # the records of casatwin.processor.timers a batch read


class TelemetryDecoder:
    """Records (:data:`~casatwin.processor.source.RECORD_SCHEMA`) → fixes (and dead letters),
    in the read task. Picklable: Spark ships it to the Python workers."""

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

    def schema(self) -> pa.Schema:
        return PANE_SCHEMA if self.pane_ms else FIX_SCHEMA

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from casatwin.bus.dlq import DeadLetterWriter
        from casatwin.processor.network import for_city

        network = for_city(self.city)
        producer, lost_before = None, 0
        for batch in batches:
            parsed = parse(batch, network.pack.bounds)
            if parsed.rejected and self.dead_letters:
                if producer is None:
                    producer = _dlq_producer(self.kafka, f"{self.client_id}-dlq")
                    lost_before = producer.lost()
                writer = DeadLetterWriter(producer, STAGE)
                for r in parsed.rejected:
                    writer.send(
                        r.raw, r.reason, topic=r.topic, partition=r.partition, offset=r.offset,
                        key=r.key,
                    )  # fmt: skip
            if len(parsed):
                fixes = locate(parsed, network)
                yield panes(fixes, self.pane_ms) if self.pane_ms else fixes
        # The batch (and so its offsets) only succeeds once the DLQ has every dead letter.
        if producer is not None:
            producer.confirm(lost_before, 30.0, "casatwin.dlq, this batch's dead letters")


def telemetry_rows(
    spark: Any, settings: Settings, query: str, dead_letters: bool, pane_ms: int = 0
) -> Any:
    """The streaming query ``query``'s fixes of ``casatwin.telemetry`` (``pane_ms``: panes)."""
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention
    from pyspark.sql.pandas.types import from_arrow_schema

    client_id = f"{settings.processor.client_id}-{query}"
    decoder = TelemetryDecoder(settings.kafka, settings.city, client_id, dead_letters, pane_ms)
    tasks = settings.processor.read_tasks or spark.sparkContext.defaultParallelism
    return (
        kafka_records(spark, settings, [topics.TELEMETRY, topics.TIMERS], query)
        .observe(ASKED, F.count_if(F.col("topic") == topics.TIMERS).alias("records"))
        .where(F.col("topic") == topics.TELEMETRY)
        .coalesce(tasks)
        .mapInArrow(decoder, from_arrow_schema(decoder.schema()))
        .observe(DECODED, F.count(F.lit(1)).alias("rows"))
    )


def decoded_rows(progress: dict[str, Any]) -> int | None:
    """The rows the stateless stage gave in a batch (``None``: not a telemetry query)."""
    metrics = progress.get("observedMetrics") or {}
    if DECODED not in metrics:
        return None
    return int(metrics[DECODED]["rows"])


def telemetry_records(progress: dict[str, Any]) -> int:
    """The telemetry records a batch read: its sources' input rows (one per Kafka record;
    the first batch of a query, which has no start offset, included) less the timers'."""
    read = sum(int(source.get("numInputRows") or 0) for source in progress.get("sources", []))
    metrics = progress.get("observedMetrics") or {}  # of Rows: no .get on them
    return read - (int(metrics[ASKED]["records"]) if ASKED in metrics else 0)


_PRODUCERS: dict[tuple[str, str], Any] = {}


def _dlq_producer(kafka: KafkaSettings, client_id: str) -> Any:
    """One DLQ producer per Python worker (Spark reuses workers from task to task)."""
    from casatwin.bus.producer import Producer

    key = (kafka.bootstrap, client_id)
    if key not in _PRODUCERS:
        _PRODUCERS[key] = Producer(kafka, client_id)
    return _PRODUCERS[key]
