"""`make loadtest` in miniature: a private stack, the dashboard, Locust for 5 s, a report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_a_short_load_test_writes_its_report_with_push_latencies(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--users", "10", "--spawn-rate", "10",
         "--duration", "5", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "report.html").stat().st_size > 0
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    rows = {row["name"]: row for row in summary["requests"]}
    pushed = rows["infraction (event_ts → client)"]
    assert pushed["requests"] > 0 and pushed["failures"] == 0
    assert pushed["p50_ms"] is not None and pushed["p99_ms"] >= pushed["p50_ms"]
    assert rows.get("/api/infractions", {}).get("requests"), list(rows)
    assert all(row["failures"] == 0 for row in summary["requests"])
    assert summary["dashboard_event_to_read_ms"]["count"] > 0
