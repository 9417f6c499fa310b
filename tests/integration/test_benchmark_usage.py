"""`casatwin bench` reports what each service cost while a benchmark ran (issue 16).

The dispatch benchmark (about two seconds) through the real runner: its private broker,
MariaDB and read-model server, the runner itself as the dispatcher. Each must appear in the
benchmark's ``usage`` with CPU and memory measured, MariaDB and Kafka beside their budgets in
the garage's memory plan; the table goes to stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

pytestmark = pytest.mark.integration


def test_the_runner_reports_cpu_and_memory_per_service_against_the_plan(tmp_path):
    env = {**os.environ, "CASATWIN_GENERAL_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "casatwin.cli", "bench", "dispatch"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    usage = result["usage"]
    services = usage["by_service"]
    assert usage["samples"] >= 2, usage
    assert {"dispatcher", "mariadb", "kafka", "nx27017"} <= set(services), usage
    assert services["dispatcher"]["processes"] >= 1 and services["dispatcher"]["cpu_s_per_s"] > 0
    assert services["mariadb"]["budget_mb"] == 2048 and services["kafka"]["budget_mb"] == 1792
    assert all(row["peak_pss_mb"] > 0 for row in services.values() if row["processes"]), usage
    assert "dispatch: CPU and memory per service" in done.stderr
    assert "peak PSS MB" in done.stderr
