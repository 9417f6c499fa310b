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
    lines = kafka_properties("127.0.0.1", 9092, 9093, Path("/tmp/k")).splitlines()
    properties = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert int(properties["log.message.timestamp.after.max.ms"]) == 2**63 - 1
    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert properties["log.dirs"] == "/tmp/k"
    # A restart after kill -9 registers within the session, not after the 9 s default.
    heartbeat = int(properties["broker.heartbeat.interval.ms"])
    session = int(properties["broker.session.timeout.ms"])
    assert heartbeat < session <= 3000
