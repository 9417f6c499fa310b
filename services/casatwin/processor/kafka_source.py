"""A Kafka streaming source for Spark, on the Python Data Source API (``casatwin-kafka``).

The JVM ``spark-sql-kafka`` connector cannot be installed here, so the processor reads
Kafka through librdkafka (``confluent-kafka``) from Python::

    spark.dataSource.register(KafkaSource)
    spark.readStream.format("casatwin-kafka")
        .option("bootstrap", "127.0.0.1:9092").option("topics", "casatwin.telemetry")
        .option("startingOffsets", "latest").option("maxRecordsPerBatch", "100000").load()

Rows are ``key, value`` (binary), ``topic``, ``partition``, ``offset`` and ``timestamp_ms``
(the record's Kafka timestamp, epoch ms), returned to Spark as Arrow record batches.

How it keeps Spark's guarantees:

* Offsets per partition live in Spark's checkpoint (the offset map of
  :mod:`~casatwin.processor.kafka_offsets`); nothing is committed to Kafka.
* ``latestOffset`` asks the broker for the *true* end of each partition (see
  :class:`~casatwin.bus.watermarks.EndOffsets`) and caps the batch at ``maxRecordsPerBatch``
  (Spark's admission control, ``ReadMaxRows``). Partitions created while the query runs are
  read from their earliest offset.
* A batch is a fixed ``[start, end)`` per partition, so re-running it after a crash reads
  exactly the same records.
* The reader object is pickled to the executors; clients are opened lazily where they are
  used (the planner's consumer on the driver, one cached consumer per Python worker).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import confluent_kafka
import orjson
import pyarrow as pa
from pyspark.sql.datasource import (
    CaseInsensitiveDict,
    DataSource,
    DataSourceStreamReader,
    InputPartition,
)
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from casatwin.bus.producer import client_config
from casatwin.bus.watermarks import EndOffsets
from casatwin.config import KafkaSettings
from casatwin.logs import get_logger
from casatwin.processor import kafka_offsets as ko

log = get_logger("processor")

NAME = "casatwin-kafka"

SCHEMA = StructType(
    [
        StructField("key", BinaryType(), True),
        StructField("value", BinaryType(), True),
        StructField("topic", StringType(), False),
        StructField("partition", IntegerType(), False),
        StructField("offset", LongType(), False),
        StructField("timestamp_ms", LongType(), False),
    ]
)
ARROW_SCHEMA = to_arrow_schema(SCHEMA)

ARROW_BATCH_ROWS = 20_000  # rows per Arrow batch handed to Spark from one task


def source_options(
    settings: KafkaSettings,
    topics: list[str],
    client_id: str,
    starting_offsets: str = "latest",
    max_records_per_batch: int = 0,
    records_per_task: int = 50_000,
    max_tasks: int = 8,
    read_timeout_s: float = 30.0,
    consumer_group: str = "",
) -> dict[str, str]:
    """The options of ``readStream.format("casatwin-kafka")`` for these settings."""
    return {
        "kafka": orjson.dumps(dataclasses.asdict(settings)).decode(),
        "topics": ",".join(topics),
        "clientId": client_id,
        "startingOffsets": starting_offsets,
        "maxRecordsPerBatch": str(max_records_per_batch),
        "recordsPerTask": str(records_per_task),
        "maxTasks": str(max_tasks),
        "readTimeoutMs": str(int(read_timeout_s * 1000)),
        "consumerGroup": consumer_group,
    }


def kafka_settings(options: Mapping[str, str]) -> KafkaSettings:
    """The Kafka settings in a source's options (``kafka``: JSON, or ``bootstrap``)."""
    if "kafka" in options:
        return KafkaSettings(**orjson.loads(options["kafka"]))
    return KafkaSettings(bootstrap=options["bootstrap"])


class Decoder(Protocol):
    """Turns the records of a read task into rows, in the same task (one pass in Python
    instead of a second Python stage): ``__call__`` maps the Arrow batches of records
    (:data:`ARROW_SCHEMA`) to Arrow batches of :meth:`schema`. Picklable."""

    def schema(self) -> StructType: ...

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]: ...


