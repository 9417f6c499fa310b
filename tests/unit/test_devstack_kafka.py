"""The one-node Apache Kafka of `make run` and the tests: its configuration and cluster id."""

from __future__ import annotations

import base64
from pathlib import Path

from casatwin.devstack.servers import kafka_properties, kafka_uuid


def test_cluster_ids_are_kafka_uuids_the_storage_tool_accepts():
    ids = {kafka_uuid() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        assert len(text) == 22
        assert len(base64.urlsafe_b64decode(text + "==")) == 16
        assert not text.startswith("-")  # the storage tool would read it as an option


def test_the_broker_takes_records_stamped_in_the_simulated_future():
    properties = parsed(kafka_properties("127.0.0.1", 9092, 9093, Path("/tmp/k"), "a", "c"))
    assert int(properties["log.message.timestamp.after.max.ms"]) == 2**63 - 1
    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert properties["log.dirs"] == "/tmp/k"
    # A restart after kill -9 registers within the session, not after the 9 s default.
    heartbeat = int(properties["broker.heartbeat.interval.ms"])
    session = int(properties["broker.session.timeout.ms"])
    assert heartbeat < session <= 3000


def parsed(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))


def test_every_listener_asks_who_is_there_and_an_authorizer_decides():
    properties = parsed(kafka_properties("127.0.0.1", 9092, 9093, Path("/tmp/k"), "A1", "C1"))
    protocols = dict(
        pair.split(":") for pair in properties["listener.security.protocol.map"].split(",")
    )
    listeners = [entry.split("://")[0] for entry in properties["listeners"].split(",")]
    assert {protocols[name] for name in listeners} == {"SASL_PLAINTEXT"}
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["authorizer.class.name"].endswith("StandardAuthorizer")
    assert properties["super.users"] == "User:admin;User:controller"
    assert (
        'username="admin" password="A1"'
        in properties["listener.name.broker.scram-sha-512.sasl.jaas.config"]
    )
    assert 'user_controller="C1"' in properties["listener.name.controller.plain.sasl.jaas.config"]
