"""The bus closes its doors: no one in without a password, and each service's principal may
use only the topics and groups that docs/security.md gives it (``bus.access.PRINCIPALS``).

A real broker, configured as `make run` configures it (SASL/SCRAM, StandardAuthorizer), its
users and ACLs made by ``ensure_access``; every client here is a real librdkafka client.
"""

from __future__ import annotations

import dataclasses
import time

import confluent_kafka
import orjson
import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from casatwin.bus import topics
from casatwin.bus.access import PRINCIPALS, USERS, ensure_access, principal
from casatwin.bus.admin import admin_client
from casatwin.bus.consumer import reader
from casatwin.bus.producer import client_config
from casatwin.bus.ranges import to_map
from casatwin.bus.watermarks import EndOffsets
from casatwin.config import KafkaSettings
from casatwin.errors import UserError
from casatwin.processor.publication import BatchPublisher
from casatwin.waiting import wait_until

pytestmark = pytest.mark.security

AUTHORIZATION_FAILED = {
    confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
    confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED,
}
TOPICS = [spec.name for spec in topics.TOPICS]


def as_user(broker, user: str) -> KafkaSettings:
    return dataclasses.replace(broker.admin_settings, user=user)


def produce(settings: KafkaSettings, topic: str, value: bytes, partition: int = 0) -> object:
    """Send one record; the broker's verdict: None (written) or the delivery error's code."""
    verdicts: list[object] = []
    producer = confluent_kafka.Producer(
        client_config(settings, "test-access") | {"acks": "all", "message.timeout.ms": 15000}
    )

    def on_delivery(error, _message) -> None:
        verdicts.append(None if error is None else error.code())

    producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "no verdict from the broker within 30 s"
    return verdicts[0]


def read_one(settings: KafkaSettings, topic: str) -> object:
    """Fetch from the start of partition 0 (which holds a record): "read" or the error code."""
    consumer = confluent_kafka.Consumer(
        client_config(settings, "test-access-read")
        # A group the principal may use: only the topic's ACL is on trial.
        | {"group.id": f"casatwin-{settings.user}-probe", "enable.auto.commit": False}
    )
    try:
        # A topic the principal may not even see: the broker says so in the metadata.
        seen = consumer.list_topics(topic, timeout=10).topics[topic]
        if seen.error is not None:
            return seen.error.code()
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)]
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is None:
                return "read"
            if message.error().code() != confluent_kafka.KafkaError._PARTITION_EOF:
                return message.error().code()
        raise AssertionError(f"neither a record nor an error from {topic} within 20 s")
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def filled(broker) -> None:
    """One record at the start of partition 0 of every topic (written as admin)."""
    for name in TOPICS:
        assert produce(broker.admin_settings, name, b'{"marker": true}', partition=0) is None


def test_a_client_without_credentials_is_refused(broker):
    """Plaintext, no SASL: the broker's listener hangs up before any request is served."""
    anonymous = AdminClient({"bootstrap.servers": broker.bootstrap})
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        anonymous.list_topics(timeout=5)
    assert refused.value.args[0].code() == confluent_kafka.KafkaError._TRANSPORT


def test_a_wrong_password_is_refused(broker):
    errors: list[confluent_kafka.KafkaError] = []
    config = client_config(as_user(broker, "processor"), "test-wrong-password")
    config |= {"sasl.password": "not-the-password-" + "x" * 20, "error_cb": errors.append}
    consumer = confluent_kafka.Consumer(config | {"group.id": "casatwin-processor-probe"})
    try:
        deadline = time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            consumer.poll(0.2)  # serves the error callback
    finally:
        consumer.close()
    assert confluent_kafka.KafkaError._AUTHENTICATION in {e.code() for e in errors}, errors


@pytest.mark.parametrize("name", [p.name for p in PRINCIPALS])
def test_each_principal_writes_and_reads_exactly_its_topics(broker, filled, name):
    settings = as_user(broker, name)
    granted = principal(name)
    verdicts = {}
    for topic in TOPICS:
        wrote = produce(settings, topic, b'{"probe": true}')
        read = read_one(settings, topic)
        verdicts[topic] = (wrote, read)
    expected = {
        topic: (
            None
            if topic in granted.writes
            else confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
            "read"
            if topic in granted.reads
            else confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
        )
        for topic in TOPICS
    }
    assert verdicts == expected


