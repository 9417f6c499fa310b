"""What the dispatch tests share: private topics, a database with a pack's units, reads."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from casatwin.bus.consumer import read_to_end, reader
from casatwin.city.model import CityPack
from casatwin.config import MariaDBSettings, Settings
from casatwin.registry import db, loader
from tests.conftest import scratch_database


def create_topics(settings: Settings, partitions: int, count: int) -> list[str]:
    """``count`` fresh topics of ``partitions`` partitions each."""
    names = [f"test.{uuid.uuid4().hex[:10]}" for _ in range(count)]
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, -1) for n in names]).values():
        future.result(15)
    return names


def dispatch_db(mariadb: Any, pack: CityPack) -> MariaDBSettings:
    """A fresh migrated database holding the pack's police units."""
    settings = scratch_database(mariadb, f"casatwin_dispatch_{uuid.uuid4().hex[:6]}")
    conn = db.open_connection(settings)
    loader._police(conn.cursor(), loader.police_units_of(pack))
    conn.close()
    return settings


def wait_for(condition: Callable[[], Any], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def read(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every message of ``topic`` so far."""
    consumer = reader(settings.kafka, [topic], "test-read", start="earliest")
    try:
        return [orjson.loads(m.value()) for m in read_to_end(consumer, 15)]
    finally:
        consumer.close()


def committed(settings: Settings, group: str, topic: str) -> int:
    """How many messages of ``topic`` (a fresh one: offsets from 0) ``group`` committed."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(0, tp.offset) for tp in offsets)
    finally:
        consumer.close()
