"""``make run``: servers first, then the services of the Procfile, then an orderly stop.

Ctrl-C (or SIGTERM) stops the services (honcho sends them SIGTERM, then SIGKILL after
``STOP_GRACE_S``) and then the servers, newest first; nothing is left running.

A service that ends by itself stops the twin too (honcho's rule: a twin without one of its
services would show a screen that lies), and the last line says which one and how: a
crash (exit code other than 0, or a signal) is an error and ``make run`` exits with it.
No service ends by itself in the normal course: the simulator goes on after its scenario
unless ``CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO`` asks it to stop there.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honcho import manager as honcho_manager
from honcho.manager import SYSTEM_PRINTER_NAME, Manager
from honcho.printer import Printer

from casatwin.bus.access import provision
from casatwin.config import Settings
from casatwin.devstack.stack import Stack
from casatwin.errors import UserError
from casatwin.logs import get_logger

log = get_logger("stack")

STOP_GRACE_S = 30
OPERATOR = ""  # Ending.service when a signal (Ctrl-C, SIGTERM) stopped the twin
_STOPPED = re.compile(r"^(?P<name>\S+) stopped \(rc=(?P<rc>-?\d+)\)$")
_SIGNALLED = re.compile(r"^SIG[A-Z]+ received$")


@dataclass(frozen=True)
class Ending:
    """Why the services stopped: the operator's signal, or the first service that ended by
    itself and its exit code (negative: killed by that signal)."""

    service: str
    returncode: int

    @property
    def crashed(self) -> bool:
        return self.service != OPERATOR and self.returncode != 0

    @property
    def exit_code(self) -> int:
        """``make run``'s: 0 unless a service crashed (128 + N for a service killed by N)."""
        if not self.crashed:
            return 0
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    def how(self) -> str:
        if self.returncode >= 0:
            return f"exit code {self.returncode}"
        number = -self.returncode
        known = number in signal.valid_signals()
        return f"killed by {signal.Signals(number).name if known else f'signal {number}'}"

    def report(self) -> None:
        """The last line of ``make run`` when a service, not the operator, stopped it."""
        if self.service == OPERATOR:
            return
        fields = {
            "service": self.service,
            "how": self.how(),
            "its_output": f"above, the lines starting `{self.service} |`",
        }
        if self.crashed:
            log.error("a service crashed, so the whole twin stopped", **fields)
        else:
            log.warning("a service ended by itself, so the whole twin stopped", **fields)


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
        ending = run_services(processes, service_environment(settings))
    finally:
        _stop_servers(stack)
    ending.report()
    return ending.exit_code


def run_services(processes: dict[str, str], env: dict[str, str]) -> Ending:
    """Run ``processes`` (name: shell command) under honcho until Ctrl-C/SIGTERM or until
    one ends by itself; then all are stopped. Who ended it, and how."""
    # honcho's grace before SIGKILL is 5 s; the processor needs longer to stop its queries and
    # its JVM on a busy machine (systemd's units give it TimeoutStopSec).
    honcho_manager.KILL_WAIT = STOP_GRACE_S
    printer = WatchingPrinter(sys.stdout, colour=sys.stdout.isatty())
    manager = Manager(printer)
    for name, command in processes.items():
        manager.add_process(name, command, env=env)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        manager.loop()  # it sets its own SIGINT/SIGTERM handlers
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return printer.first or Ending(OPERATOR, 0)  # honcho prints every stop: always set


class WatchingPrinter(Printer):  # type: ignore[misc]
    """honcho's printer, noting what stopped the services first: the operator's signal
    ("SIGINT received") or a service that ended ("simulator stopped (rc=0)")."""

    first: Ending | None = None

    def write(self, message: Any) -> None:
        super().write(message)
        if self.first is None and message.name == SYSTEM_PRINTER_NAME:
            self.first = first_ending(str(message.data).strip())


def first_ending(system_line: str) -> Ending | None:
    """The ending a line of honcho's (``system | ...``) announces, if it announces one."""
    if _SIGNALLED.match(system_line):
        return Ending(OPERATOR, 0)
    stopped = _STOPPED.match(system_line)
    if stopped:
        return Ending(stopped["name"], int(stopped["rc"]))
    return None


def _stop_servers(stack: Stack) -> None:
    """Stop the servers; a second Ctrl-C (impatience) must not leave one of them running."""

    def patience(*_: object) -> None:
        log.warning("already stopping the servers; a moment")

    previous = {sig: signal.signal(sig, patience) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("stopping the servers")
        stack.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_for_stop_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
