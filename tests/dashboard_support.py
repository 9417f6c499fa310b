"""Helpers of the dashboard tests: sample messages, the app on a free port, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from casatwin.config import Settings
from casatwin.devstack.servers import free_port
from casatwin_dashboard.app import DASHBOARD, Dashboard, create_app


def sample_infraction(n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A contract-valid infraction as the processor publishes it (a pseudonymous driver)."""
    now = int(time.time() * 1000)
    message = {
        "infraction_id": f"inf-{uuid.uuid4().hex[:10]}-{n}",
        "type": "speeding",
        "event_ts": now - 300,
        "detected_ts": now - 200,
        "published_ts": now - 100,
        "lat": 33.5891,
        "lon": -7.6210,
        "segment_id": "s0001",
        "measured": 92.0,
        "limit": 60.0,
        "vehicle": {"vehicle_id": "TX-00042", "plate": "12345-A-6", "kind": "taxi_petit"},
        "driver": {"ref": "drv-3f1c9a0b7d2e4c6a8b10"},
        "decision": {
            "class": 1,
            "fine_mad": 700,
            "reduced_24h": 400,
            "reduced_15d": 500,
            "points": 4,
            "court": False,
            "legal_basis": "Art. 219 et 222, loi 52-05",
            "points_before": 30,
            "points_after": 26,
            "licence_status_after": "valid",
            "court_reasons": [],
        },
        "dispatch_required": True,
        "district": "Maârif",
    }
    message.update(overrides)
    return message


def operator_command(
    settings: Settings, action: str, name: str, *extra: str, password: str = ""
) -> subprocess.CompletedProcess[str]:
    """``casatwin dashboard <action> <name>`` in its own process, the password on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "casatwin.cli", "dashboard", action, name, *extra],
        input=password + "\n",
        capture_output=True,
        text=True,
        env={**settings.as_env(), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )


@contextlib.asynccontextmanager
async def running_dashboard(
    settings: Settings,
    read_bus: bool = True,
    *,
    clock: Callable[[], float] = time.time,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[Dashboard, str]]:
    """The real application on a free port: (its shared state, its base URL)."""
    app = create_app(settings, read_bus=read_bus, clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls)
    await site.start()
    try:
        dash = app[DASHBOARD]
        if read_bus:
            await until(lambda: all(f.status.state == "reading" for f in dash.hub.feeds), 20)
        yield dash, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], Any], timeout_s: float, what: str = "") -> Any:
    """Poll ``condition`` until truthy; its value, or an AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s} s: {what or condition}")
        await asyncio.sleep(0.05)
