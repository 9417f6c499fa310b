"""`casatwin stack up` (make run): servers up in order, Ctrl-C leaves nothing running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casatwin.config import Settings
from casatwin.devstack.servers import free_port, port_is_open

pytestmark = pytest.mark.integration


def children_of(pid: int) -> set[int]:
    """Every live descendant of pid (through /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def wait_for_output(process, needle, timeout_s):
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            seen.append(line)
            if needle in line:
                return "".join(seen)
        elif process.poll() is not None:
            break
    raise AssertionError(f"{needle!r} not printed; output was:\n{''.join(seen)}")


def stack_env(tmp_path: Path) -> dict[str, str]:
    settings = Settings().replace(
        general={"data_dir": tmp_path / "state"},
        kafka={"bootstrap": f"127.0.0.1:{free_port()}"},
        mongo={"url": f"mongodb://127.0.0.1:{free_port()}"},
        mariadb={"port": free_port()},
    )
    return {**os.environ, **settings.as_env()}, settings


def test_servers_start_and_ctrl_c_leaves_nothing_running(tmp_path):
    env, settings = stack_env(tmp_path)
    env["CASATWIN_GENERAL_DATA_DIR"] = "state"  # relative, like make run's `.casatwin`
    process = subprocess.Popen(
        [sys.executable, "-m", "casatwin.cli", "stack", "up", "--servers-only"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        banner = wait_for_output(process, "Ctrl-C", timeout_s=120)
        assert settings.kafka.bootstrap in banner
        descendants = children_of(process.pid)
        assert len(descendants) >= 3  # broker, read-model server, MariaDB
        assert port_is_open("127.0.0.1", settings.mariadb.port)
        # The topics exist.
        listing = subprocess.run(
            [sys.executable, "-m", "casatwin.cli", "topics", "list"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        assert "casatwin.telemetry" in listing.stdout
        process.send_signal(signal.SIGINT)
        process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    time.sleep(0.5)
    still_running = [pid for pid in descendants if Path(f"/proc/{pid}").exists()]
    assert still_running == []
    assert not port_is_open("127.0.0.1", settings.mariadb.port)


def test_a_busy_port_is_a_clear_error(tmp_path):
    env, settings = stack_env(tmp_path)
    import socket

    with socket.socket() as blocker:
        host, port = settings.kafka.bootstrap.split(":")
        blocker.bind((host, int(port)))
        blocker.listen()
        result = subprocess.run(
            [sys.executable, "-m", "casatwin.cli", "stack", "up", "--servers-only"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {settings.kafka.bootstrap} is already in use" in result.stderr
    assert "CASATWIN_KAFKA_BOOTSTRAP" in result.stderr
    assert "Traceback" not in result.stderr
