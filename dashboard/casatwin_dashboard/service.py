"""Run the dashboard until SIGINT/SIGTERM: bind, serve, then close clients and readers."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from casatwin import metrics
from casatwin.config import Settings
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin_dashboard.app import create_app
from casatwin_dashboard.cli import url

log = get_logger("dashboard")


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    cfg = settings.dashboard
    runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(
            f"the dashboard cannot listen on {cfg.host}:{cfg.port} ({exc.strerror})",
            hint="another program uses that port; choose another with CASATWIN_DASHBOARD_PORT",
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("dashboard ready", url=url(settings), kiosk=url(settings) + "kiosk")
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("dashboard stopping")
        await runner.cleanup()


# The event loop gives the GIL away at every socket write (50 clients: 50 writes a tick) and
# must get it back from the bus reader threads: a shorter switch interval than the default
# 5 ms keeps that wait from adding up to tens of milliseconds per tick.
SWITCH_INTERVAL_S = 0.0005


def run(settings: Settings) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    metrics.serve(settings.dashboard.metrics_port, "dashboard")
    asyncio.run(serve(settings))
    return 0
