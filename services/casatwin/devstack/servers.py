"""The servers of the one-machine stack, each a child process with a readiness check.

* :class:`KafkaBroker` — Apache Kafka (KRaft, one node), its jars from Maven Central, its log
  on disk under the state directory;
* :class:`MongoWireServer` — ``nx-27017``, the MongoDB wire protocol on SQLite;
* :class:`MariaDBServer` — Debian's ``mariadbd`` on a private data directory, so that the
  stack never touches the machine's own MariaDB.

Servers run in their own session so that a Ctrl-C in the terminal reaches the runner,
which stops the services first and the servers last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from casatwin.errors import UserError
from casatwin.logs import get_logger

if TYPE_CHECKING:
    from casatwin.config import KafkaSettings

log = get_logger("stack")


def port_is_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for tests that run servers side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Server(ABC):
    """A child process with a log file, a readiness check and an orderly stop."""

    name: str = "server"
    port_setting: str = "see `casatwin config`"  # the setting that moves it elsewhere
    stop_timeout_s: float = 15.0

    def __init__(self, host: str, port: int, state_dir: Path) -> None:
        self.host = host
        self.port = port
        # Absolute: some servers (nx-27017) change directory before writing their files.
        self.state_dir = state_dir.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.state_dir / f"{self.name}.log"

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def ready(self) -> bool:
        """True once the server answers its protocol (not just its port)."""

    def prepare(self) -> None:
        """One-time set-up before the first start (e.g. initialise a data directory)."""

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    def start(self, timeout_s: float = 60.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        if port_is_open(self.host, self.port):
            raise UserError(
                f"cannot start {self.name}: port {self.host}:{self.port} is already in use",
                hint=f"stop whatever listens there, or choose another port ({self.port_setting})",
            )
        self.prepare()
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.state_dir,
            )
        self.pid_path.write_text(str(self.process.pid))
        self.wait_ready(timeout_s)
        log.info(f"{self.name} ready", address=f"{self.host}:{self.port}", pid=self.process.pid)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise UserError(
                    f"{self.name} exited at start with status {self.process.returncode}",
                    hint=f"its log is {self.log_path}:\n{self._log_tail()}",
                )
            if port_is_open(self.host, self.port) and self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise UserError(
            f"{self.name} did not become ready within {timeout_s:.0f} s",
            hint=f"its log is {self.log_path}:\n{self._log_tail()}",
        )

    def stop(self) -> None:
        if self.process is None:
            return
        _terminate(self.process.pid, self.stop_timeout_s, lambda: self.process.poll() is not None)
        self.process.wait()
        self.process = None
        self.pid_path.unlink(missing_ok=True)
        log.info(f"{self.name} stopped")

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would; for fault-injection tests."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def _stop_leftover(self) -> None:
        """Stop a server that a previous run left behind (its runner was killed)."""
        if not self.pid_path.exists():
            return
        with contextlib.suppress(ValueError):
            pid = int(self.pid_path.read_text())
            if _alive(pid) and self.name in _cmdline(pid):
                log.warning(f"stopping a {self.name} left over from a previous run", pid=pid)
                _terminate(pid, self.stop_timeout_s, lambda: not _alive(pid))
        self.pid_path.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purpose.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _terminate(pid: int, timeout_s: float, gone: object) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not gone after ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone():  # type: ignore[operator]
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class KafkaBroker(Server):
    """Apache Kafka in KRaft mode, one node that is both broker and controller.

    Its jars come from Maven Central (:mod:`~casatwin.devstack.jars`). The first start formats
    ``<state>/data`` with Kafka's own storage tool; the log stays there, so a restart (even
    after ``kill -9``) keeps every record the broker acknowledged. The controller listens on
    a second loopback port, chosen once and kept in ``server.properties``.
    """

    name = "kafka"
    port_setting = "CASATWIN_KAFKA_BOOTSTRAP"
    stop_timeout_s = 60.0  # a controlled shutdown closes every log segment first

    def __init__(
        self,
        host: str,
        port: int,
        state_dir: Path,
        jars_dir: Path,
        heap_mb: int,
        credentials_dir: Path | None = None,
    ) -> None:
        super().__init__(host, port, state_dir)
        self.jars_dir = jars_dir
        self.heap_mb = heap_mb
        self.data_dir = self.state_dir / "data"
        self.config_path = self.state_dir / "server.properties"
        # Its own and the services' passwords (the tests' brokers keep theirs beside them).
        self.credentials_dir = credentials_dir or self.state_dir / "credentials"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client_fields(self) -> dict[str, object]:
        """What a client's KafkaSettings needs to reach this broker: ``settings.replace(
        kafka=broker.client_fields)`` (as the settings' user, ``admin`` by default)."""
        return {"bootstrap": self.bootstrap, "credentials_dir": str(self.credentials_dir)}

    @property
    def admin_settings(self) -> KafkaSettings:
        """How to reach this broker as ``admin``; ``.replace``-able with another user."""
        from casatwin.config import KafkaSettings

        return KafkaSettings(**self.client_fields)  # type: ignore[arg-type]

    def _java(self, main: str, *args: str, heap_mb: int = 256) -> list[str]:
        from casatwin.devstack import jars

        return [
            _java_binary(), f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m",
            # The role's collector settings: short pauses, the broker's latency is the twin's.
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_LOG_CONFIG}",
            f"-Dkafka.logs.dir={self.state_dir / 'logs'}",
            "-cp", jars.classpath("kafka", self.jars_dir), main, *args,
        ]  # fmt: skip

    def prepare(self) -> None:
        from casatwin.bus.credentials import ADMIN, CONTROLLER, MECHANISM, password
        from casatwin.devstack.vault import generate_kafka_passwords

        generate_kafka_passwords(self.credentials_dir)
        passwords = self.admin_settings
        admin, controller = password(passwords, ADMIN), password(passwords, CONTROLLER)
        controller_port = _property(self.config_path, "controller.port") or free_port()
        # It holds the broker's own passwords: readable by this user only.
        self.config_path.touch(mode=0o600)
        self.config_path.chmod(0o600)
        self.config_path.write_text(
            kafka_properties(
                self.host, self.port, int(controller_port), self.data_dir, admin, controller
            )
        )
        formatted = self.data_dir / "meta.properties"
        if formatted.exists() and not (self.state_dir / SCRAM_FORMATTED).exists():
            # Formatted before the bus had users: no admin to log in as. Its messages were
            # `make run`'s own; start again rather than run without authentication.
            log.warning(
                "Kafka storage predates authentication; formatting it anew, its messages dropped",
                log_dir=str(self.data_dir),
            )
            shutil.rmtree(self.data_dir)
        if formatted.exists():
            return
        cluster_id = kafka_uuid()
        command = self._java(
            "kafka.tools.StorageTool", "format", "--config", str(self.config_path),
            "--cluster-id", cluster_id, "--ignore-formatted",
            # The first user, in the cluster's bootstrap metadata: `admin` creates the rest.
            "--add-scram", f"{MECHANISM}=[name={ADMIN},password={admin}]",
        )  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise UserError(
                "Kafka's storage tool could not format the broker's log directory",
                hint=(result.stderr or result.stdout).strip()[-800:],
            )
        (self.state_dir / SCRAM_FORMATTED).touch()
        log.info("Kafka storage formatted", log_dir=str(self.data_dir), cluster_id=cluster_id)

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_path), heap_mb=self.heap_mb)

    def ready(self) -> bool:
        """It answers, and every partition it holds (after a restart) has a leader."""
        from casatwin.bus.admin import admin_client, leaders_serve

        # librdkafka's own lines go to the log at DEBUG (client_config), not to stderr.
        admin = admin_client(self.admin_settings)
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:
            return False
        return bool(metadata.brokers) and leaders_serve(admin, timeout_s=2)