def test_only_the_processor_can_publish_an_infraction(broker):
    """A forged infraction from any other principal is refused and never reaches the topic."""
    forged = orjson.dumps({"infraction_id": "SPD-FORGED-1", "type": "speeding"})
    before = topic_end(broker, topics.INFRACTIONS)
    for p in PRINCIPALS:
        if p.name == "processor":
            continue
        assert produce(as_user(broker, p.name), topics.INFRACTIONS, forged) == (
            confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
        ), p.name
    assert topic_end(broker, topics.INFRACTIONS) == before
    assert produce(as_user(broker, "processor"), topics.INFRACTIONS, forged) is None
    assert topic_end(broker, topics.INFRACTIONS) == before + 1


def topic_end(broker, topic: str) -> int:
    consumer = confluent_kafka.Consumer(
        client_config(broker.admin_settings, "test-ends") | {"group.id": "test-ends-unused"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def test_the_processor_finishes_a_half_published_batch_as_its_own_principal(broker, tmp_path):
    """After a crash between publishing and the journal's "done", the restarted processor
    reads back what reached casatwin.infractions and sends only the rest: its principal
    must read the topic it writes."""
    processor = as_user(broker, "processor")
    ends = EndOffsets(broker.admin_settings, "test-ends")
    try:
        since = to_map(ends.ends([topics.INFRACTIONS]))
    finally:
        ends.close()
    (tmp_path / f"{8:012d}.intent").write_bytes(orjson.dumps(since))
    first = {"infraction_id": "SPD-TX-SEC-1", "vehicle_id": "TX-SEC-1", "published_ts": 42}
    assert produce(processor, topics.INFRACTIONS, orjson.dumps(first)) is None
    publisher = BatchPublisher(
        processor, topics.INFRACTIONS, tmp_path, "casatwin-processor-test", "infraction_id",
        "vehicle_id",
    )  # fmt: skip
    publisher.start()
    try:
        second = {"infraction_id": "SPD-TX-SEC-2", "vehicle_id": "TX-SEC-2"}
        out = publisher.publish(
            8, [{k: v for k, v in first.items() if k != "published_ts"}, second]
        )
    finally:
        publisher.stop()
    assert [m["infraction_id"] for m in out] == ["SPD-TX-SEC-1", "SPD-TX-SEC-2"]
    assert out[0]["published_ts"] == 42  # found on the topic, not sent again


def test_a_service_cannot_join_another_services_group(broker):
    """The dashboard may read infractions but not join the dispatcher's group (it would take
    the dispatcher's partitions and its work); the dispatcher may."""

    def join_as(user: str) -> object:
        verdict: list[object] = []
        consumer = confluent_kafka.Consumer(
            client_config(as_user(broker, user), "test-group")
            | {"group.id": "casatwin-dispatcher", "enable.auto.commit": False}
        )
        consumer.subscribe(
            [topics.INFRACTIONS], on_assign=lambda _c, _partitions: verdict.append("joined")
        )
        try:
            deadline = time.monotonic() + 30
            while not verdict and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and message.error() is not None:
                    verdict.append(message.error().code())
            assert verdict, f"{user}: neither joined nor refused within 30 s"
            return verdict[0]
        finally:
            consumer.close()

    assert join_as("dashboard") == confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED
    assert join_as("dispatcher") == "joined"


def test_a_reader_refused_a_topic_says_which_principal_and_where_to_look(broker):
    with pytest.raises(UserError, match=r"may not use topic casatwin\.infractions") as refused:
        reader(as_user(broker, "simulator"), [topics.INFRACTIONS], "test-refused")
    assert "docs/security.md" in (refused.value.hint or "")


def test_ensure_access_removes_an_acl_the_table_does_not_list(broker):
    """Someone granted the simulator the infractions; the next converge takes it back."""
    admin = admin_client(broker.admin_settings)
    stray = AclBinding(
        ResourceType.TOPIC, topics.INFRACTIONS, ResourcePatternType.LITERAL,
        "User:simulator", "*", AclOperation.READ, AclPermissionType.ALLOW,
    )  # fmt: skip
    for future in admin.create_acls([stray]).values():
        future.result(15)
    simulator = as_user(broker, "simulator")
    # ACL changes reach the authorizer through the metadata log: a moment later.
    assert wait_until(lambda: read_one(simulator, topics.INFRACTIONS) == "read", 20)

    ensure_access(broker.admin_settings)

    assert wait_until(
        lambda: (
            read_one(simulator, topics.INFRACTIONS)
            == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
        ),
        20,
    )


def test_every_user_has_a_password_file_of_its_own(broker):
    for user in USERS:
        path = broker.admin_settings.password_file(user)
        assert path.stat().st_mode & 0o777 == 0o600, path
