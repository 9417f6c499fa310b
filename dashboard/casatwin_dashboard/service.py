"""Run the dashboard until SIGINT/SIGTERM: bind, serve, then close clients and readers."""

from __future__ import annotations

import asyncio
import signal
import ssl
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
    tls = tls_context(cfg.tls_cert_file, cfg.tls_key_file)
    runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True, ssl_context=tls)
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


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 at least), or None for plain HTTP."""
    if not cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(
            f"the dashboard's certificate cannot be loaded from {cert_file} ({exc})",
            hint="CASATWIN_DASHBOARD_TLS_CERT_FILE and _TLS_KEY_FILE name a PEM chain and "
            "its key; empty serves plain HTTP",
        ) from None
    return context


# The event loop gives the GIL away at every socket write (50 clients: 50 writes a tick) and
# must get it back from the bus reader threads: a shorter switch interval than the default
# 5 ms keeps that wait from adding up to tens of milliseconds per tick.
SWITCH_INTERVAL_S = 0.0005


def run(settings: Settings) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    metrics.serve(settings.dashboard.metrics_port, "dashboard")
    asyncio.run(serve(settings))
    return 0
