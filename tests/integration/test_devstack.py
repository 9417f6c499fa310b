"""`casatwin stack up` (make run): servers up in order, Ctrl-C leaves nothing running."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from casatwin.config import Settings
from casatwin.devstack.servers import free_port, port_is_open
from casatwin.waiting import wait_until

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


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child that nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def argv_of(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def broker_pids(pids: set[int]) -> list[int]:
    """The processes among ``pids`` that run Apache Kafka's broker (main class kafka.Kafka)."""
    return [pid for pid in pids if "kafka.Kafka" in argv_of(pid)]


def left_running(pids: set[int], timeout_s: float = 30.0) -> dict[int, str]:
    """The processes of ``pids`` still running once they have had ``timeout_s`` to end."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid: command_of(pid) for pid in pids if running(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


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
        # The jars of `make setup`, found from any directory (the stack runs in tmp_path).
        general={"data_dir": tmp_path / "state", "jars_dir": Settings().general.jars_dir.resolve()},
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
        assert len(broker_pids(descendants)) == 1  # Apache Kafka
        assert port_is_open("127.0.0.1", settings.mariadb.port)
        # The topics exist.
        listing = subprocess.run(
            [sys.executable, "-m", "casatwin.cli", "topics", "list"],
            capture_output=True, text=True, env=env, timeout=60, check=True, cwd=tmp_path,
        )  # fmt: skip
        assert "casatwin.telemetry" in listing.stdout
        process.send_signal(signal.SIGINT)
        output = banner + process.communicate(timeout=150)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert left_running(descendants) == {}
    assert not port_is_open("127.0.0.1", settings.mariadb.port)
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.spark
@pytest.mark.slow
def test_the_whole_twin_runs_and_ctrl_c_stops_every_service_quietly(tmp_path):
    """make run with every service of the Procfile: telemetry flows, the processor's queries
    start; Ctrl-C stops services and servers, leaves no process and prints no traceback."""
    env, _ = stack_env(tmp_path)
    fake_api = free_port()
    env |= {
        "CASATWIN_DASHBOARD_PORT": str(free_port()),
        "CASATWIN_FAKE_API_PORT": str(fake_api),
        "CASATWIN_GATEWAY_API_URL": f"http://127.0.0.1:{fake_api}/tmdd/detector-data",
        "CASATWIN_SIMULATOR_TAXIS": "100",
        "CASATWIN_REGISTRY_DRIVERS": "13000",
        **{f"CASATWIN_{name}_METRICS_PORT": "0" for name in
           ("SIMULATOR", "GATEWAY", "PROCESSOR", "DISPATCHER", "DASHBOARD")},
    }  # fmt: skip
    procfile = Path(__file__).resolve().parents[2] / "Procfile"
    process = subprocess.Popen(
        [sys.executable, "-m", "casatwin.cli", "stack", "up", "--procfile", str(procfile)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    output = ""
    try:
        output += wait_for_output(process, "query started query=congestion", timeout_s=300)
        descendants = children_of(process.pid)
        assert len(broker_pids(descendants)) == 1  # Apache Kafka
        tail = subprocess.run(
            [sys.executable, "-m", "casatwin.cli", "tail", "telemetry", "-n", "3",
             "--timeout", "20"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        assert tail.stdout.count('"vehicle_id"') == 3
        process.send_signal(signal.SIGINT)
        output += process.communicate(timeout=150)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert left_running(descendants) == {}, output[-3000:]
    for noise in ("Traceback", "Exception in thread", "StackOverflowError"):
        assert noise not in output, output[output.index(noise) - 2000 :][:4000]


SHORT_SCENARIO = """\
name: short
city: casablanca
traffic: {taxis: 20, speeder_share: 0, red_light_runner_share: 0, illegal_parker_share: 0}
duration_s: 8
events:
  - {type: illegal_parking, vehicle: TX-00103, at: 1, zone: Casa Port, duration_s: 600}
"""


def scenario_stack(tmp_path, **extra):
    """`make run` with a short scenario (8 s in real time), the simulator and the dashboard."""
    env, _ = stack_env(tmp_path)
    (tmp_path / "short.yaml").write_text(SHORT_SCENARIO)
    (tmp_path / "Procfile").write_text(
        "simulator: casatwin simulator\ndashboard: casatwin dashboard\n"
    )
    dashboard_port = free_port()
    env |= {
        "CASATWIN_SIMULATOR_SCENARIO": str(tmp_path / "short.yaml"),
        "CASATWIN_DASHBOARD_PORT": str(dashboard_port),
        "CASATWIN_REGISTRY_DRIVERS": "13000",
        "CASATWIN_SIMULATOR_METRICS_PORT": "0",
        "CASATWIN_DASHBOARD_METRICS_PORT": "0",
        **extra,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "casatwin.cli", "stack", "up", "--procfile", "Procfile"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{dashboard_port}/api/health"


def live_vehicles(health_url):
    """The dashboard's live vehicles (its health answer, which must be a 200)."""
    with urllib.request.urlopen(health_url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())["vehicles"]


def test_make_run_with_a_scenario_keeps_the_dashboard_up_after_it(tmp_path):
    """Issue 17: the scenario ends, the twin does not: the simulator says so and goes on
    with normal traffic, the dashboard still answers; Ctrl-C stops everything."""
    process, health = scenario_stack(tmp_path)
    output = ""
    try:
        output += wait_for_output(process, "Ctrl-C", timeout_s=180)
        descendants = children_of(process.pid)
        output += wait_for_output(process, "scenario over", timeout_s=120)
        assert "normal traffic goes on until the twin is stopped" in output.splitlines()[-1]
        # The simulator's next progress line: it is still stepping, past the scenario's end.
        output += wait_for_output(process, "simulating sim_time=", timeout_s=60)
        # The dashboard answers, taxis on its map.
        assert wait_until(lambda: live_vehicles(health) > 0, 60), live_vehicles(health)
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        output += process.communicate(timeout=150)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert left_running(descendants) == {}, output[-3000:]
    assert "whole twin stopped" not in output and "Traceback" not in output, output[-3000:]


def test_told_to_stop_after_the_scenario_make_run_stops_and_says_why(tmp_path):
    """The old behaviour, chosen: CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO=true stops the
    simulator at the scenario's end and the twin with it; the last line says so."""
    process, _ = scenario_stack(tmp_path, CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO="true")
    output = ""
    try:
        output += wait_for_output(process, "Ctrl-C", timeout_s=180)
        descendants = children_of(process.pid)
        output += process.communicate(timeout=240)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert "scenario over; the simulator stops, as asked" in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert "a service ended by itself, so the whole twin stopped service=simulator" in last
    assert left_running(descendants) == {}, output[-3000:]


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


def test_a_broker_formatted_before_authentication_is_formatted_anew(tmp_path, caplog):
    """A `make run` state directory from before the bus had users: its storage has no
    admin to log in as. The broker formats it again (saying so) and comes up with users."""
    from casatwin.bus.admin import wait_for_broker
    from tests.conftest import kafka_broker

    broker = kafka_broker(tmp_path)
    (broker.data_dir).mkdir(parents=True)
    (broker.data_dir / "meta.properties").write_text("cluster.id=formerly-unauthenticated\n")
    broker.start()
    try:
        assert "formerly-unauthenticated" not in (broker.data_dir / "meta.properties").read_text()
        assert any("predates authentication" in r.getMessage() for r in caplog.records)
        assert wait_for_broker(broker.admin_settings) == []  # admin logs in; no topic yet
        assert broker.config_path.stat().st_mode & 0o777 == 0o600  # it holds passwords
    finally:
        broker.stop()
