"""What the broker acknowledged survives a broker crash: Apache Kafka is killed with SIGKILL
(no controlled shutdown) and started again on the same log directory, and every record a
producer had an acknowledgement for is read back, exactly once.

Each test has a broker of its own (killing the module's shared one would break the others).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from casatwin.bus import consumer, topics
from casatwin.bus.admin import ensure_topics
from casatwin.bus.producer import Producer
from casatwin.config import KafkaSettings
from casatwin.devstack.servers import KafkaBroker
from tests.conftest import kafka_broker

pytestmark = pytest.mark.integration

TOPIC = topics.TELEMETRY  # several partitions, as the fleet writes them


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    server = kafka_broker(tmp_path / "kafka")
    server.start()
    yield server
    server.stop()


class AckedProducer(Producer):
    """The project's producer (acks=all), remembering which records were acknowledged."""

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        super().__init__(settings, client_id)
        self.acked: list[int] = []

    def _on_delivery(self, err, msg) -> None:  # type: ignore[no-untyped-def]
        super()._on_delivery(err, msg)
        if err is None:
            self.acked.append(orjson.loads(msg.value())["i"])


def send(producer: Producer, numbers: range) -> None:
    for i in numbers:
        assert producer.send_json(TOPIC, {"i": i}, key=f"TX-{i % 97:05d}")
        producer.poll(0)


def kill_and_restart(broker: KafkaBroker) -> None:
    pid = broker.process.pid
    broker.kill()  # SIGKILL to the broker's process group: a crash, nothing flushed
    assert not Path(f"/proc/{pid}").exists()
    broker.start()  # the same state directory: the same log


def read_back(settings: KafkaSettings) -> Counter[int]:
    reader = consumer.reader(settings, [TOPIC], "test-durability", start="earliest")
    try:
        return Counter(orjson.loads(m.value())["i"] for m in consumer.read_to_end(reader, 60))
    finally:
        reader.close()


def test_acknowledged_records_survive_a_broker_kill_9(own_broker):
    settings = own_broker.admin_settings
    ensure_topics(settings)
    producer = AckedProducer(settings, "test-durability")
    n = 20_000
    send(producer, range(n))
    assert producer.flush(60) == 0  # every delivery report is in
    assert producer.report.totals() == {"sent": n, "delivered": n, "failed": 0, "refused": 0}
    assert sorted(producer.acked) == list(range(n))

    kill_and_restart(own_broker)

    found = read_back(settings)
    assert sorted(found) == list(range(n)), f"missing: {sorted(set(range(n)) - set(found))[:20]}"
    assert [i for i, count in found.items() if count > 1] == []


def test_records_in_flight_at_the_kill_are_delivered_after_the_restart(own_broker):
    """The broker dies while the producer still has records queued or unacknowledged: they
    are sent again once it is back, and every record acknowledged before or after the crash
    is on the log."""
    settings = own_broker.admin_settings
    ensure_topics(settings)
    producer = AckedProducer(settings, "test-durability-in-flight")
    send(producer, range(0, 10_000))
    assert producer.flush(60) == 0
    send(producer, range(10_000, 20_000))  # not waited for: in flight at the kill
    in_flight = len(producer)
    assert in_flight > 0

    kill_and_restart(own_broker)

    send(producer, range(20_000, 25_000))
    assert producer.flush(60) == 0
    assert producer.report.totals()["failed"] == 0
    assert sorted(producer.acked) == list(range(25_000))
    found = read_back(settings)
    missing = sorted(set(producer.acked) - set(found))
    assert missing == [], f"{len(missing)} acknowledged records missing ({in_flight} in flight)"
    assert [i for i, count in found.items() if count > 1] == []
