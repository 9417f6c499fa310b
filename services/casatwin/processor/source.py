"""Kafka in the processor's queries: Spark's own connector, ``format("kafka")``.

    spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", "127.0.0.1:9092")
        .option("subscribe", "casatwin.telemetry")
        .option("startingOffsets", "latest").option("maxOffsetsPerTrigger", "200000")
        .option("failOnDataLoss", "false").load()

The connector (``spark-sql-kafka-0-10``, jars from ``make setup``, handed to Spark by
:mod:`~casatwin.processor.session`) keeps each query's offsets in its checkpoint, plans each
micro-batch as a fixed range per partition (a re-run reads the same records) and reads on
the executors. The options, and why:

* ``startingOffsets`` — the setting ``processor.starting_offsets``, for a query with no
  checkpoint only (:func:`~casatwin.processor.kafka_offsets.starting_offsets` fits an offset
  map to the source's topics); partitions found later are read from their start.
* ``maxOffsetsPerTrigger`` — ``processor.max_records_per_batch`` when above 0 (admission
  control; the connector shares it among partitions in proportion to their backlog).
* ``failOnDataLoss=false`` — the broker keeps its log on disk, and deletes records only by
  retention (6 h of telemetry): records deleted before a query read them (a processor
  stopped for longer than that, or a topic re-created) are skipped with a warning in
  Spark's log, instead of a query that fails again at every restart.
* ``kafka.fetch.max.wait.ms`` — ``kafka.fetch_wait_max_ms`` (10 ms). The executors' consumers
  are cached from batch to batch; with the Java client's 500 ms default, each batch waited
  for the long poll its consumer had left in flight: 500 ms per micro-batch, measured.
* ``groupIdPrefix`` — ``<client_id>-<query>``: the executors' consumers are assigned their
  partitions and never join a group; the prefix only names them on the broker.
* ``kafka.security.protocol``, ``kafka.sasl.*`` — the process's Kafka principal
  (:func:`~casatwin.bus.credentials.java_auth`): on the appliance the processor's, which
  may read telemetry and the intersections and nothing else. Spark redacts the JAAS value
  (it contains "password") in its plans and UI.
* no ``minPartitions``: one Spark partition per Kafka partition is already more read tasks
  than a small batch needs; the decoding stage coalesces them (``processor.read_tasks``).

Rows: :data:`RECORD_COLUMNS` (key, value, topic, partition, offset, the Kafka timestamp in
epoch ms), which the decoders take as Arrow batches of :data:`RECORD_SCHEMA`.

The connector commits nothing to Kafka. For lag monitoring only, :class:`LagReporter` reports
each query's processed offsets (its last batch's end offsets, from the progress) to a
consumer group of its own (:func:`lag_group`); recovery never reads them.
"""

from __future__ import annotations

from typing import Any

import confluent_kafka
import pyarrow as pa

from casatwin.bus.credentials import java_auth
from casatwin.bus.producer import client_config
from casatwin.bus.ranges import OffsetMap, from_map
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.processor import kafka_offsets as ko

log = get_logger("processor")

RECORD_SCHEMA = pa.schema(
    [
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("timestamp_ms", pa.int64()),
    ]
)


def record_columns() -> list[Any]:
    """The connector's columns the decoders read (its ``timestamp`` as epoch ms)."""
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    return [
        "key", "value", "topic", "partition", "offset",
        F.unix_millis("timestamp").alias("timestamp_ms"),
    ]  # fmt: skip


def lag_group(settings: Settings, query: str) -> str:
    """The consumer group a query reports its processed offsets to ("" for none).

    One per query: the queries read the same topic at their own pace, and one group shared
    by both would show whichever committed last (the congestion query's progress while the
    infractions query waits for MariaDB, say)."""
    prefix = settings.processor.consumer_group
    return f"{prefix}-{query}" if prefix else ""


def kafka_options(settings: Settings, topics: list[str], query: str) -> dict[str, str]:
    """The options of ``readStream.format("kafka")`` for the query ``query`` reading
    ``topics`` (see the module's doc for each)."""
    p = settings.processor
    options = {
        "kafka.bootstrap.servers": settings.kafka.bootstrap,
        "subscribe": ",".join(topics),
        "startingOffsets": ko.starting_offsets(
            p.starting_offsets, topics, lambda named: _partitions(settings, named)
        ),
        "failOnDataLoss": "false",
        "kafka.fetch.max.wait.ms": str(settings.kafka.fetch_wait_max_ms),
        "groupIdPrefix": f"{p.client_id}-{query}",
        # The Java client's own words for the process's Kafka principal (bus.credentials).
        **{f"kafka.{key}": value for key, value in java_auth(settings.kafka).items()},
    }
    if p.max_records_per_batch > 0:
        options["maxOffsetsPerTrigger"] = str(p.max_records_per_batch)
    return options


def kafka_records(spark: Any, settings: Settings, topics: list[str], query: str) -> Any:
    """The records of ``topics`` as a streaming DataFrame of :func:`record_columns`."""
    return (
        spark.readStream.format("kafka")
        .options(**kafka_options(settings, topics, query))
        .load()
        .select(*record_columns())
    )


def _partitions(settings: Settings, topics: list[str]) -> list[tuple[str, int]]:
    from casatwin.bus.watermarks import EndOffsets

    broker = EndOffsets(settings.kafka, f"{settings.processor.client_id}-partitions")
    try:
        return broker.partitions(topics, missing_ok=True)
    finally:
        broker.close()


class LagReporter:
    """Commits a query's processed offsets to its lag group (:func:`lag_group`): what
    ``kafka-consumer-groups --describe`` shows as the query's lag. Nothing reads them back."""

    def __init__(self, settings: Settings, query: str) -> None:
        self.group = lag_group(settings, query)
        self.kafka = settings.kafka
        self.client_id = f"{settings.processor.client_id}-{query}-lag"
        self._consumer: confluent_kafka.Consumer | None = None
        self._reported: dict[tuple[str, int], int] = {}

    def report(self, progress: dict[str, Any]) -> None:
        """Commit the end offsets of a finished batch (every source of its progress)."""
        if not self.group:
            return
        offsets: dict[tuple[str, int], int] = {}
        for source in progress.get("sources", []):
            end: OffsetMap | None = ko.from_progress(source.get("endOffset"))
            if end:
                offsets.update(from_map(end))
        if not offsets or offsets == self._reported:
            return
        if self._consumer is None:
            self._consumer = confluent_kafka.Consumer(
                client_config(self.kafka, self.client_id)
                | {"group.id": self.group, "enable.auto.commit": False}
            )
        try:
            self._consumer.commit(
                offsets=[confluent_kafka.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=True,
            )
        except confluent_kafka.KafkaException as exc:
            log.warning(
                "could not report offsets to the consumer group", group=self.group, reason=str(exc)
            )
            return
        self._reported = offsets

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._reported = {}


def describe(progress: dict[str, Any]) -> list[str]:
    """The descriptions of a batch's sources (``KafkaV2[Subscribe[casatwin.telemetry, …]]``)."""
    return [str(source.get("description", "")) for source in progress.get("sources", [])]
