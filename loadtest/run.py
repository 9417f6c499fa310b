"""``make loadtest``: a private stack, the dashboard, Locust headless, a report.

Starts a broker, the read-model server and MariaDB on free ports (as ``make bench`` does),
seeds the history with infractions, starts the dashboard on a free port, runs Locust with a
bounded number of users for a bounded time, and writes ``loadtest/reports/<UTC time>/``:
Locust's CSV files and HTML report plus ``summary.json`` (p50/p95/p99 per request, the
machine's load average). Usage: ``python -m loadtest.run [--users N] [--duration S]``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from casatwin.benchmarks import private_stack
from casatwin.config import Settings, load
from casatwin.devstack.servers import free_port
from casatwin.errors import UserError
from casatwin.readmodel.store import connect, upsert_infractions
from casatwin_dashboard.bench import running_dashboard
from loadtest.messages import infraction

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SEED_INFRACTIONS = 2000
PERCENTILES = ("50%", "95%", "99%")


def seed_history(settings: Settings, count: int) -> None:
    """``count`` infractions over the last day, so the history API has pages to serve."""
    now_ms = int(time.time() * 1000)
    docs = [infraction(now_ms - i * 43_000) for i in range(count)]
    upsert_infractions(connect(settings.mongo), docs)


def run_locust(settings: Settings, out: Path, users: int, spawn_rate: float, seconds: int) -> int:
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO)}
    command = [
        str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless",
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", f"{seconds}s",
        "--host", f"http://127.0.0.1:{settings.dashboard.port}", "--stop-timeout", "5",
        "--csv", str(out / "locust"), "--html", str(out / "report.html"),
        "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    with open(out / "locust.log", "wb") as log_file:
        result = subprocess.run(
            command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            timeout=seconds + 120, check=False,
        )  # fmt: skip
    return result.returncode


def read_stats(path: Path) -> list[dict[str, Any]]:
    """Locust's ``*_stats.csv`` → one row per request name, the figures that matter."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({
                "type": row["Type"], "name": row["Name"],
                "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                "per_s": round(float(row["Requests/s"]), 1),
                **{f"p{p[:-1]}_ms": _number(row[p]) for p in PERCENTILES},
            })  # fmt: skip
    return rows


def hop_figures(metrics_text: str, hop: str) -> dict[str, float | None]:
    """Count and p50/p95/p99 (ms, interpolated in the buckets as Prometheus's
    ``histogram_quantile`` does) of ``casatwin_hop_seconds{hop=...}`` in a /metrics page."""
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "casatwin_hop_seconds":
            buckets = sorted(
                (float(sample.labels["le"]), sample.value)
                for sample in family.samples
                if sample.name.endswith("_bucket") and sample.labels.get("hop") == hop
            )
    total = buckets[-1][1] if buckets else 0.0
    figures: dict[str, float | None] = {"count": total}
    for q in (0.5, 0.95, 0.99):
        figures[f"p{round(q * 100)}_ms"] = _quantile(buckets, q * total) if total else None
    return figures


def _quantile(buckets: list[tuple[float, float]], rank: float) -> float:
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_le * 1000
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1
            return round((lower_le + (le - lower_le) * share) * 1000, 1)
        lower_le, lower_count = le, count
    return lower_le * 1000


def _number(text: str) -> float | None:
    return None if text in ("", "N/A") else float(text)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'type':<5} {'name':<40} {'n':>7} {'fail':>5} {'/s':>7} "
             f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"]  # fmt: skip
    for r in rows:
        cells = [f"{r[k]:>8.0f}" if r[k] is not None else f"{'-':>8}" for k in
                 ("p50_ms", "p95_ms", "p99_ms")]  # fmt: skip
        lines.append(f"{r['type']:<5} {r['name'][:40]:<40} {r['requests']:>7} "
                     f"{r['failures']:>5} {r['per_s']:>7} {' '.join(cells)}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__)
    parser.add_argument("--users", type=int, default=40, help="simulated users (default 40)")
    parser.add_argument("--spawn-rate", type=float, default=10, help="users started per s")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--out", type=Path, help="report directory (default loadtest/reports/)")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 500 or not 5 <= args.duration <= 1800:
        print("loadtest: --users must be 1..500 and --duration 5..1800 s", file=sys.stderr)
        return 2
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or REPO / "loadtest" / "reports" / stamp
    out.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port()
    with (
        private_stack(load(), "casatwin-loadtest-") as (private, _stack),
        running_dashboard(private, out / "dashboard.log", metrics_port) as port,
    ):
        settings = private.replace(dashboard={"port": port, "metrics_port": metrics_port})
        print(f"private stack up; seeding {SEED_INFRACTIONS} infractions", file=sys.stderr)
        seed_history(settings, SEED_INFRACTIONS)
        print(f"locust: {args.users} users for {args.duration} s; report in {out}",
              file=sys.stderr)  # fmt: skip
        load_before = os.getloadavg()
        code = run_locust(settings, out, args.users, args.spawn_rate, args.duration)
        load_after = os.getloadavg()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            server_side = hop_figures(response.read().decode(), "event_to_dashboard")
    stats_path = out / "locust_stats.csv"
    if not stats_path.exists():
        raise UserError("Locust wrote no statistics", hint=f"see {out / 'locust.log'}")
    rows = read_stats(stats_path)
    summary = {
        "users": args.users, "duration_s": args.duration, "locust_exit": code,
        "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after], "requests": rows,
        "dashboard_event_to_read_ms": server_side,
    }  # fmt: skip
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print(table(rows))
    print(f"dashboard's own view (casatwin_hop_seconds, event_ts → read from the bus): "
          f"{server_side}")  # fmt: skip
    print(f"load average 1/5/15 min after: {' '.join(f'{x:.2f}' for x in load_after)} "
          f"({os.cpu_count()} CPUs); report: {out / 'report.html'}")  # fmt: skip
    return 0 if code == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"loadtest: error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