KAFKA_LOG_CONFIG = Path(__file__).with_name("kafka-log4j2.properties")


SCRAM_FORMATTED = "storage-has-users"  # marker: formatted with the admin's SCRAM credential


def kafka_properties(
    host: str, port: int, controller_port: int, log_dir: Path, admin: str, controller: str
) -> str:
    """``server.properties`` of the one-node broker (KRaft, broker and controller).

    Authenticated as the appliance's brokers are (roles/kafka): clients with SCRAM on the
    ``BROKER`` listener, the controller with PLAIN (KRaft controllers cannot check SCRAM,
    whose credentials live in the metadata they serve), ACLs by StandardAuthorizer.
    """
    from casatwin.bus.credentials import (
        ADMIN,
        CONTROLLER,
        MECHANISM,
        PLAIN_LOGIN,
        SCRAM_LOGIN,
        jaas,
    )

    plain = jaas(PLAIN_LOGIN, CONTROLLER, controller, **{f"user_{CONTROLLER}": controller})
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"BROKER://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"BROKER://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "BROKER",
        "listener.security.protocol.map": "BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.broker.sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.broker.{MECHANISM.lower()}.sasl.jaas.config": jaas(
            SCRAM_LOGIN, ADMIN, admin
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN};User:{CONTROLLER}",
        "log.dirs": str(log_dir),
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Consumer groups form at once (the default waits 3 s for more members).
        "group.initial.rebalance.delay.ms": "0",
        # After a kill -9 the restarted broker cannot register until the controller has
        # given up on its previous incarnation's session (default 9 s: a restart took 13 s,
        # long enough for producers to give up on what they buffered). One node on
        # loopback heartbeats to itself: a short session is safe.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        "num.partitions": "1",
        "log.retention.hours": "24",
        # Records carry their fix's time, and a simulator running faster than real time
        # (--afap, benchmarks, history) stamps the future: Kafka 4 refuses records more than
        # an hour ahead by default ("Invalid timestamp").
        "log.message.timestamp.after.max.ms": str(2**63 - 1),
        # Smaller segments than the 1 GiB default: retention frees disk in a test's lifetime.
        "log.segment.bytes": str(128 * 1024 * 1024),
    }
    lines = [
        "# Written by casatwin's devstack at every start; the controller port is kept.",
        f"# controller.port={controller_port}",
        *(f"{key}={value}" for key, value in properties.items()),
    ]
    return "\n".join(lines) + "\n"


