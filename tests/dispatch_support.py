"""What the dispatch tests share: private topics, a database with a pack's units, reads,
and a timeline of a run's steps."""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from casatwin.bus.consumer import read_to_end, reader
from casatwin.bus.producer import client_config
from casatwin.city.model import CityPack
from casatwin.config import MariaDBSettings, Settings
from casatwin.registry import db, loader
from tests.conftest import scratch_database


def create_topics(settings: Settings, partitions: int, count: int) -> list[str]:
    """``count`` fresh topics of ``partitions`` partitions each."""
    names = [f"test.{uuid.uuid4().hex[:10]}" for _ in range(count)]
    admin = AdminClient(client_config(settings.kafka, "test-admin"))
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


def read(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every message of ``topic`` so far."""
    consumer = reader(settings.kafka, [topic], "test-read", start="earliest")
    try:
        return [orjson.loads(m.value()) for m in read_to_end(consumer, 15)]
    finally:
        consumer.close()


def committed(settings: Settings, group: str, topic: str) -> int:
    """How many messages of ``topic`` (a fresh one: offsets from 0) ``group`` committed."""
    consumer = Consumer(client_config(settings.kafka, "test-committed") | {"group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(0, tp.offset) for tp in offsets)
    finally:
        consumer.close()


Step = tuple[float, float | None, str]  # epoch s, simulated s (or None), note


@dataclass
class Timeline:
    """When each step of a run was first seen, in wall seconds since ``start`` (negative for
    the set-up before it) and in simulated seconds where known: a slow run's output and a
    failure's message say which hop took the time, instead of only how long the whole took."""

    start: float = field(default_factory=time.time)  # epoch s
    steps: dict[str, Step] = field(default_factory=dict)

    def reach(
        self, step: str, *, at: float | None = None, sim_s: float | None = None, note: str = ""
    ) -> None:
        """Record ``step`` the first time only: now, or at ``at`` (epoch s) for a time read
        after the fact (a timestamp a service stamped)."""
        if step not in self.steps:
            self.steps[step] = (time.time() if at is None else at, sim_s, note)

    def report(self) -> str:
        """The steps in the order they happened, then the longest wait between two."""
        order = sorted(self.steps.items(), key=lambda item: item[1][0])
        lines = [f"{'wall s':>8} {'sim s':>8}  step"]
        for step, (at, sim_s, note) in order:
            simulated = "-" if sim_s is None else f"{sim_s:.1f}"
            wall = at - self.start
            lines.append(f"{wall:8.1f} {simulated:>8}  {step}{f' ({note})' if note else ''}")
        gaps = [(b[1][0] - a[1][0], a[0], b[0]) for a, b in itertools.pairwise(order)]
        if gaps:
            gap, before, after = max(gaps)
            lines.append(f"slowest hop: {before} -> {after}: {gap:.1f} s")
        return "\n".join(lines)


def pressure_totals() -> dict[str, int]:
    """Microseconds some task has waited for a CPU, and for I/O, since boot (Linux pressure
    stall information; empty where the kernel does not report it). Two readings tell a
    starved machine from a hop that stalled on its own."""
    totals = {}
    for resource in ("cpu", "io"):
        try:
            some = Path(f"/proc/pressure/{resource}").read_text().split("\n", 1)[0]
        except OSError:
            continue
        totals[resource] = int(some.rsplit("total=", 1)[1])
    return totals


def pressure_between(before: dict[str, int], after: dict[str, int], wall_s: float) -> str:
    """The share of ``wall_s`` some task waited for each resource, between two readings."""
    shares = [
        f"{resource} {100 * (after[resource] - total) / 1e6 / wall_s:.0f} %"
        for resource, total in before.items()
        if resource in after and wall_s > 0
    ]
    return f"waiting for: {', '.join(shares)}" if shares else "no pressure stall information"
