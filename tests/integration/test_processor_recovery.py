"""Exactly-once effect: kill -9 the processor mid-stream, restart it, and every infraction
is in the ledger, the read model and on the topic exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import orjson
import pytest

from casatwin.bus import topics
from casatwin.devstack.vault import generate_secrets
from casatwin.processor.detectors import DetectorConfig, Detectors, VehicleState
from casatwin.readmodel.store import INFRACTIONS, connect
from casatwin.waiting import wait_until
from tests.drive import T0, Drive, matched, path_along
from tests.processor_support import (
    REGISTRY_AS_OF,
    grid_city,
    ledger_rows,
    police_units,
    publish,
    read_topic,
    topic_ends,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]


def scripted_fixes(net):
    """40 taxis speeding in two episodes each, 5 law-abiding ones: 80 infractions."""
    drives = []
    for i in range(40):  # on the border rows: no signals, the speeds are as scripted
        speeds = [50, 50, 80, 85, 50, 50, 50, 50, 81, 90, 50]
        path = path_along(net, ("Row 0", "Row 4")[i % 2], direction=(1, -1)[i // 2 % 2])
        drives.append(Drive(net, f"TX-{i + 1:05d}", path, start_ts=T0 + 1000 * i,
                            speeds_kmh=speeds, duration_s=14))  # fmt: skip
    for i, road in enumerate(["Column 1", "Column 2", "Column 3", "Column 0", "Column 4"]):
        drives.append(Drive(net, f"TX-{100 + i:05d}", path_along(net, road), speeds_kmh=[40],
                            duration_s=90))  # fmt: skip
    return drives


def expected_ids(net, drives):
    """What the detectors make of the drives (the processor must publish each once)."""
    detectors = Detectors(net, DetectorConfig())
    ids = set()
    for drive in drives:
        state = VehicleState()
        found = detectors.on_fixes(drive.vehicle_id, drive.kind, state, matched(net, drive.fixes()))
        ids |= {d.infraction_id for d in found}
    return ids


def start_processor(settings, log_path):
    env = {**os.environ, **settings.as_env(), "PYSPARK_PYTHON": sys.executable}
    return subprocess.Popen(
        [sys.executable, "-m", "casatwin.cli", "processor"],
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: kill -9 takes the JVM with it
    )


def kill_9(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(
    mariadb, broker, mongo, tmp_path
):
    from casatwin.config import Settings
    from casatwin.processor.network import for_city
    from casatwin.registry import loader
    from tests.conftest import scratch_database

    ledger = scratch_database(mariadb, "casatwin_processor_recovery")
    loader.load(ledger, 13_000, seed=52, as_of=REGISTRY_AS_OF, police_units=police_units())
    settings = Settings().replace(
        general={"data_dir": tmp_path},
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb={"host": ledger.host, "port": ledger.port, "database": ledger.database},
        city=grid_city(tmp_path),
    )
    generate_secrets(settings)
    net = for_city(settings.city)
    drives = scripted_fixes(net)
    expected = expected_ids(net, drives)
    assert len(expected) == 80
    since = topic_ends(settings, topics.INFRACTIONS)
    settings = settings.replace(
        processor={
            "master": "local[2]",
            "starting_offsets": orjson.dumps(topic_ends(settings, topics.TELEMETRY)).decode(),
            "max_records_per_batch": 150,  # many small batches: the kill lands mid-stream
            "metrics_port": 0,
            "progress_every_s": 2,
        }
    )
    publish(settings, sorted((f for d in drives for f in d.fixes()), key=lambda f: f["ts"]))

    def published():
        return read_topic(settings, topics.INFRACTIONS, since)

    log_path = tmp_path / "processor.log"
    first = start_processor(settings, log_path)
    try:
        assert wait_until(lambda: len(published()) >= 15, timeout_s=300), log_path.read_text()
    finally:
        kill_9(first)
    before_restart = len(published())
    assert before_restart < len(expected), "the kill came too late to prove anything"

    second = start_processor(settings, log_path)
    try:
        assert wait_until(
            lambda: {m["infraction_id"] for m in published()} >= expected, timeout_s=300
        ), log_path.read_text()[-3000:]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)

    messages = published()
    ids = [m["infraction_id"] for m in messages]
    assert sorted(ids) == sorted(expected)  # on the topic: each exactly once
    assert set(ledger_rows(settings.mariadb, expected)) == expected
    db = connect(settings.mongo)
    assert {d["_id"] for d in db[INFRACTIONS].find({}, {"_id": 1})} == expected
