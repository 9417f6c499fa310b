"""Start and stop the servers of the one-machine stack, in order, from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from casatwin.config import Settings
from casatwin.devstack.servers import MariaDBServer, MongoWireServer, Server, TansuBroker
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


@dataclass
class Stack:
    """The broker, the read-model server and MariaDB, as the settings place them."""

    broker: TansuBroker
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
            broker=TansuBroker(kafka_host, kafka_port, state / "tansu"),
            mongo=MongoWireServer(url.hostname, url.port or 27017, state / "mongo"),
            mariadb=MariaDBServer(
                settings.mariadb.host,
                settings.mariadb.port,
                state / "mariadb",
                user=settings.mariadb.user,
                database=settings.mariadb.database,
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
