"""`casatwin gateway`, `gateway fake-api` and `gateway fault` as processes, as in `make run`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from casatwin.city import load, synthetic
from casatwin.devstack.servers import free_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "casatwin.cli"]


@pytest.fixture
def env(broker_settings, tmp_path: Path) -> dict[str, str]:
    pack = tmp_path / "grid.json"
    load.write(synthetic.grid(3, 3, motorway=True), pack)
    port = free_port()
    return {
        **broker_settings.as_env(),
        "PATH": "/usr/bin:/bin",
        "CASATWIN_CITY_PACK": str(pack),
        "CASATWIN_FAKE_API_PORT": str(port),
        "CASATWIN_GATEWAY_API_URL": f"http://127.0.0.1:{port}/tmdd/detector-data",
        "CASATWIN_GATEWAY_METRICS_PORT": "0",
        "CASATWIN_GATEWAY_POLL_INTERVAL_S": "0.2",
    }


def casatwin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def admin_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['CASATWIN_FAKE_API_PORT']}/admin/fault"


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    return process.returncode, err


def test_fake_api_fault_switching_and_single_polls(env):
    fake = subprocess.Popen(
        [*CLI, "gateway", "fake-api"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{env['CASATWIN_FAKE_API_PORT']}/", fake)

        switched = casatwin(env, "gateway", "fault", "http500", "--count", "1")
        assert switched.returncode == 0, switched.stderr
        assert orjson.loads(switched.stdout) == {"mode": "http500", "remaining": 1}

        failed = casatwin(env, "gateway", "--once")
        assert failed.returncode == 0, failed.stderr
        assert orjson.loads(failed.stdout)["ok"] is False
        assert "HTTP 500" in orjson.loads(failed.stdout)["reason"]

        polled = casatwin(env, "gateway", "--once")
        result = orjson.loads(polled.stdout)
        assert result["ok"] is True
        assert result["published"] + result["duplicates"] == 4

        shown = casatwin(env, "gateway", "fault")
        status = orjson.loads(shown.stdout)
        assert status["mode"] == "none"
        assert status["requests"] == {"http500": 1, "none": 1}
        assert set(status["modes"]) >= {"slow", "timeout", "malformed", "truncated"}

        wrong = casatwin(env, "gateway", "fault", "explode")
        assert wrong.returncode == 2
        assert "unknown fault mode 'explode'" in wrong.stderr
        assert "Traceback" not in wrong.stderr
    finally:
        code, err = stop(fake)
    assert code == 0, err
    assert "fake traffic API stopped" in err


def test_gateway_runs_until_sigterm_and_drains(env):
    fake = subprocess.Popen(
        [*CLI, "gateway", "fake-api"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{env['CASATWIN_FAKE_API_PORT']}/", fake)
        gateway = subprocess.Popen([*CLI, "gateway"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            status: dict = {}
            while time.monotonic() < deadline and status.get("requests", {}).get("none", 0) < 3:
                time.sleep(0.2)
                with urllib.request.urlopen(admin_url(env), timeout=5) as response:
                    status = orjson.loads(response.read())
            assert status["requests"]["none"] >= 3, "the gateway did not poll"
        finally:
            code, err = stop(gateway)
        assert code == 0, err
        assert "gateway started" in err
        assert "gateway stopped" in err
        assert "Traceback" not in err
    finally:
        stop(fake)


def test_unknown_start_fault_is_a_user_error(env):
    result = casatwin(env, "gateway", "fake-api", "--fault", "nope")
    assert result.returncode == 2
    assert "unknown fault mode 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_nonsense_gateway_settings_are_user_errors(env):
    bad_url = casatwin({**env, "CASATWIN_GATEWAY_API_URL": "localhost:8470"}, "gateway", "--once")
    assert bad_url.returncode == 2
    assert "CASATWIN_GATEWAY_API_URL='localhost:8470' is not an http(s) URL" in bad_url.stderr
    no_breaker = casatwin(
        {**env, "CASATWIN_GATEWAY_BREAKER_FAILURE_THRESHOLD": "0"}, "gateway", "--once"
    )
    assert no_breaker.returncode == 2
    assert "failure_threshold >= 1" in no_breaker.stderr
    assert "Traceback" not in bad_url.stderr + no_breaker.stderr
