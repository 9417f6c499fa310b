"""Benchmark ``dashboard-fanout``: 50 WebSocket clients × 13,000 vehicles at 2 Hz.

The dashboard runs as its own process (as in production) against the benchmark's broker;
a synthetic fleet of 13,000 vehicles publishes telemetry at 2 Hz. Push latency is the time
from a positions frame's timestamp (stamped at the tick that made it) to its arrival at a
client, measured over every frame every client receives:

1. reference: one client alone, same load;
2. 50 clients at once: p50/p95/p99, frames per client, clients dropped;
3. render: the kiosk in headless Chromium, time to draw one update of every vehicle.

Target (design): p95 ≤ 100 ms with 50 clients and none dropped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from casatwin.config import Settings
from casatwin.devstack.servers import free_port, port_is_open
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin_dashboard.fanout import CLOSE_TOO_SLOW
from casatwin_dashboard.positions import HEADER

log = get_logger("bench")

VEHICLES = 13_000
HZ = 2.0
CLIENTS = 50
WARMUP_S = 8.0
REFERENCE_S = 10.0
MEASURE_S = 20.0
RENDER_S = 12.0


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    a = np.array(samples)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
        "max_ms": round(float(a.max()), 1),
    }


async def _client(
    http: aiohttp.ClientSession,
    url: str,
    ready: asyncio.Barrier,
    seconds: float,
    out: dict[str, Any],
) -> None:
    """Connect, take the snapshot, wait for every client to be there, then measure."""
    async with http.ws_connect(url, max_msg_size=0) as ws:
        while True:  # the snapshot and the first (full) frame: connection cost, not push
            message = await ws.receive(timeout=60)
            if message.type == aiohttp.WSMsgType.BINARY:
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                out["dropped"] += 1
                return
        out["connected_s"] = time.monotonic() - out["started"]
        await ready.wait()
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                message = await ws.receive(timeout=max(0.05, until - time.monotonic()))
            except TimeoutError:
                break
            if message.type == aiohttp.WSMsgType.BINARY:
                frame_ts = struct.unpack_from("<d", message.data, 8)[0]
                out["latency"].append(time.time() * 1000 - frame_ts)
                out["frames"] += 1
                out["vehicles"] = max(out["vehicles"], HEADER.unpack_from(message.data)[3])
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                if ws.close_code == CLOSE_TOO_SLOW:
                    out["dropped"] += 1
                break


async def measure_clients(url: str, clients: int, seconds: float) -> dict[str, Any]:
    started = time.monotonic()
    results = [
        {"latency": [], "frames": 0, "vehicles": 0, "dropped": 0, "started": started}
        for _ in range(clients)
    ]
    ready = asyncio.Barrier(clients)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(_client(http, url, ready, seconds, r) for r in results))
    latency = [x for r in results for x in r["latency"]]
    frames = [r["frames"] for r in results]
    return {
        "clients": clients,
        **percentiles(latency),
        "frames_per_client_min": min(frames),
        "frames_per_client_max": max(frames),
        "vehicles_per_frame_max": max(r["vehicles"] for r in results),
        "dropped": sum(r["dropped"] for r in results),
        "all_connected_s": round(max(r.get("connected_s", 0.0) for r in results), 2),
    }


async def server_push(url: str) -> dict[str, Any]:
    """The dashboard's own view: tick → frame handed to each socket (last 5,000 pushes)."""
    async with aiohttp.ClientSession() as http, http.get(url + "api/health") as response:
        return (await response.json())["push_ms"]


async def measure_render(url: str, seconds: float) -> dict[str, Any]:
    from casatwin_dashboard.browser import Chromium

    async with Chromium(1600, 900) as browser:
        await browser.navigate(url + "kiosk")
        await browser.wait_for(f"window.__casatwin?.vehiclesOnMap() >= {VEHICLES * 0.95}", 60)
        await asyncio.sleep(2)
        await browser.evaluate("window.__casatwin.map.renderTimes.length = 0")
        await asyncio.sleep(seconds)
        stats = await browser.evaluate("window.__casatwin.renderStats()")
        frame_ms = await browser.evaluate(
            "(() => { const s = window.__casatwin.state; return s.frameBytes; })()"
        )
    return {
        "vehicles_drawn": stats["vehicles"],
        "draws": stats["samples"],
        "draw_p50_ms": round(stats["p50"], 2) if stats["p50"] is not None else None,
        "draw_p95_ms": round(stats["p95"], 2) if stats["p95"] is not None else None,
        "frame_bytes": frame_ms,
    }


def stop(process: subprocess.Popen[bytes] | None) -> dict[str, Any]:
    """Interrupt the feeder; its report (rounds, late rounds, delivered messages)."""
    if process is None:
        return {}
    process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return {"error": "feeder did not stop"}
    try:
        return orjson.loads(out.strip().splitlines()[-1])
    except (IndexError, orjson.JSONDecodeError):
        return {"error": "no report"}


@contextmanager
def running_dashboard(settings: Settings, log_path: Path, metrics_port: int = 0) -> Iterator[int]:
    """``casatwin dashboard`` as its own process (as in production) on a free port, its
    output appended to ``log_path``; yields the port once it accepts connections.
    ``metrics_port``: where it serves /metrics (0: not at all)."""
    port = free_port()
    settings = settings.replace(
        dashboard={"port": port, "metrics_port": metrics_port, "host": "127.0.0.1"}
    )
    env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "casatwin.cli", "dashboard"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not port_is_open("127.0.0.1", port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise UserError("the dashboard did not start", hint=f"see {log_path}")
            time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def fanout(settings: Settings) -> dict[str, Any]:
    env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
    log_path = settings.general.data_dir / "bench-dashboard.log"
    feeder = None
    with running_dashboard(settings, log_path) as port, open(log_path, "ab") as log_file:
        url = f"http://127.0.0.1:{port}/"
        ws_url = f"ws://127.0.0.1:{port}/ws"
        try:
            # The feeder is a process of its own: its CPU must not slow the clients' reads.
            feeder = subprocess.Popen(
                [sys.executable, "-m", "casatwin_dashboard.loadgen", str(VEHICLES), str(HZ), "900"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
            print(f"feeding {VEHICLES} vehicles at {HZ:g} Hz; warming up", file=sys.stderr)
            time.sleep(WARMUP_S)
            print("reference: one client", file=sys.stderr)
            alone = asyncio.run(measure_clients(ws_url, 1, REFERENCE_S))
            print(f"{CLIENTS} clients", file=sys.stderr)
            many = asyncio.run(measure_clients(ws_url, CLIENTS, MEASURE_S))
            server_side = asyncio.run(server_push(url))
            try:
                print("render in headless Chromium", file=sys.stderr)
                render: dict[str, Any] = asyncio.run(measure_render(url, RENDER_S))
            except (UserError, TimeoutError) as exc:
                render = {"skipped": str(exc)}
        finally:
            feeder_report = stop(feeder)
    ratio = (
        round(many["p95_ms"] / alone["p95_ms"], 2) if many["p95_ms"] and alone["p95_ms"] else None
    )
    return {
        "vehicles": VEHICLES,
        "position_hz": HZ,
        "clients": CLIENTS,
        "push_latency": many,
        "reference_one_client": alone,
        "p95_ratio_to_one_client": ratio,
        "server_push_ms_last_5000": server_side,
        "target_p95_ms": 100,
        "meets_target": bool(many["p95_ms"] is not None and many["p95_ms"] <= 100)
        and many["dropped"] == 0,
        "render": render,
        "feeder": feeder_report,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
