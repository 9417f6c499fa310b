"""Shared fixtures: real servers on free ports (MariaDB once per session, the broker and the
read model once per test module).

The servers are the ones `make run` starts (same classes, same options), each in its own
temporary directory, so several test sessions can run side by side without sharing state.
A test asks only for what it talks to: ``broker``, ``mongo``, ``mariadb``, or ``stack_settings``
for all three.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from casatwin.bus.access import provision
from casatwin.config import MariaDBSettings, Settings
from casatwin.devstack.servers import KafkaBroker, MariaDBServer, MongoWireServer, free_port
from casatwin.devstack.vault import generate_secrets

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


def kafka_broker(state_dir: Path) -> KafkaBroker:
    """An Apache Kafka broker as `make run` starts it (jars from `make setup`), smaller heap."""
    return KafkaBroker(
        "127.0.0.1", free_port(), state_dir, jars_dir=Settings().general.jars_dir, heap_mb=512
    )


# Module scope: the topics and the read model have fixed names, so each test module gets a
# broker and a read model of its own (Kafka starts in about 3 s, the read model in one) and
# modules cannot see each other's messages.
@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    server = kafka_broker(tmp_path_factory.mktemp("kafka"))
    server.start()
    provision(server.admin_settings)
    yield server
    server.stop()


@pytest.fixture
def cuttable_broker(broker: KafkaBroker) -> Iterator[KafkaBroker]:
    """The module's broker, for a test that cuts it (``kill``) and brings it back
    (``start``): up again when the test ends, whatever happened."""
    yield broker
    if broker.process is None:
        broker.start()


@pytest.fixture(scope="module")
def mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoWireServer]:
    # nx-27017 keeps every database in one SQLite store: a directory per server.
    server = MongoWireServer("127.0.0.1", free_port(), tmp_path_factory.mktemp("mongo"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb(servers_dir: Path) -> Iterator[MariaDBServer]:
    server = MariaDBServer(
        "127.0.0.1",
        free_port(),
        servers_dir / "mariadb",
        # Test data is disposable: trade durability for speed.
        options={"innodb-flush-log-at-trx-commit": "2", "innodb-buffer-pool-size": "256M"},
    )
    server.start()
    yield server
    server.stop()


def scratch_database(server: MariaDBServer, name: str, *, migrate: bool = True) -> MariaDBSettings:
    """A fresh database ``name`` on ``server`` (dropped first), migrated unless told not to."""
    from casatwin.registry import db, schema

    server.sql(f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    settings = MariaDBSettings(host=server.host, port=server.port, user=server.user, database=name)
    if migrate:
        conn = db.open_connection(settings)
        schema.migrate(conn)
        conn.close()
    return settings


def query(settings: MariaDBSettings, sql: str, args: object = None) -> list[tuple]:
    """The rows of one statement, on a connection of its own."""
    from casatwin.registry import db

    conn = db.open_connection(settings)
    try:
        cursor = conn.cursor()
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    finally:
        conn.close()


REGISTRY_AS_OF = "2025-06-01"


@pytest.fixture(scope="session")
def registry(mariadb: MariaDBServer, tmp_path_factory: pytest.TempPathFactory) -> MariaDBSettings:
    """A migrated database with a small registry, shared by the session: read it, do not
    change it (ledger tests make their own). 20,000 drivers, every taxi of the fleet with
    its driver (TX-00001 is driven by B000001), private vehicles, the grid's police units.
    """
    import datetime as dt

    from casatwin.city.load import from_dict
    from casatwin.city.synthetic import grid
    from casatwin.registry import loader

    settings = scratch_database(mariadb, "casatwin_registry")
    loader.load(
        settings,
        20_000,
        seed=52,
        as_of=dt.date.fromisoformat(REGISTRY_AS_OF),
        police_units=loader.police_units_of(from_dict(grid())),
    )
    return settings


@pytest.fixture
def base_settings(tmp_path: Path) -> Settings:
    """Default settings with a private data directory (and its secrets), no servers."""
    settings = Settings().replace(general={"data_dir": tmp_path / "state"})
    generate_secrets(settings)
    return settings


@pytest.fixture
def broker_settings(base_settings: Settings, broker: KafkaBroker) -> Settings:
    return base_settings.replace(kafka=broker.client_fields)


@pytest.fixture
def stack_settings(
    base_settings: Settings, broker: KafkaBroker, mongo: MongoWireServer, mariadb: MariaDBServer
) -> Settings:
    """Settings pointing at all three servers."""
    return base_settings.replace(
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb={"host": mariadb.host, "port": mariadb.port, "database": mariadb.database},
    )


@pytest.fixture
def unique_topic() -> str:
    """A fresh topic name, for tests that must not see other tests' messages."""
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for a person to look at (screenshots, reports)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def grid_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic city pack file (a grid of streets near Casablanca's centre)."""
    from casatwin.city import load, synthetic

    path = tmp_path_factory.mktemp("packs") / "grid.json"
    load.write(synthetic.grid(rows=8, cols=10, spacing_m=300), path)
    return path


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One local Spark session for the whole test session (its JVM takes ~10 s to start).

    Configured as the processor configures it, on two cores with two shuffle partitions.
    """
    pytest.importorskip("pyspark")
    from casatwin.processor.session import build_session

    settings = Settings().replace(
        general={"data_dir": tmp_path_factory.mktemp("spark")},
        processor={"shuffle_partitions": 2, "driver_memory": "1g"},
    )
    session = build_session(settings, master="local[2]")
    yield session
    session.stop()
