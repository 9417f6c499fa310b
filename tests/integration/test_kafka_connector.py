"""The processor's telemetry path on Spark's own Kafka connector, in local mode, against the
real broker: the plan reads with ``KafkaV2``, fixes come out with their Kafka coordinates, a
malformed record reaches the DLQ with its topic/partition/offset, a query restarted on its
checkpoint goes on from its offsets, and records deleted before they were read are skipped
rather than fatal (``failOnDataLoss=false``)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import orjson
import pytest
from confluent_kafka.admin import AdminClient

from casatwin.bus import topics
from casatwin.bus.dlq import payload
from casatwin.bus.producer import client_config
from casatwin.bus.ranges import backlog
from casatwin.config import Settings
from casatwin.processor.network import for_city
from casatwin.processor.source import describe
from casatwin.waiting import wait_until
from tests.drive import Drive, path_along
from tests.processor_support import grid_city, read_topic, topic_ends

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, broker: Any) -> Settings:
    tmp = tmp_path_factory.mktemp("connector")
    base = Settings().replace(
        general={"data_dir": tmp}, kafka=broker.client_fields, city=grid_city(tmp)
    )
    start = topic_ends(base, topics.TELEMETRY)
    return base.replace(processor={"starting_offsets": orjson.dumps(start).decode()})


class FixStream:
    """The processor's telemetry stage (``pipeline.telemetry_fixes``, dead letters on) in a
    streaming query of its own that collects the fixes on the driver."""

    def __init__(self, spark: Any, settings: Settings, checkpoint: Path) -> None:
        self.spark, self.settings, self.checkpoint = spark, settings, checkpoint
        self.fixes: list[dict[str, Any]] = []
        self.query: Any = None

    def start(self) -> FixStream:
        from casatwin.processor import pipeline

        rows = pipeline.telemetry_fixes(self.spark, self.settings, "infractions")
        self.query = (
            rows.select("vehicle_id", "ts", "partition", "offset")
            .writeStream.foreachBatch(lambda frame, _: self.fixes.extend(
                row.asDict() for row in frame.collect()
            ))
            .option("checkpointLocation", str(self.checkpoint))
            .trigger(processingTime="0 seconds")
            .start()
        )  # fmt: skip
        return self

    def read_everything(self, timeout_s: float = 90) -> bool:
        """Wait until a committed batch has read up to the topic's end (not just seen it: a
        stop before the commit replays the batch on restart)."""
        from casatwin.processor.kafka_offsets import from_progress

        end = topic_ends(self.settings, topics.TELEMETRY)

        def caught_up() -> bool:
            progress = self.query.lastProgress
            read = progress and from_progress(progress["sources"][0]["endOffset"])
            return bool(read) and backlog(read, end) == 0

        return wait_until(caught_up, timeout_s, every_s=0.2)

    def stop(self) -> None:
        self.query.stop()


@contextlib.contextmanager
def fix_stream(spark: Any, settings: Settings, checkpoint: Path) -> Iterator[FixStream]:
    stream = FixStream(spark, settings, checkpoint).start()
    try:
        yield stream
    finally:
        stream.stop()


def produce(settings: Settings, values: list[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
    """Send ``(key, value)`` records; their (partition, offset) as the broker acknowledged."""
    delivered: list[tuple[int, int]] = []
    producer = confluent_kafka.Producer(client_config(settings.kafka, "test-produce"))
    for key, value in values:
        producer.produce(
            topics.TELEMETRY, value, key=key,
            on_delivery=lambda err, msg: delivered.append((msg.partition(), msg.offset())),
        )  # fmt: skip
    assert producer.flush(20) == 0
    assert len(delivered) == len(values)
    return delivered


def drive(settings: Settings, vehicle: str, road: str, seconds: int, start_ts: int) -> list:
    net = for_city(settings.city)
    fixes = Drive(net, vehicle, path_along(net, road), start_ts=start_ts, duration_s=seconds)
    return [(vehicle.encode(), orjson.dumps(f)) for f in fixes.fixes()]


def test_the_plan_reads_with_spark_s_kafka_source(spark, settings, tmp_path):
    """Fixes come out of the connector and the decoding stage with their Kafka
    coordinates; the query's progress and plan name Spark's Kafka source."""
    records = drive(settings, "TX-00101", "Row 1", 20, 1_800_000_000_000)
    with fix_stream(spark, settings, tmp_path / "checkpoint") as stream:
        coordinates = produce(settings, records)
        assert stream.read_everything()
        # The telemetry, and the processor's requests for a batch (processor/timers.py).
        subscribed = "casatwin.telemetry, casatwin.processor.timers"
        assert describe(stream.query.lastProgress) == [f"KafkaV2[Subscribe[{subscribed}]]"]
        plan = io.StringIO()
        with contextlib.redirect_stdout(plan):
            stream.query.explain()
    assert "MicroBatchScan" in plan.getvalue()
    assert "org.apache.spark.sql.kafka010.KafkaSourceProvider$KafkaScan" in plan.getvalue()
    assert "MapInArrow TelemetryDecoder" in plan.getvalue()
    mine = [f for f in stream.fixes if f["vehicle_id"] == "TX-00101"]
    assert sorted((f["partition"], f["offset"]) for f in mine) == sorted(coordinates)
    assert [f["ts"] for f in sorted(mine, key=lambda f: f["offset"])] == sorted(
        orjson.loads(value)["ts"] for _, value in records
    )


def test_a_malformed_record_reaches_the_dlq_with_its_coordinates(spark, settings, tmp_path):
    since = topic_ends(settings, topics.DLQ)
    bad = b'{"vehicle_id": "TX-00102", "kind": "taxi_petit"'
    with fix_stream(spark, settings, tmp_path / "checkpoint") as stream:
        ((partition, offset),) = produce(settings, [(b"dlq-key", bad)])
        assert stream.read_everything()
        # The batch was committed only once the DLQ had acknowledged the dead letter.
        letters = [d for d in read_topic(settings, topics.DLQ, since) if d["key"] == "dlq-key"]
    (letter,) = letters
    assert payload(letter) == bad and "not valid JSON" in letter["error"]
    assert letter["stage"] == "processor.parse"
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        topics.TELEMETRY, partition, offset
    )  # fmt: skip


def test_a_query_restarted_on_its_checkpoint_goes_on_from_its_offsets(spark, settings, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    first = drive(settings, "TX-00103", "Row 2", 10, 1_800_000_100_000)
    second = drive(settings, "TX-00103", "Row 2", 10, 1_800_000_200_000)
    with fix_stream(spark, settings, checkpoint) as stream:
        produce(settings, first)
        assert stream.read_everything()
    produce(settings, second)  # while the query is stopped
    with fix_stream(spark, settings, checkpoint) as again:
        assert again.read_everything()
    seen = [f["ts"] for f in stream.fixes + again.fixes if f["vehicle_id"] == "TX-00103"]
    expected = [orjson.loads(v)["ts"] for _, v in first + second]
    assert sorted(seen) == sorted(expected)  # each once: nothing lost, nothing read twice


def test_records_deleted_before_they_were_read_are_skipped_not_fatal(spark, settings, tmp_path):
    """Retention deleting records a stopped query had not read: the query goes on from the
    earliest record kept (``failOnDataLoss=false``) instead of failing at every restart."""
    checkpoint = tmp_path / "checkpoint"
    with fix_stream(spark, settings, checkpoint) as stream:
        assert stream.read_everything()
    lost = drive(settings, "TX-00104", "Row 3", 10, 1_800_000_300_000)
    coordinates = produce(settings, lost)
    ends = topic_ends(settings, topics.TELEMETRY)[topics.TELEMETRY]
    admin = AdminClient(client_config(settings.kafka, "test-admin"))
    doomed = {p for p, _ in coordinates}
    deletions = [
        confluent_kafka.TopicPartition(topics.TELEMETRY, p, ends[str(p)]) for p in sorted(doomed)
    ]
    for future in admin.delete_records(deletions).values():
        future.result(10)
    kept = drive(settings, "TX-00105", "Row 3", 10, 1_800_000_400_000)
    produce(settings, kept)
    with fix_stream(spark, settings, checkpoint) as again:
        assert again.read_everything()
        assert again.query.isActive and again.query.exception() is None
    vehicles = [f["vehicle_id"] for f in again.fixes]
    assert vehicles.count("TX-00105") == len(kept) and "TX-00104" not in vehicles
