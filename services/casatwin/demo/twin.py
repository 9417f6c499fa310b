"""The twin's services as child processes, which a demo can stop, kill and restart.

``make run`` hands its services to honcho, which stops everything when one dies; a demo
needs the opposite — kill the processor with SIGKILL and start it again while the others
carry on — so each service here is a ``casatwin SERVICE`` process of its own, with its
log in ``<data_dir>/logs/SERVICE.log`` and the environment ``make run`` gives it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from casatwin.config import Settings
from casatwin.devstack.runner import service_environment
from casatwin.logs import get_logger

log = get_logger("demo")


@dataclass
class Twin:
    settings: Settings
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log_path(self, name: str) -> Path:
        return self.settings.general.data_dir / "logs" / f"{name}.log"

    def start(self, name: str, *args: str) -> None:
        """``casatwin NAME ARGS`` in the background (``name`` may be ``processor`` or
        ``simulator`` and so on; the same name can be started again once it has ended)."""
        path = self.log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "casatwin.cli", name, *args],
                env=service_environment(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        log.info("service started", service=name, pid=self.processes[name].pid, log=str(path))

    def running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook, no flush — a crash."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        log.warning("service killed (kill -9)", service=name, pid=process.pid)

    def stop(self, name: str, timeout_s: float = 30.0) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def wait(self, name: str, timeout_s: float) -> int | None:
        """Wait for a service to end by itself (the simulator at the end of its scenario)."""
        try:
            return self.processes[name].wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)