class KafkaSource(DataSource):
    """``spark.readStream.format("casatwin-kafka")``: the records as they are.

    A subclass with a :meth:`decoder` reads decoded rows instead (``casatwin-telemetry``).
    """

    @classmethod
    def name(cls) -> str:
        return NAME

    def decoder(self) -> Decoder | None:
        return None

    def schema(self) -> StructType:
        decoder = self.decoder()
        return SCHEMA if decoder is None else decoder.schema()

    def streamReader(self, schema: StructType) -> KafkaStreamReader:  # noqa: N802 - Spark's name
        return KafkaStreamReader(self.options, self.decoder())


class KafkaTask(InputPartition):
    """One task's work: records ``[start, end)`` of one or more partitions."""

    def __init__(self, ranges: list[ko.OffsetRange]) -> None:
        super().__init__(ranges)
        self.ranges = ranges


class KafkaStreamReader(DataSourceStreamReader):
    """Plans micro-batches on the driver and reads their ranges on the executors."""

    def __init__(self, options: Mapping[str, str], decoder: Decoder | None = None) -> None:
        self.options = CaseInsensitiveDict(options)  # Spark hands options over lower-cased
        self.decoder = decoder
        self.topics = ko.topics_of(options.get("topics", ""))
        if not self.topics:
            raise ValueError("the casatwin-kafka source needs the option topics=a,b,...")
        self.starting = ko.parse_starting_offsets(options.get("startingOffsets", ko.LATEST))
        self.max_records_per_batch = int(options.get("maxRecordsPerBatch") or 0)
        self.records_per_task = int(options.get("recordsPerTask") or 50_000)
        self.max_tasks = int(options.get("maxTasks") or 8)
        self.read_timeout_s = int(options.get("readTimeoutMs") or 30_000) / 1000
        self.client_id = options.get("clientId") or "casatwin-processor"
        self.settings = kafka_settings(self.options)
        self.consumer_group = options.get("consumerGroup") or ""
        self._broker: EndOffsets | None = None  # the planner's client, opened on first use
        self._committer: confluent_kafka.Consumer | None = None
        self._latest: ko.OffsetMap | None = None
        self._missing: set[str] = set()  # topics not created yet (warned about once)

    def __getstate__(self) -> dict[str, Any]:
        # Executors get a copy of the reader: never ship (or share) the planner's client.
        state = dict(self.__dict__)
        state["_broker"] = state["_committer"] = None
        return state

    # -- planning (driver) -----------------------------------------------------------------

    @property
    def broker(self) -> EndOffsets:
        if self._broker is None:
            self._broker = EndOffsets(self.settings, f"{self.client_id}-planner")
        return self._broker

    def _bounds(self, exact: bool = False) -> dict[tuple[str, int], tuple[int, int]]:
        partitions = self.broker.partitions(self.topics, missing_ok=True)
        for topic in set(self.topics) - {t for t, _ in partitions} - self._missing:
            log.warning("topic does not exist (yet); it will be read once created", topic=topic)
            self._missing.add(topic)
        self._missing &= set(self.topics) - {t for t, _ in partitions}
        bounds = self.broker.bounds(partitions, exact=exact)
        self._latest = ko.to_map({key: end for key, (_, end) in bounds.items()})
        return bounds

    def initialOffset(self) -> ko.OffsetMap:  # noqa: N802 - Spark's name
        start = ko.initial_offsets(self.starting, self._bounds(exact=True))
        log.info(
            "kafka source starts",
            topics=",".join(self.topics),
            starting_offsets=self.options.get("startingOffsets", ko.LATEST),
            partitions=sum(len(p) for p in start.values()),
        )
        return start

    def getDefaultReadLimit(self) -> ReadLimit:  # noqa: N802 - Spark's name
        if self.max_records_per_batch > 0:
            return ReadMaxRows(self.max_records_per_batch)
        return ReadAllAvailable()

    def latestOffset(self, start: ko.OffsetMap, limit: ReadLimit) -> ko.OffsetMap:  # noqa: N802 - Spark's name
        # Exact ends: a growing partition's watermark on the embedded broker lags by its last
        # producer batch, which would wait for the next one (p95 +0.5 s at 2 batches a second).
        bounds = self._bounds(exact=True)
        resumed = ko.resume(start, bounds)
        for (topic, partition), previous in resumed.rewound.items():
            log.warning(
                "partition is shorter than what was read (the broker lost its log); "
                "reading it again from its start",
                topic=topic,
                partition=partition,
                previous_end=previous,
            )
        for topic, partition in resumed.new_partitions:
            log.info(
                "new partition found; reading it from its start", topic=topic, partition=partition
            )
        for (topic, partition), lost in resumed.lost.items():
            log.warning(
                "records were deleted by the broker before they were read",
                topic=topic,
                partition=partition,
                lost=lost,
            )
        max_rows = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        available = {key: end for key, (_, end) in bounds.items()}
        return ko.to_map(ko.limit_offsets(resumed.start, available, max_rows))

    def reportLatestOffset(self) -> ko.OffsetMap | None:  # noqa: N802 - Spark's name
        return self._latest

    def partitions(self, start: ko.OffsetMap, end: ko.OffsetMap) -> list[KafkaTask]:
        tasks = ko.plan_tasks(start, end, self.records_per_task, self.max_tasks)
        return [KafkaTask(ranges) for ranges in tasks]

    def commit(self, end: ko.OffsetMap) -> None:
        """Report the processed offsets to the consumer group, for lag monitoring only:
        recovery uses Spark's checkpoint, never these."""
        if not self.consumer_group:
            return
        if self._committer is None:
            self._committer = confluent_kafka.Consumer(
                client_config(self.settings, f"{self.client_id}-committer")
                | {"group.id": self.consumer_group, "enable.auto.commit": False}
            )
        offsets = [
            confluent_kafka.TopicPartition(topic, partition, offset)
            for (topic, partition), offset in ko.from_map(end).items()
        ]
        try:
            self._committer.commit(offsets=offsets, asynchronous=True)
        except confluent_kafka.KafkaException as exc:
            log.warning("could not report offsets to the consumer group", reason=str(exc))

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.close()
            self._broker = None
        if self._committer is not None:
            self._committer.close()
            self._committer = None

    # -- reading (executors) ---------------------------------------------------------------

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, KafkaTask)
        consumer = cached_consumer(self.settings, f"{self.client_id}-reader")
        records = (
            batch
            for ranges in ko.rounds(partition.ranges)
            for batch in read_ranges(consumer, ranges, self.read_timeout_s)
        )
        yield from records if self.decoder is None else self.decoder(records)


