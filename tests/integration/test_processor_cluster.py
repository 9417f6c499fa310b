"""The processor on a Spark standalone cluster (a master and a worker from the pyspark
distribution, on this machine) reads with Spark's Kafka connector and finds an infraction
like it does in local mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import orjson
import pytest

from casatwin.bus import topics
from casatwin.devstack.servers import free_port, port_is_open
from casatwin.devstack.vault import generate_secrets
from casatwin.processor import standalone
from casatwin.waiting import wait_until
from tests.drive import Drive, path_along
from tests.processor_support import (
    REGISTRY_AS_OF,
    grid_city,
    police_units,
    publish,
    read_topic,
    topic_ends,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

# In the processor's "query reads" line: the telemetry, and its requests for a batch.
KAFKA_SOURCE = "KafkaV2[Subscribe[casatwin.telemetry, casatwin.processor.timers]]"


@pytest.fixture
def cluster(tmp_path):
    """A master and one worker (1 core, 1 GB); yields the master URL."""
    host, port, log_dir = "127.0.0.1", free_port(), tmp_path / "spark-logs"
    log_dir.mkdir()
    env = standalone.environment(log_dir)
    started = []
    try:
        with open(log_dir / "master.out", "wb") as out:
            started.append(subprocess.Popen(
                standalone.master_command(host, port, free_port()), env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        assert wait_until(lambda: port_is_open(host, port), timeout_s=90), "master did not start"
        url = f"spark://{host}:{port}"
        with open(log_dir / "worker.out", "wb") as out:
            started.append(subprocess.Popen(
                standalone.worker_command(url, host, 1, "1g", tmp_path / "work", free_port()),
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        assert wait_until(
            lambda: b"Successfully registered with master" in (log_dir / "worker.out").read_bytes(),
            timeout_s=90,
        ), (log_dir / "worker.out").read_text()
        yield url
    finally:
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def test_the_processor_runs_on_a_standalone_cluster(cluster, mariadb, broker, mongo, tmp_path):
    from casatwin.config import Settings
    from casatwin.processor.network import for_city
    from casatwin.registry import loader
    from tests.conftest import scratch_database

    ledger = scratch_database(mariadb, "casatwin_processor_cluster")
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
    since = topic_ends(settings, topics.INFRACTIONS)
    settings = settings.replace(
        processor={
            "starting_offsets": orjson.dumps(topic_ends(settings, topics.TELEMETRY)).decode(),
            "executor_memory": "512m",
            "metrics_port": 0,
        }
    )
    drives = [
        Drive(net, "TX-00042", path_along(net, "Row 0"), speeds_kmh=[50, 88, 90, 50],
              duration_s=10),
        Drive(net, "TX-00043", path_along(net, "Row 4"), speeds_kmh=[40], duration_s=40),
    ]  # fmt: skip
    publish(settings, sorted((f for d in drives for f in d.fixes()), key=lambda f: f["ts"]))
    log = tmp_path / "processor.log"
    env = {**os.environ, **settings.as_env(), "PYSPARK_PYTHON": sys.executable}
    with open(log, "wb") as out:
        processor = subprocess.Popen(
            [sys.executable, "-m", "casatwin.cli", "processor", "--master", cluster],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        assert wait_until(lambda: read_topic(settings, topics.INFRACTIONS, since), timeout_s=300), (
            log.read_text()[-3000:]
        )
        # Spark's own Kafka source, its jars shipped to the worker's executor (spark.jars).
        reads = wait_until(lambda: KAFKA_SOURCE in log.read_text(), timeout_s=30)
        assert reads, log.read_text()[-3000:]
    finally:
        processor.send_signal(signal.SIGTERM)
        processor.wait(60)
    (infraction,) = read_topic(settings, topics.INFRACTIONS, since)
    assert (infraction["vehicle_id"], infraction["type"], infraction["measured"]) == (
        "TX-00042", "speeding", 90
    )  # fmt: skip
    assert "master=spark://" in log.read_text()
