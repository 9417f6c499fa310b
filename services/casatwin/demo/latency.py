"""The latency budget (``casatwin bench latency-budget``): infraction to screen, hop by hop.

500 taxis of the simulator in real time against a private stack (the bench runner's
servers), the processor in this process, the dashboard as its own process and one
WebSocket client. Every infraction that reaches the client is traced back through the
timestamps the system already carries — no extra tracing messages:

====================  ==============================================================
milestone             where it comes from
====================  ==============================================================
t0 fix made           ``evidence_ts`` of the infraction = ``ts`` of the telemetry fix
                      after which it could be decided (real-time mode: wall clock)
t1 on the broker      a watcher consumer of ``casatwin.telemetry`` sees that fix
t2 Spark batch        start of the micro-batch that read it (``timestamp`` of the
                      query progress whose batch window holds ``detected_ts``)
t3 detected           ``detected_ts`` (the detector's clock, in the state function)
t4 sinks done         ``published_ts`` (stamped when registry lookup, decision, ledger
                      write are done and the message is handed to the producer)
t5 dashboard push     ``server_ts`` of the dashboard's ``infractions`` push
t6 screen             the WebSocket client receives the push
====================  ==============================================================

Hops are differences of consecutive milestones; end to end is t6 − t0. Clocks are one
host's wall clock. t1 is seen by a consumer (it includes one fetch), so a batch may start
a few ms before the watcher sees the fix it reads: the broker → Spark hop can be slightly
negative, and the sum of the hops is still exactly the end-to-end figure.

References in the same run: the watcher's own consume delay (t1 − t0 for every fix), the
floor any hop through the broker pays; and the processor's floor on the same Spark session
(:mod:`casatwin.processor.floor`: a micro-batch of its shape with no work in it, broker →
sink), with the ratio of the processor's part (t1 → t4) and of the whole to it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.processor.detectors import vehicle_of

log = get_logger("bench")

TAXIS = 500
SECONDS = 120
WARMUP_S = 20  # infractions whose evidence came in the first seconds are not counted
TARGET_P95_MS = 200
TARGET_P99_MS = 300

HOPS = (
    ("simulator → broker", "t0", "t1"),
    ("broker → Spark", "t1", "t2"),
    ("Spark processing", "t2", "t3"),
    ("sinks (lookup, decide, ledger)", "t3", "t4"),
    ("broker → dashboard push", "t4", "t5"),
    ("WebSocket receive", "t5", "t6"),
)


class ScreenClient:
    """A WebSocket client of the dashboard on its own thread: every infraction push it
    receives, with the time it arrived."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[tuple[float, float, dict[str, Any]]] = []  # (t6, t5, item)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self, timeout_s: float = 30) -> None:
        self._thread.start()
        if not self.connected.wait(timeout_s):
            raise RuntimeError(f"no WebSocket connection to {self.url}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.ws_connect(self.url) as ws:
            self.connected.set()
            while not self._stop.is_set():
                try:
                    message = await ws.receive(timeout=0.5)
                except TimeoutError:
                    continue
                now_ms = time.time() * 1000
                if message.type == aiohttp.WSMsgType.TEXT:
                    data = orjson.loads(message.data)
                    if data.get("type") == "infractions":
                        for item in data["items"]:
                            self.received.append((now_ms, data["server_ts"], item))
                elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return


def batch_starts(progress: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) in epoch ms of every micro-batch that had input, in order."""
    out = []
    for p in progress:
        if not p.get("numInputRows"):
            continue
        start = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp() * 1000
        out.append((start, start + p["durationMs"].get("triggerExecution", 0)))
    return sorted(out)


def milestones(
    item: dict[str, Any],
    t5: float,
    t6: float,
    fix_seen: dict[tuple[str, int], float],
    batches: list[tuple[float, float]],
) -> dict[str, float] | None:
    """The seven milestones of one infraction, or None when one is missing (a timer
    decided it, or its fix arrived before the watcher started)."""
    t1 = fix_seen.get((vehicle_of(item["infraction_id"]), item["evidence_ts"]))
    t3 = item["detected_ts"]
    batch = [start for start, end in batches if start <= t3 <= end + 1]
    if t1 is None or not batch or "published_ts" not in item:
        return None
    return {
        "t0": item["evidence_ts"],
        "t1": t1,
        "t2": batch[-1],
        "t3": t3,
        "t4": item["published_ts"],
        "t5": t5,
        "t6": t6,
    }


def budget_table(rows: list[dict[str, float]], reference: list[float]) -> dict[str, Any]:
    """Per hop and end to end: p50/p95/p99 (ms), and the verdict against the target."""
    from casatwin.processor.bench import percentiles

    hops = {name: percentiles([r[b] - r[a] for r in rows]) for name, a, b in HOPS}
    end_to_end = percentiles([r["t6"] - r["t0"] for r in rows])
    return {
        "hops_ms": hops,
        "end_to_end_ms": end_to_end,
        "target_ms": {"p95": TARGET_P95_MS, "p99": TARGET_P99_MS},
        "meets_target": bool(
            rows and end_to_end["p95"] <= TARGET_P95_MS and end_to_end["p99"] <= TARGET_P99_MS
        ),
        "reference_consume_delay_ms": percentiles(reference),
    }


def against_floor(rows: list[dict[str, float]], floor: dict[str, Any]) -> dict[str, Any]:
    """The processor's part (broker → sinks done, t1 → t4) and the whole at p95, over the
    stateful floor's p95."""
    from casatwin.processor.bench import percentiles
    from casatwin.processor.floor import ratio

    floor_p95 = floor["stateful"]["latency_ms"]["p95"]
    processor = percentiles([r["t4"] - r["t1"] for r in rows])
    return {
        "floor_ms": {shape: found["latency_ms"] for shape, found in floor.items()},
        "processor_ms": processor,
        "processor_p95_vs_floor": ratio(processor["p95"], floor_p95),
        "end_to_end_p95_vs_floor": ratio(percentiles([r["t6"] - r["t0"] for r in rows])["p95"],
                                         floor_p95),
    }  # fmt: skip


def render(result: dict[str, Any]) -> str:
    """The table, as the README shows it."""
    lines = [
        "| hop | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, p in result["hops_ms"].items():
        lines.append(f"| {name} | {p['p50']} | {p['p95']} | {p['p99']} |")
    e = result["end_to_end_ms"]
    lines.append(f"| **infraction → screen** | **{e['p50']}** | **{e['p95']}** | **{e['p99']}** |")
    lines.append(f"| target | | ≤ {TARGET_P95_MS} | ≤ {TARGET_P99_MS} |")
    r = result["reference_consume_delay_ms"]
    lines.append(f"| reference: a consumer's delay | {r['p50']} | {r['p95']} | {r['p99']} |")
    if "processor_ms" in result:
        p = result["processor_ms"]
        lines.append(f"| the processor's part (broker → sinks done) | {p['p50']} | {p['p95']} "
                     f"| {p['p99']} |")  # fmt: skip
        for shape, f in result["floor_ms"].items():
            lines.append(f"| floor, {shape} micro-batch | {f['p50']} | {f['p95']} | {f['p99']} |")
        lines.append(
            f"| ratio at p95: processor / floor {result['processor_p95_vs_floor']}, "
            f"end to end / floor {result['end_to_end_p95_vs_floor']} | | | |"
        )
    return "\n".join(lines)


def budget(settings: Settings, seconds: int = SECONDS) -> dict[str, Any]:
    """Benchmark ``latency-budget``: ``seconds`` of 500 taxis in real time."""
    from casatwin.processor.bench import FLOOR_SECONDS, own_checkpoints, prepare_registry
    from casatwin.processor.floor import floor
    from casatwin.processor.session import build_session

    prepare_registry(settings)
    settings = own_checkpoints(settings, "latency-budget").replace(
        simulator={"speeder_share": 0.1, "red_light_runner_share": 0.05, "realtime": True},
        processor={"starting_offsets": "latest"},
    )
    dashboard_log = settings.general.data_dir / "dashboard.log"
    spark = build_session(settings)
    try:
        rows, reference, on_screen = _trace(settings, seconds, spark, dashboard_log)
        load = round(os.getloadavg()[0], 2)
        # The floor on the same session, once the twin is down (it would share the cores).
        found = floor(spark, settings, FLOOR_SECONDS)
    finally:
        spark.stop()
    result = {
        "taxis": TAXIS,
        "seconds": seconds,
        "infractions_on_screen": on_screen,
        "infractions_traced": len(rows),
        **budget_table(rows, reference),
        **against_floor(rows, found),
        "machine_load_1m": load,
    }
    print(render(result), file=sys.stderr)
    return result


def _trace(
    settings: Settings, seconds: int, spark: Any, dashboard_log: Path
) -> tuple[list[dict[str, float]], list[float], int]:
    """The twin run for ``seconds``: the milestones of each infraction traced from fix to
    screen, the watcher's delay for each fix (the reference), the infractions on screen."""
    from casatwin.processor.bench import (
        Watcher,
        first_batch_done,
        run_simulator,
        running_processor,
    )
    from casatwin_dashboard.bench import running_dashboard

    with (
        running_dashboard(settings, dashboard_log) as port,
        running_processor(settings, spark) as app,
    ):
        url = f"ws://127.0.0.1:{port}/ws"
        query = app.running[0].query
        first_batch_done(query)
        screen = ScreenClient(url)
        screen.start()
        watcher = Watcher(settings)
        watcher.start()
        started_ms = time.time() * 1000
        print(f"{TAXIS} taxis for {seconds} s (first {WARMUP_S} s not counted)", file=sys.stderr)
        simulator = run_simulator(
            settings, "--realtime", "--taxis", str(TAXIS), "--seconds", str(seconds), wait=False
        )
        progress: dict[int, dict[str, Any]] = {}  # Spark keeps only the last 100 batches
        deadline = time.monotonic() + seconds + 120
        while simulator.poll() is None and time.monotonic() < deadline:
            progress.update((p["batchId"], p) for p in query.recentProgress)
            time.sleep(2)
        if simulator.poll() is None:
            simulator.kill()
        time.sleep(5)
        progress.update((p["batchId"], p) for p in query.recentProgress)
        watcher.stop()
        screen.stop()
    batches = batch_starts(list(progress.values()))
    since = started_ms + WARMUP_S * 1000
    rows = [
        m
        for t6, t5, item in screen.received
        if (m := milestones(item, t5, t6, watcher.fix_seen, batches)) and m["t1"] >= since
    ]
    # The reference: the watcher's own delay for every fix it saw after the warm-up.
    reference = [seen - ts for (_, ts), seen in watcher.fix_seen.items() if seen >= since]
    return rows, reference, len(screen.received)
