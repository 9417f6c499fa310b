"""The fake traffic-management API: a real HTTP server serving the city's highway stations.

Endpoints::

    GET  /tmdd/detector-data   the TMDD detector data document (see tmdd.py), or a fault
    GET  /admin/fault          the current fault mode, the modes and the requests served
    POST /admin/fault          switch: {"mode": "http500", "count": 5}  (count 0: until switched),
                               with ``Authorization: Bearer <the admin token>``
    GET  /                     this list, as JSON

Switching faults breaks the feed on purpose, so it takes the admin token, a secret file
(:func:`admin_token_path`: the devstack generates it, the appliance's vault provides it).

It stands in for a system outside CasaTwin (a motorway operator's traffic-management
centre), so it is the one place where a fake is right; it is a real aiohttp server on
loopback so that the gateway's HTTP client, timeouts and parser are exercised for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from casatwin.config import FakeApiSettings, Settings
from casatwin.errors import UserError
from casatwin.gateway import faults, tmdd, traffic
from casatwin.gateway.faults import FaultMode, FaultSwitch
from casatwin.logs import get_logger
from casatwin.secretfiles import read_secret

log = get_logger("fakeapi")

DATA_PATH = "/tmdd/detector-data"
FAULT_PATH = "/admin/fault"
XML = "application/xml"
ADMIN_TOKEN_WHAT = "fake traffic API's admin token"


def admin_token_path(settings: Settings) -> Path:
    return settings.fake_api.token_file(settings.general.data_dir)


def load_admin_token(settings: Settings) -> str:
    """The admin token from its file; a :class:`UserError` says what is missing."""
    return read_secret(admin_token_path(settings), ADMIN_TOKEN_WHAT).decode()


class FakeTrafficApi:
    """The server; ``start()`` binds it, ``stop()`` closes it (requests in flight end)."""

    def __init__(
        self,
        stations: list[traffic.StationProfile],
        settings: FakeApiSettings,
        clock: Callable[[], float] = time.time,
        *,
        admin_token: str,
    ) -> None:
        if settings.period_s < 0.001:
            raise UserError(
                f"CASATWIN_FAKE_API_PERIOD_S={settings.period_s:g} is not a reporting period",
                hint="set it to the seconds between two detector reports, e.g. 20",
            )
        self.stations = stations
        self.settings = settings
        self.clock = clock  # epoch seconds; tests shift it to get readings of their own
        self._admin_token = f"Bearer {admin_token}".encode()
        self.faults = FaultSwitch()
        self.faults.set(faults.parse_mode(settings.fault), settings.fault_count)
        self.requests: Counter[str] = Counter()  # data requests served, by fault mode
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.port = settings.port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}{DATA_PATH}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}{FAULT_PATH}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get(DATA_PATH, self._detector_data)
        app.router.add_get(FAULT_PATH, self._get_fault)
        app.router.add_post(FAULT_PATH, self._set_fault)
        return app

    async def start(self) -> None:
        # handler_cancellation: a client that gives up ends a `timeout` request at once
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        self._stopping.clear()
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        if self.port == 0:  # an ephemeral port: read back the one the system chose
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info(
            "fake traffic API ready",
            url=self.url,
            stations=len(self.stations),
            fault=self.faults.mode.value,
            switch_faults=f"casatwin gateway fault MODE (or POST {self.admin_url})",
        )

    async def stop(self) -> None:
        self._stopping.set()  # requests held by `slow` and `timeout` end now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hold(self, seconds: float) -> None:
        """Wait ``seconds`` before answering, or less if the server is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- the document -------------------------------------------------------------------

    def document(self) -> bytes:
        """The healthy document at this moment."""
        return tmdd.render(self._snapshot())

    def _snapshot(self) -> list[tmdd.StationValues]:
        return traffic.snapshot(
            self.stations, self.clock(), self.settings.period_s, self.settings.seed
        )

    async def _detector_data(self, request: web.Request) -> web.StreamResponse:
        mode = self.faults.next_request()
        self.requests[mode.value] += 1
        headers = {"X-Fault-Mode": mode.value}
        if mode is FaultMode.SLOW:
            await self._hold(self.settings.slow_s)
        elif mode is FaultMode.TIMEOUT:
            await self._hold(self.settings.hang_s)
        elif mode is FaultMode.HTTP500:
            return web.Response(status=500, text="internal error (fault mode http500)\n")
        elif mode is FaultMode.DISCONNECT:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing more to do for a dropped connection
        body = {
            FaultMode.MALFORMED: lambda: faults.malformed(self.document()),
            FaultMode.TRUNCATED: lambda: faults.truncated(self.document()),
            FaultMode.BILLION_LAUGHS: lambda: faults.BILLION_LAUGHS,
            FaultMode.BAD_VALUES: lambda: tmdd.render(faults.bad_values(self._snapshot())),
        }.get(mode, self.document)()
        return web.Response(body=body, content_type=XML, charset="utf-8", headers=headers)

    # -- admin ----------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "service": "CasaTwin fake traffic-management API (TMDD detector data)",
                "endpoints": {
                    f"GET {DATA_PATH}": "detector data, TMDD XML",
                    f"GET {FAULT_PATH}": "current fault mode and request counts",
                    f"POST {FAULT_PATH}": 'switch faults: {"mode": "http500", "count": 5}',
                },
                "stations": [s.station_id for s in self.stations],
            }
        )

    async def _get_fault(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.faults.as_dict(),
                "modes": {m.value: d for m, d in faults.DESCRIPTIONS.items()},
                "requests": dict(self.requests),
            }
        )

    async def _set_fault(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._admin_token):
            log.warning("fault switch refused: no valid admin token", client=request.remote)
            return web.json_response(
                {
                    "error": "switching faults needs the admin token",
                    "hint": "`casatwin gateway fault MODE` sends it; or send the header "
                    "Authorization: Bearer <the token in the admin token file>",
                },
                status=401,
            )
        try:
            body = await request.json()
            if not isinstance(body, dict) or "mode" not in body:
                raise ValueError('expected a JSON object like {"mode": "http500", "count": 5}')
            mode = faults.parse_mode(str(body["mode"]))
            count = body.get("count", 0)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError("count must be a whole number >= 0 (0: until switched)")
        except ValueError as exc:  # includes JSON decoding errors
            return web.json_response(
                {"error": str(exc), "modes": [m.value for m in FaultMode]}, status=400
            )
        self.faults.set(mode, count)
        lasts = "until switched" if self.faults.remaining is None else f"{count} request(s)"
        log.info("fault mode switched", mode=mode.value, lasts=lasts)
        return web.json_response(self.faults.as_dict())


async def serve(api: FakeTrafficApi, stop: asyncio.Event) -> None:
    """Run ``api`` until ``stop`` is set."""
    await api.start()
    try:
        await stop.wait()
    finally:
        await api.stop()
        log.info("fake traffic API stopped", requests=sum(api.requests.values()))
