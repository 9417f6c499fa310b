"""The casatwin-kafka Spark source against the real (embedded) broker."""

import pickle
import time

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

from casatwin.processor import kafka_offsets as ko
from casatwin.processor.kafka_source import (
    KafkaStreamReader,
    close_cached_consumers,
    source_options,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _close_readers():
    yield
    close_cached_consumers()  # this process read directly: let go before the broker stops


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, -1)]).values():
        future.result(10)


def produce(bootstrap, topic, n, partitions, start=0, linger_ms=20):
    """Records in multi-record batches (linger): the case where Tansu's high watermark lies."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms})
    for i in range(start, start + n):
        producer.produce(topic, b"v%d" % i, key=b"k%d" % i, partition=i % partitions)
    assert producer.flush(10) == 0


def reader(settings, topics, starting="earliest", max_records=0):
    return KafkaStreamReader(
        source_options(settings.kafka, topics, "test-source", starting, max_records)
    )


def settled(r, start, limit=None):
    """The end offset once the stream is quiet: a growing partition reports its high
    watermark at first; the next poll finds its true end."""
    limit = limit or ReadAllAvailable()
    end = r.latestOffset(start, limit)
    for _ in range(3):
        again = r.latestOffset(start, limit)
        if again == end:
            return end
        end = again
    return end


def read_all(r, start, end):
    values = []
    for task in r.partitions(start, end):
        for batch in r.read(task):
            values += batch.column("value").to_pylist()
    return values


@pytest.fixture
def topic(broker_settings, unique_topic):
    create_topic(broker_settings.kafka.bootstrap, unique_topic, 3)
    return unique_topic


def test_latest_offset_is_the_true_end_despite_the_high_watermark(broker_settings, topic):
    produce(broker_settings.kafka.bootstrap, topic, 300, 3)
    r = reader(broker_settings, [topic])
    start = r.initialOffset()
    assert start == {topic: {"0": 0, "1": 0, "2": 0}}
    first = r.latestOffset(start, ReadAllAvailable())  # still growing: a lower bound
    assert all(0 < first[topic][p] <= 100 for p in "012")
    end = r.latestOffset(start, ReadAllAvailable())  # quiet now: the true end
    assert end == {topic: {"0": 100, "1": 100, "2": 100}}
    assert sorted(read_all(r, start, end)) == sorted(b"v%d" % i for i in range(300))
    r.stop()


def test_a_batch_reads_the_same_records_every_time(broker_settings, topic):
    produce(broker_settings.kafka.bootstrap, topic, 90, 3)
    r = reader(broker_settings, [topic])
    start = r.initialOffset()
    end = settled(r, start)
    first = read_all(r, start, end)
    produce(broker_settings.kafka.bootstrap, topic, 60, 3, start=90)  # the log grows meanwhile
    again = read_all(pickle.loads(pickle.dumps(r)), start, end)  # a replay, on "another worker"
    assert again == first and len(first) == 90
    r.stop()


def test_latest_starting_offsets_skip_what_is_there(broker_settings, topic):
    produce(broker_settings.kafka.bootstrap, topic, 30, 3)
    r = reader(broker_settings, [topic], starting="latest")
    start = r.initialOffset()
    assert start == {topic: {"0": 10, "1": 10, "2": 10}}
    produce(broker_settings.kafka.bootstrap, topic, 6, 3, start=30)
    end = settled(r, start)
    assert sorted(read_all(r, start, end)) == sorted(b"v%d" % i for i in range(30, 36))
    r.stop()


def test_max_records_per_batch_caps_each_batch_and_loses_nothing(broker_settings, topic):
    produce(broker_settings.kafka.bootstrap, topic, 250, 3)
    r = reader(broker_settings, [topic], max_records=100)
    assert r.getDefaultReadLimit() == ReadMaxRows(100)
    start = r.initialOffset()
    seen, sizes = [], []
    for _ in range(5):
        end = settled(r, start, r.getDefaultReadLimit())
        batch = read_all(r, start, end)
        sizes.append(len(batch))
        seen += batch
        start = end
    assert sizes == [100, 100, 50, 0, 0]
    assert sorted(seen) == sorted(b"v%d" % i for i in range(250))
    r.stop()


def test_topics_created_later_are_picked_up_from_their_start(broker_settings, topic):
    later = f"{topic}.later"
    produce(broker_settings.kafka.bootstrap, topic, 3, 3)
    r = reader(broker_settings, [topic, later])
    start = r.initialOffset()
    end = settled(r, start)
    assert set(end) == {topic}
    create_topic(broker_settings.kafka.bootstrap, later, 2)
    produce(broker_settings.kafka.bootstrap, later, 8, 2)
    newer = settled(r, end)
    assert newer[later] == {"0": 4, "1": 4}
    assert sorted(read_all(r, end, newer)) == sorted(b"v%d" % i for i in range(8))
    r.stop()


def test_the_reader_pickles_without_its_clients(broker_settings, topic):
    r = reader(broker_settings, [topic])
    r.initialOffset()  # opens the planner's consumer
    copy = pickle.loads(pickle.dumps(r))
    assert copy._broker is None and r._broker is not None
    r.stop()


def test_processed_offsets_are_reported_to_the_consumer_group(broker_settings, topic):
    produce(broker_settings.kafka.bootstrap, topic, 30, 3)
    options = source_options(
        broker_settings.kafka, [topic], "test-source", "earliest", consumer_group="test-lag"
    )
    r = KafkaStreamReader(options)
    start = r.initialOffset()
    end = settled(r, start)
    r.commit(end)
    check = confluent_kafka.Consumer(
        {"bootstrap.servers": broker_settings.kafka.bootstrap, "group.id": "test-lag"}
    )
    deadline = time.monotonic() + 10
    committed = {}
    while time.monotonic() < deadline and committed != ko.from_map(end):
        parts = [confluent_kafka.TopicPartition(topic, p) for p in range(3)]
        committed = {(tp.topic, tp.partition): tp.offset for tp in check.committed(parts, 5)}
        time.sleep(0.1)
    assert committed == ko.from_map(end)
    check.close()
    r.stop()


def committed(query) -> int:
    """Records the query's last committed batch read up to (all partitions from 0)."""
    progress = query.lastProgress
    if not progress:
        return 0
    end = ko.from_progress(progress["sources"][0]["endOffset"]) or {}
    return sum(offset for partitions in end.values() for offset in partitions.values())


@pytest.mark.spark
def test_a_streaming_query_reads_everything_once_across_a_restart(
    spark, broker_settings, topic, tmp_path
):
    bootstrap = broker_settings.kafka.bootstrap
    produce(bootstrap, topic, 120, 3)
    options = source_options(broker_settings.kafka, [topic], "test-stream", "earliest", 50)
    seen = []

    def run_until(count):
        query = (
            spark.readStream.format("casatwin-kafka").options(**options).load()
            .writeStream.foreachBatch(lambda df, _: seen.extend(r.value for r in df.collect()))
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(processingTime="0 seconds").start()
        )  # fmt: skip
        deadline = time.monotonic() + 60
        # Stop once the batches are committed, not just seen: a stop between a batch's
        # foreachBatch and its commit replays it on restart (at-least-once, by design).
        while committed(query) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        query.stop()

    run_until(120)
    produce(bootstrap, topic, 30, 3, start=120)
    run_until(150)  # the same checkpoint: continues where it stopped
    assert sorted(seen) == sorted(b"v%d" % i for i in range(150))
