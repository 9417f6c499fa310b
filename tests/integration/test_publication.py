"""Publishing a micro-batch once across crashes (the journal of BatchPublisher)."""

import orjson
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from casatwin.bus.producer import Producer, client_config
from casatwin.bus.ranges import from_map
from casatwin.errors import UserError
from casatwin.processor.publication import BatchPublisher
from casatwin.waiting import wait_until
from tests.processor_support import read_topic, topic_ends

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(broker_settings, unique_topic):
    admin = AdminClient(client_config(broker_settings.kafka, "test-admin"))
    for future in admin.create_topics([NewTopic(unique_topic, 3, -1)]).values():
        future.result(10)
    # Kafka answers the creation before every broker's metadata knows the topic.
    assert wait_until(lambda: has_offsets(broker_settings, unique_topic), timeout_s=15)
    return unique_topic


def has_offsets(settings, topic):
    try:
        return len(topic_ends(settings, topic).get(topic, {})) == 3
    except (UserError, KafkaException):
        return False


def publisher(settings, topic, journal):
    p = BatchPublisher(settings.kafka, topic, journal, "test-pub", "infraction_id", "vehicle_id")
    p.start()
    return p


def message(i):
    return {"infraction_id": f"SPD-TX-{i}", "vehicle_id": f"TX-{i}", "n": i}


def ids_on(settings, topic, since):
    return sorted(m["infraction_id"] for m in read_topic(settings, topic, since))


def test_a_batch_is_published_once_even_when_replayed(broker_settings, topic, tmp_path):
    since = topic_ends(broker_settings, topic)
    p = publisher(broker_settings, topic, tmp_path)
    first = p.publish(7, [message(1), message(2)])
    assert all("published_ts" in m for m in first)
    again = p.publish(7, [message(1), message(2)])  # Spark re-runs batch 7 after a restart
    assert again == first  # as published the first time
    assert ids_on(broker_settings, topic, since) == ["SPD-TX-1", "SPD-TX-2"]
    p.stop()


def test_a_crash_while_publishing_sends_only_what_is_missing(broker_settings, topic, tmp_path):
    since = topic_ends(broker_settings, topic)
    # The crashed attempt: intent written, two of four messages out, no "done".
    (tmp_path / f"{8:012d}.intent").write_bytes(orjson.dumps(since))
    crashed = Producer(broker_settings.kafka, "test-crashed")
    for m in (message(1), message(2)):
        crashed.send_json(topic, {**m, "published_ts": 42}, key=m["vehicle_id"])
    assert crashed.flush(10) == 0

    p = publisher(broker_settings, topic, tmp_path)  # the restarted processor
    out = p.publish(8, [message(i) for i in (1, 2, 3, 4)])
    assert ids_on(broker_settings, topic, since) == [f"SPD-TX-{i}" for i in (1, 2, 3, 4)]
    assert [m["published_ts"] for m in out[:2]] == [42, 42]  # the copies already out
    assert all(m["published_ts"] != 42 for m in out[2:])
    p.stop()


def test_old_journal_entries_are_pruned(broker_settings, topic, tmp_path):
    p = publisher(broker_settings, topic, tmp_path)
    for batch in range(0, 400, 50):
        p.publish(batch, [message(batch)])
    kept = sorted(int(f.name.split(".")[0]) for f in tmp_path.iterdir() if f.suffix == ".done")
    assert kept[0] >= 350 - 200 and kept[-1] == 350
    p.stop()


def test_offsets_recorded_before_publishing_are_a_lower_bound(broker_settings, topic, tmp_path):
    p = publisher(broker_settings, topic, tmp_path)
    p.publish(1, [message(1)])
    intent = orjson.loads((tmp_path / f"{1:012d}.intent").read_bytes())
    assert from_map(intent).keys() == from_map(topic_ends(broker_settings, topic)).keys()
    p.stop()
