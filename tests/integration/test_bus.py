"""The bus against a real broker (Apache Kafka): accounting, DLQ, tail, topic creation."""

import dataclasses
import subprocess
import sys
import time

import orjson
import pytest
from prometheus_client import REGISTRY

from casatwin.bus import admin, consumer, dlq, topics
from casatwin.bus.producer import Producer
from casatwin.errors import UserError

pytestmark = pytest.mark.integration


def read_all(settings, topic, expected, timeout_s=15.0):
    reader = consumer.reader(settings.kafka, [topic], "test-reader", start="earliest")
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        got += consumer.messages(reader, timeout_s=0.5)
    reader.close()
    return got


def test_every_message_is_accounted_for(broker_settings, unique_topic):
    producer = Producer(broker_settings.kafka, "test")
    for i in range(500):
        assert producer.send_json(unique_topic, {"i": i}, key=f"k{i % 7}")
    assert producer.flush(10) == 0
    assert producer.report.totals() == {"sent": 500, "delivered": 500, "failed": 0, "refused": 0}
    got = read_all(broker_settings, unique_topic, 500)
    assert sorted(orjson.loads(m.value())["i"] for m in got) == list(range(500))
    # ... and in the metrics: messages in, and one acknowledgement latency in 16.
    labels = {"topic": unique_topic}
    assert REGISTRY.get_sample_value("casatwin_bus_consumed_total", labels) == 500
    assert REGISTRY.get_sample_value("casatwin_bus_delivery_seconds_count", labels) == 500 // 16


def test_undeliverable_messages_are_counted_not_lost_silently(caplog, base_settings):
    # Nothing listens on this port: every message must end up counted as failed.
    settings = dataclasses.replace(
        base_settings.kafka, bootstrap="127.0.0.1:9", message_timeout_ms=1500
    )
    producer = Producer(settings, "test-unreachable")
    for _i in range(20):
        producer.send(topics.TELEMETRY, b"x")
    remaining = producer.flush(10)
    assert remaining == 0
    assert producer.report.totals()["failed"] == 20
    assert any("could not be delivered" in r.getMessage() for r in caplog.records)


def test_full_buffer_refuses_and_counts(broker_settings, unique_topic):
    producer = Producer(
        broker_settings.kafka,
        "test-small",
        **{"queue.buffering.max.messages": 10, "linger.ms": 1000},
    )
    results = [producer.send(unique_topic, b"x") for _ in range(50)]
    assert results.count(False) > 0
    assert producer.report.totals()["refused"] == results.count(False)
    producer.flush(10)
    totals = producer.report.totals()
    assert totals["delivered"] + totals["refused"] == 50


def test_dead_letters_keep_reason_stage_and_payload(broker_settings):
    producer = Producer(broker_settings.kafka, "test-dlq")
    writer = dlq.DeadLetterWriter(producer, stage="parse")
    marker = f"marker-{time.time_ns()}".encode()
    writer.send(
        marker, "not valid JSON", topic=topics.TELEMETRY, partition=1, offset=99, key="TX-1"
    )
    producer.flush(10)
    letters = [
        orjson.loads(m.value()) for m in read_all(broker_settings, topics.DLQ, 10**6, timeout_s=3)
    ]
    mine = [letter for letter in letters if dlq.payload(letter) == marker]
    assert len(mine) == 1
    assert mine[0]["error"] == "not valid JSON"
    assert mine[0]["stage"] == "parse"
    assert (mine[0]["topic"], mine[0]["partition"], mine[0]["offset"]) == (topics.TELEMETRY, 1, 99)


def test_topics_are_created_once(broker_settings):
    names = admin.describe(broker_settings.kafka)
    for spec in topics.TOPICS:
        assert spec.name in names
    assert names[topics.TELEMETRY] == broker_settings.kafka.partitions
    assert admin.ensure_topics(broker_settings.kafka) == []


def test_unreachable_broker_is_a_user_error(base_settings):
    unreachable = dataclasses.replace(base_settings.kafka, bootstrap="127.0.0.1:9")
    with pytest.raises(UserError, match="cannot reach the Kafka broker"):
        admin.wait_for_broker(unreachable, timeout_s=1)


def test_tail_prints_messages_as_json_lines(broker_settings, unique_topic):
    producer = Producer(broker_settings.kafka, "test-tail")
    for i in range(3):
        producer.send_json(unique_topic, {"n": i}, key="a")
    producer.send_json(unique_topic, {"n": 99}, key="b")
    producer.flush(10)
    env = {**broker_settings.as_env(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "casatwin.cli", "tail", unique_topic, "--from-beginning",
         "--key", "a", "--limit", "3", "--timeout", "10"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(line)["n"] for line in result.stdout.splitlines()] == [0, 1, 2]


def test_tail_of_a_missing_topic_says_so(broker_settings):
    env = {**broker_settings.as_env(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "casatwin.cli", "tail", "no.such.topic", "--timeout", "1"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "topic no.such.topic does not exist" in result.stderr
    assert "Traceback" not in result.stderr
