"""``make run``: servers first, then the services of the Procfile, then an orderly stop.

Ctrl-C (or SIGTERM) stops the services (honcho sends them SIGTERM, then SIGKILL after
``STOP_GRACE_S``) and then the servers, newest first; nothing is left running.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from casatwin.bus.access import provision
from casatwin.config import Settings
from casatwin.devstack.stack import Stack
from casatwin.errors import UserError
from casatwin.logs import get_logger

log = get_logger("stack")

STOP_GRACE_S = 30


def parse_procfile(path: Path) -> dict[str, str]:
    """``name: command`` lines; blank lines and ``#`` comments are ignored."""
    if not path.exists():
        raise UserError(f"process list {path} not found", hint="run `make run` from the repository")
    processes = {}
    for number, raw_line in enumerate(path.read_text().splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise UserError(f"{path}:{number}: expected `name: command`, got {line!r}")
        processes[name.strip()] = command.strip()
    return processes


def service_environment(settings: Settings) -> dict[str, str]:
    """What every service process gets: this environment plus the effective settings."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **settings.as_env(),
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
    }


def prepare(settings: Settings) -> None:
    """Everything the services expect to exist before they start."""
    from casatwin.devstack.vault import generate_secrets
    from casatwin.registry.setup import prepare as prepare_registry

    generate_secrets(settings)
    provision(settings.kafka)  # the topics; one principal per service, only what it needs
    prepare_registry(settings)  # schema migrations and the driver registry


def banner(settings: Settings, processes: dict[str, str]) -> str:
    lines = [
        "",
        "CasaTwin is up.",
        f"  Apache Kafka (KRaft)     {settings.kafka.bootstrap}",
        f"  read model (MongoDB)     {settings.mongo.url}",
        f"  MariaDB                  {settings.mariadb.host}:{settings.mariadb.port}"
        f" database {settings.mariadb.database}",
        f"  services                 {', '.join(processes) or 'none (--servers-only)'}",
    ]
    if "dashboard" in processes:
        from casatwin_dashboard.cli import url

        lines += [
            f"  dashboard                {url(settings)}",
            f"  kiosk                    {url(settings)}kiosk",
        ]
    if "simulator" in processes and settings.simulator.metrics_port:
        lines.append(
            f"  simulator metrics        http://127.0.0.1:{settings.simulator.metrics_port}/metrics"
        )
    if "fake-api" in processes:
        api = settings.fake_api
        lines.append(
            f"  fake traffic API         http://{api.host}:{api.port}/"
            "  (faults: casatwin gateway fault MODE)"
        )
    if "gateway" in processes and settings.gateway.metrics_port:
        lines.append(
            f"  gateway metrics          http://127.0.0.1:{settings.gateway.metrics_port}/metrics"
        )
    lines += [
        "  watch the taxis          casatwin tail casatwin.telemetry",
        "  stop                     Ctrl-C",
        "",
    ]
    return "\n".join(lines)


def run(settings: Settings, procfile: str, servers_only: bool = False) -> int:
    processes = {} if servers_only else parse_procfile(Path(procfile))
    if not servers_only and not processes:
        log.warning("the process list is empty; running the servers only", procfile=procfile)
    stack = Stack.from_settings(settings)
    log.info("starting the servers", state_dir=str(settings.general.data_dir))
    stack.start()
    try:
        prepare(settings)
        print(banner(settings, processes), flush=True)
        if not processes:
            _wait_for_stop_signal()
            return 0
        return _run_services(processes, service_environment(settings))
    finally:
        log.info("stopping the servers")
        stack.stop()


def _run_services(processes: dict[str, str], env: dict[str, str]) -> int:
    from honcho import manager as honcho_manager
    from honcho.manager import Manager
    from honcho.printer import Printer

    # honcho's grace before SIGKILL is 5 s; the processor needs longer to stop its queries and
    # its JVM on a busy machine (systemd's units give it TimeoutStopSec).
    honcho_manager.KILL_WAIT = STOP_GRACE_S
    manager = Manager(Printer(sys.stdout, colour=sys.stdout.isatty()))
    for name, command in processes.items():
        manager.add_process(name, command, env=env)
    manager.loop()
    return 0 if manager.returncode in (0, 130, 143, -2, -15) else int(manager.returncode or 1)


def _wait_for_stop_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