# One consumer per process and client id: Spark reuses its Python workers from task to task,
# and a connected consumer saves the connection set-up on every batch.
_CONSUMERS: dict[tuple[str, str], confluent_kafka.Consumer] = {}


def cached_consumer(settings: KafkaSettings, client_id: str) -> confluent_kafka.Consumer:
    key = (settings.bootstrap, client_id)
    if key not in _CONSUMERS:
        _CONSUMERS[key] = confluent_kafka.Consumer(
            client_config(settings, client_id)
            | {
                "group.id": f"{client_id}-unused",  # librdkafka insists; no group is joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                # Records deleted by retention: start from the earliest one kept.
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "queued.max.messages.kbytes": 16384,
            }
        )
    return _CONSUMERS[key]


def close_cached_consumers() -> None:
    """Close this process's cached consumers (the broker is going away, say)."""
    while _CONSUMERS:
        _CONSUMERS.popitem()[1].close()


def read_ranges(
    consumer: confluent_kafka.Consumer,
    ranges: list[ko.OffsetRange],
    timeout_s: float,
    batch_rows: int = ARROW_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The records of ``ranges`` (one per partition) as Arrow batches: partition by
    partition in (topic, partition) order, each in offset order — the same rows in the same
    order every time, however the broker interleaves its answers.

    Raises :class:`TimeoutError` if the broker does not deliver them within ``timeout_s``
    (Spark then retries the task); offsets the log does not hold (deleted by retention)
    are skipped.
    """
    wanted = {(r.topic, r.partition): r for r in ranges}
    next_offset = {key: r.start for key, r in wanted.items()}
    pending = {key for key, r in wanted.items() if r.count > 0}
    rows: dict[tuple[str, int], list[tuple[Any, ...]]] = {key: [] for key in wanted}
    consumer.assign([confluent_kafka.TopicPartition(t, p, r.start) for (t, p), r in wanted.items()])
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            # consume() waits for as many messages as asked (or the timeout): ask for what
            # is still missing, so that a small batch returns as soon as it is complete.
            missing = sum(wanted[key].end - next_offset[key] for key in pending)
            messages = consumer.consume(max(1, min(missing, 10_000)), 0.05)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise confluent_kafka.KafkaException(error)
                    continue
                key = (message.topic(), message.partition())
                offset = message.offset()
                if key not in pending or offset < next_offset[key]:
                    continue
                if offset >= wanted[key].end:
                    pending.discard(key)
                    continue
                rows[key].append((message.key(), message.value(), offset, message.timestamp()[1]))
                next_offset[key] = offset + 1
                if offset + 1 >= wanted[key].end:
                    pending.discard(key)
            if not messages and pending:
                _skip_missing_offsets(consumer, wanted, next_offset, pending)
                if time.monotonic() > deadline:
                    _give_up_on_vanished_records(consumer, next_offset, pending)
                if pending and time.monotonic() > deadline:
                    late = ", ".join(f"{t}/{p}@{next_offset[(t, p)]}" for t, p in sorted(pending))
                    raise TimeoutError(f"records not delivered within {timeout_s:.0f} s: {late}")
    finally:
        consumer.unassign()
    for (topic, partition), records in sorted(rows.items()):
        for i in range(0, len(records), batch_rows):
            yield _arrow_batch(topic, partition, records[i : i + batch_rows])


def _give_up_on_vanished_records(
    consumer: confluent_kafka.Consumer,
    next_offset: dict[tuple[str, int], int],
    pending: set[tuple[str, int]],
) -> None:
    """A partition whose log now ends at or before the offset awaited has lost the records
    (a memory-only broker restarted after the batch was planned): waiting cannot bring them
    back, and retrying the batch would fail forever. Say so and go on without them; the
    next batch reads the new log from its start (``kafka_offsets.resume``)."""
    for topic, partition in sorted(pending):
        tp = confluent_kafka.TopicPartition(topic, partition)
        try:
            _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except confluent_kafka.KafkaException:
            continue  # broker still away: keep waiting (the task fails and is retried)
        if high <= next_offset[(topic, partition)]:
            log.warning(
                "records planned for this batch are gone from the broker (its log went back); "
                "going on without them",
                topic=topic,
                partition=partition,
                from_offset=next_offset[(topic, partition)],
                log_end=high,
            )
            pending.discard((topic, partition))


def _skip_missing_offsets(
    consumer: confluent_kafka.Consumer,
    wanted: dict[tuple[str, int], ko.OffsetRange],
    next_offset: dict[tuple[str, int], int],
    pending: set[tuple[str, int]],
) -> None:
    """Offsets with no record (deleted, or control records): the position moves past them."""
    positions = consumer.position([confluent_kafka.TopicPartition(t, p) for t, p in pending])
    for tp in positions:
        key = (tp.topic, tp.partition)
        if tp.offset > next_offset[key]:
            next_offset[key] = min(tp.offset, wanted[key].end)
            if next_offset[key] >= wanted[key].end:
                pending.discard(key)


def _arrow_batch(topic: str, partition: int, records: list[tuple[Any, ...]]) -> pa.RecordBatch:
    keys, values, offsets, timestamps = zip(*records, strict=True)
    n = len(records)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(keys, pa.binary()),
            pa.array(values, pa.binary()),
            pa.array([topic] * n, pa.string()),
            pa.array([partition] * n, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(timestamps, pa.int64()),
        ],
        schema=ARROW_SCHEMA,
    )