def _property(path: Path, key: str) -> str | None:
    """A ``# key=value`` or ``key=value`` line of a properties file this module wrote."""
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        name, sep, value = line.lstrip("# ").partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def kafka_uuid() -> str:
    """A random Kafka Uuid, as ``kafka-storage.sh random-uuid`` prints it: never starting
    with ``-``, which the storage tool would take for an option."""
    import base64
    import secrets

    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise UserError(
            "Java is not installed; Apache Kafka and Spark need it",
            hint="`make setup` installs it (apt-get install openjdk-17-jre-headless)",
        )
    return java


class MongoWireServer(Server):
    """The read model's server: nx-27017 on a SQLite file."""

    name = "nx-27017"
    port_setting = "CASATWIN_MONGO_URL"

    def command(self) -> list[str]:
        # Its own pid and log files: the defaults in /tmp allow one server per machine.
        return [
            str(Path(sys.executable).with_name("nx-27017")),
            "--db", str(self.state_dir / "readmodel.db"),
            "--host", self.host, "-p", str(self.port),
            "--pid-file", str(self.state_dir / "nx-27017.own.pid"),
            "--log-file", str(self.state_dir / "nx-27017.own.log"),
        ]  # fmt: skip

    def ready(self) -> bool:
        import pymongo

        try:
            client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=1000)
            client.admin.command("ping")
            client.close()
        except Exception:
            return False
        return True

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"


class MariaDBServer(Server):
    """Debian's mariadbd on a private data directory, bound to loopback."""

    name = "mariadb"
    port_setting = "CASATWIN_MARIADB_PORT"
    stop_timeout_s = 60.0

    def __init__(
        self,
        host: str,
        port: int,
        state_dir: Path,
        user: str = "casatwin",
        database: str = "casatwin",
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(host, port, state_dir)
        self.user = user
        self.database = database
        self.options = options or {}
        self.datadir = self.state_dir / "data"
        self.socket = self.state_dir / "mariadb.sock"

    @staticmethod
    def binaries() -> tuple[str, str, str]:
        names = ("mariadbd", "mariadb-install-db", "mariadb")
        found = [shutil.which(b) or shutil.which(b, path="/usr/sbin:/usr/bin") for b in names]
        if not all(found):
            raise UserError(
                "MariaDB is not installed (mariadbd, mariadb-install-db and mariadb are needed)",
                hint="`make setup` installs it (apt-get install mariadb-server mariadb-client)",
            )
        return found[0], found[1], found[2]  # type: ignore[return-value]

    def _os_user(self) -> str:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name

    def prepare(self) -> None:
        if (self.datadir / "mysql").is_dir():
            return
        _, install_db, _ = self.binaries()
        self.datadir.mkdir(parents=True, exist_ok=True)
        user = self._os_user()
        result = subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--user={user}",
                "--auth-root-authentication-method=socket",
                f"--auth-root-socket-user={user}",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise UserError(
                "could not initialise the MariaDB data directory",
                hint=(result.stderr or result.stdout).strip()[-500:],
            )
        log.info("MariaDB data directory initialised", datadir=str(self.datadir))

    def command(self) -> list[str]:
        mariadbd, _, _ = self.binaries()
        options = {
            "datadir": str(self.datadir),
            "socket": str(self.socket),
            "port": str(self.port),
            "bind-address": self.host,
            "pid-file": str(self.state_dir / "mariadbd.pid"),
            "user": self._os_user(),
            "local-infile": "1",
            "skip-name-resolve": "1",
            "character-set-server": "utf8mb4",
            "collation-server": "utf8mb4_unicode_ci",
            "innodb-buffer-pool-size": "256M",
            "max-connections": "300",
            **self.options,
        }
        return [mariadbd, "--no-defaults", *(f"--{k}={v}" for k, v in options.items())]

    def ready(self) -> bool:
        return self.sql("SELECT 1", check=False).returncode == 0

    def start(self, timeout_s: float = 60.0) -> None:
        super().start(timeout_s)
        self.bootstrap()

    def sql(self, statement: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run SQL as the administrator over the private socket."""
        _, _, client = self.binaries()
        result = subprocess.run(
            [
                client,
                "--no-defaults",
                f"--socket={self.socket}",
                "-u",
                self._os_user(),
                "--batch",
                "--skip-column-names",
                "-e",
                statement,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise UserError(f"MariaDB refused {statement[:60]!r}: {result.stderr.strip()}")
        return result

    def bootstrap(self) -> None:
        """The database and the services' user (no password: loopback-only dev instance)."""
        self.sql(
            f"CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4;"
            f"CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1';"
            f"CREATE USER IF NOT EXISTS '{self.user}'@'localhost';"
            # The pattern lets tests create scratch databases such as casatwin_test_ledger.
            f"GRANT ALL ON `{self.database}%`.* TO '{self.user}'@'127.0.0.1';"
            f"GRANT ALL ON `{self.database}%`.* TO '{self.user}'@'localhost';"
        )
