"""What the processor's integration tests share: a city, a registry, runs of the app, reads.

Tests run the processor against the session's servers, so they never read from the start of
a shared topic: each run starts at the telemetry topic's end as it was before the test
produced anything, and reads the output topics from their ends as they were.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from casatwin.bus import topics
from casatwin.bus.producer import Producer
from casatwin.bus.ranges import OffsetMap, read_values, to_map
from casatwin.bus.watermarks import EndOffsets
from casatwin.city.load import from_dict, write
from casatwin.city.synthetic import grid
from casatwin.config import MariaDBSettings, Settings
from casatwin.devstack.vault import generate_secrets
from casatwin.processor.levels import hour_of
from casatwin.processor.source import RECORD_SCHEMA

REGISTRY_AS_OF = dt.date(2025, 6, 1)


def grid_city(directory: Path, **grid_args: Any) -> dict[str, Any]:
    """The synthetic grid (``grid_args`` for :func:`grid`) as a pack file the processor's
    workers can load: city settings."""
    path = directory / "grid.json"
    write(grid(**grid_args), path)
    return {"pack": str(path)}


def police_units() -> list[Any]:
    from casatwin.registry import loader

    return loader.police_units_of(from_dict(grid()))


def topic_ends(settings: Settings, topic: str) -> OffsetMap:
    ends = EndOffsets(settings.kafka, "test-ends")
    try:
        return to_map(ends.ends([topic]))
    finally:
        ends.close()


def read_topic(settings: Settings, topic: str, since: OffsetMap) -> list[dict[str, Any]]:
    """Every message of ``topic`` after the offsets ``since``."""
    now = topic_ends(settings, topic)
    values = read_values(settings.kafka, "test-read-topic", since, now, 20.0)
    return [orjson.loads(v) for v in values if v is not None]


def bus_positions(settings: Settings) -> dict[str, OffsetMap]:
    """The end of every topic of the twin, to read later what a test added."""
    return {t.name: topic_ends(settings, t.name) for t in topics.TOPICS}


def identities_on_the_bus(
    settings: Settings, since: dict[str, OffsetMap], people: set[str]
) -> list[str]:
    """Where any of ``people`` (CINs, names, licence numbers) appears in a message that a
    topic received after ``since``: ``topic: what`` for each, none expected."""
    found = []
    for topic, start in since.items():
        values = read_values(
            settings.kafka, "test-identity-search", start, topic_ends(settings, topic), 20.0
        )
        text = b"\n".join(v for v in values if v is not None).decode("utf-8", "replace")
        found += [f"{topic}: {who}" for who in people if who in text]
    return found


def identities_in_the_read_model(settings: Settings, people: set[str]) -> list[str]:
    """Where any of ``people`` appears in a document of the read model, any collection."""
    from casatwin.readmodel.store import connect

    db = connect(settings.mongo)
    try:
        found = []
        for name in db.list_collection_names():
            text = "\n".join(orjson.dumps(d, default=str).decode() for d in db[name].find({}))
            found += [f"{name}: {who}" for who in people if who in text]
        return found
    finally:
        db.client.close()


def people_of(settings: MariaDBSettings, vehicle_ids: Iterable[str]) -> set[str]:
    """The CIN, full name and licence number of whoever drives or owns these vehicles."""
    from tests.conftest import query

    rows = query(
        settings,
        "SELECT d.cin, CONCAT(d.first_name, ' ', d.last_name), d.licence_no FROM vehicles v"
        " JOIN drivers d ON d.cin IN (v.driver_cin, v.owner_cin) WHERE v.vehicle_id IN %s",
        (list(vehicle_ids),),
    )
    return {value for row in rows for value in row}


def publish(settings: Settings, messages: Iterable[dict[str, Any] | bytes], key: str = "") -> None:
    producer = Producer(settings.kafka, "test-telemetry")
    for message in messages:
        if isinstance(message, bytes):
            producer.send(topics.TELEMETRY, message, key=key or None)
        else:
            producer.send_json(topics.TELEMETRY, message, key=message["vehicle_id"])
    assert producer.flush(20) == 0
    assert producer.report.totals()["failed"] == 0


class RunningApp:
    """The processor application in this process (sharing the session's Spark), supervised
    in a thread, stopped by :meth:`stop`; ``queries`` as :class:`ProcessorApp` takes them
    (default: all of them)."""

    def __init__(self, settings: Settings, spark: Any, queries: list[Any] | None = None) -> None:
        from casatwin.processor.app import ProcessorApp

        self.app = ProcessorApp(settings, queries=queries, spark=spark)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.app.run_until, args=(self._stop, 5.0))

    def __enter__(self) -> RunningApp:
        self.app.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.app.stop()


def ledger_rows(settings: MariaDBSettings, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    from casatwin.registry import db

    wanted = list(ids)
    if not wanted:
        return {}
    conn = db.open_connection(settings)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT infraction_id, type, offence_class, fine_mad, points, court, cin"
            " FROM infractions WHERE infraction_id IN %s",
            (wanted,),
        )
        names = ("infraction_id", "type", "class", "fine_mad", "points", "court", "cin")
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
    finally:
        conn.close()


def clean_taxis(settings: MariaDBSettings, count: int) -> list[str]:
    """Taxis whose driver has a valid, non-probationary licence, full points and no recorded
    offence: their decisions depend on the offence alone."""
    from casatwin.registry import db

    conn = db.open_connection(settings)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT v.vehicle_id FROM vehicles v"
            " JOIN taxi_shifts s ON s.open_vehicle = v.vehicle_id"
            " JOIN drivers d ON d.cin = s.cin"
            " WHERE v.vehicle_id LIKE 'TX-%%' AND d.status = 'valid' AND d.points >= 20"
            " AND d.probation_end < %s"
            " AND NOT EXISTS (SELECT 1 FROM infractions i WHERE i.cin = d.cin)"
            " ORDER BY v.vehicle_id LIMIT %s",
            (REGISTRY_AS_OF.isoformat(), count),
        )
        return [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()


def casablanca_e2e(
    mariadb: Any, broker: Any, mongo: Any, tmp_path: Path, database: str
) -> tuple[Settings, OffsetMap, dict[str, str]]:
    """The end-to-end set-up on Casablanca: a ledger database ``database`` with a
    13,000-driver registry and the pack's police units, settings pointing at the test's
    servers with the processor starting at the telemetry's end; returns the settings, the
    end of ``casatwin.infractions`` before the test, and the simulator's environment."""
    from casatwin.city.load import load
    from casatwin.registry import loader
    from tests.conftest import scratch_database

    ledger = scratch_database(mariadb, database)
    units = loader.police_units_of(load("casablanca"))
    loader.load(ledger, 13_000, seed=52, as_of=REGISTRY_AS_OF, police_units=units)
    settings = Settings().replace(
        general={"data_dir": tmp_path},
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb={"host": ledger.host, "port": ledger.port, "database": ledger.database},
    )
    generate_secrets(settings)
    since = topic_ends(settings, topics.INFRACTIONS)
    start = orjson.dumps(topic_ends(settings, topics.TELEMETRY)).decode()
    settings = settings.replace(processor={"starting_offsets": start})
    env = {**os.environ, **settings.as_env(), "CASATWIN_SIMULATOR_METRICS_PORT": "0"}
    return settings, since, env


def congestion_window(key: str, start: int, avg: float, count: int = 3) -> dict[str, Any]:
    """A congestion window of a segment as the congestion query emits it."""
    return {
        "scope": "segment",
        "key": key,
        "window_start": start,
        "window_end": start + 300_000,
        "count": count,
        "avg_speed_kmh": avg,
        "min_speed_kmh": avg,
        "max_speed_kmh": avg,
        "free_flow_kmh": 60.0,
        "speed_ratio": round(avg / 60, 3),
        "level": "clear",
        "anomaly": False,
        "hour": hour_of(start + 300_000),
    }


def kafka_batch(values: list[bytes], topic: str = "casatwin.telemetry") -> pa.RecordBatch:
    """An Arrow batch of records as Spark's Kafka connector hands them to the decoders."""
    n = len(values)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([b"k%d" % i for i in range(n)], pa.binary()),
            pa.array(values, pa.binary()),
            pa.array([topic] * n, pa.string()),
            pa.array([1] * n, pa.int32()),
            pa.array(list(range(100, 100 + n)), pa.int64()),
            pa.array([0] * n, pa.int64()),
        ],
        schema=RECORD_SCHEMA,
    )
