"""Start and stop the servers of the one-machine stack, in order, from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from casatwin.config import MariaDBSettings, Settings
from casatwin.devstack.servers import KafkaBroker, MariaDBServer, MongoWireServer, Server
from casatwin.errors import UserError
from casatwin.logs import get_logger

log = get_logger("stack")


def split_host_port(address: str, setting: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"{setting}={address!r} is not host:port", hint="for example 127.0.0.1:9092"
        )
    return host, int(port)


def mariadb_options(settings: MariaDBSettings) -> dict[str, str]:
    """Server settings of the embedded MariaDB; they suit production too (README, "Registry").

    Durability stays at its defaults (every commit flushed, doublewrite on): the ledger holds
    fines and points. What changes serves the registry's bulk load and its lookups.
    """
    return {
        # The 10M-driver registry's hot pages stay in memory (lookups never touch the disk).
        "innodb-buffer-pool-size": f"{settings.buffer_pool_mb}M",
        # A redo log large enough that a 10M-row load and its index builds do not force
        # checkpoints half way (the default 96M does, every few seconds).
        "innodb-log-file-size": "1G",
        # Index builds after a bulk load sort in larger runs.
        "innodb-sort-buffer-size": "64M",
    }


@dataclass
class Stack:
    """The broker, the read-model server and MariaDB, as the settings place them."""

    broker: KafkaBroker
    mongo: MongoWireServer
    mariadb: MariaDBServer
    started: list[Server] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings, state_dir: Path | None = None) -> Stack:
        state = state_dir or settings.general.data_dir / "servers"
        first_bootstrap = settings.kafka.bootstrap.split(",")[0]
        kafka_host, kafka_port = split_host_port(first_bootstrap, "CASATWIN_KAFKA_BOOTSTRAP")
        url = urlparse(settings.mongo.url)
        if url.scheme != "mongodb" or not url.hostname:
            raise UserError(
                f"CASATWIN_MONGO_URL={settings.mongo.url!r} is not a mongodb://host:port URL"
            )
        return cls(
            broker=KafkaBroker(
                kafka_host,
                kafka_port,
                state / "kafka",
                jars_dir=settings.general.jars_dir,
                heap_mb=settings.kafka.heap_mb,
                credentials_dir=settings.kafka.credentials_path(),
            ),
            mongo=MongoWireServer(url.hostname, url.port or 27017, state / "mongo"),
            mariadb=MariaDBServer(
                settings.mariadb.host,
                settings.mariadb.port,
                state / "mariadb",
                user=settings.mariadb.user,
                database=settings.mariadb.database,
                options=mariadb_options(settings.mariadb),
            ),
        )

    @property
    def servers(self) -> list[Server]:
        return [self.broker, self.mongo, self.mariadb]

    def start(self) -> None:
        """Start every server; if one fails, stop the ones already started."""
        try:
            for server in self.servers:
                server.start()
                self.started.append(server)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()
