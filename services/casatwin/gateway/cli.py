"""``casatwin gateway``: the highway feed gateway, its fake traffic API, and fault switching."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from casatwin.config import Settings

if TYPE_CHECKING:
    from casatwin.city.model import CityPack


def register(subparsers: argparse._SubParsersAction) -> None:
    gateway = subparsers.add_parser(
        "gateway",
        help="poll the traffic API and publish highway readings (and its fake API)",
        description=(
            "Poll the traffic-management API (CASATWIN_GATEWAY_API_URL) for detector data in "
            "TMDD XML, publish each station's reading to casatwin.sensors.highway, and survive "
            "a failing API with a circuit breaker and backoff. Bad documents go to the DLQ."
        ),
    )
    gateway.add_argument(
        "--once", action="store_true", help="poll once, print what happened as JSON and exit"
    )
    gateway.set_defaults(handler=run_gateway)
    actions = gateway.add_subparsers(title="other actions", metavar="ACTION")

    fake = actions.add_parser(
        "fake-api",
        help="serve a fake traffic-management API (for make run and tests)",
        description=(
            "Serve the city pack's highway stations as TMDD detector data with plausible, "
            "time-varying values, and switchable fault modes (see `casatwin gateway fault`)."
        ),
    )
    fake.add_argument("--port", type=int, help="port (default: CASATWIN_FAKE_API_PORT)")
    fake.add_argument("--fault", help="fault mode at start (default: CASATWIN_FAKE_API_FAULT)")
    fake.add_argument(
        "--fault-count",
        type=int,
        help="requests the start fault lasts, then the API recovers (0: until switched)",
    )
    fake.add_argument("--seed", type=int, help="random seed (default: CASATWIN_FAKE_API_SEED)")
    fake.set_defaults(handler=run_fake_api)

    fault = actions.add_parser(
        "fault",
        help="switch the fake API's fault mode (or show it)",
        description=(
            "Switch the fault mode of a running fake API: none, slow, http500, timeout, "
            "disconnect, malformed, truncated, billion_laughs, bad_values. Without a mode, "
            "show the current one and the requests served."
        ),
    )
    fault.add_argument("mode", nargs="?", help="the fault mode (none: healthy again)")
    fault.add_argument(
        "--count",
        type=int,
        default=0,
        help="requests it lasts, then the API recovers (0: until switched)",
    )
    fault.add_argument("--url", help="the fake API's admin URL (default: from CASATWIN_FAKE_API_*)")
    fault.set_defaults(handler=run_fault)


def load_pack(settings: Settings) -> CityPack:
    from casatwin.city.load import load_city

    return load_city(settings.city)


def run_gateway(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.for_service("gateway")  # its own Kafka principal
    from casatwin import metrics
    from casatwin.gateway.service import Gateway, run
    from casatwin.logs import get_logger

    pack = load_pack(settings)
    stations = [s.id for s in pack.highway_stations]
    if not stations:
        get_logger("gateway").warning(
            "the city pack has no highway stations: every reading will be refused",
            pack=settings.city.pack,
        )
    if args.once:

        async def once(stop: asyncio.Event) -> None:
            gateway = Gateway(settings, stations)
            await gateway.start()
            try:
                result = await gateway.poll_once()
            finally:
                await gateway.drain()
            import orjson

            sys.stdout.write(orjson.dumps(result.__dict__).decode() + "\n")

        return _run_async(once)
    metrics.serve(settings.gateway.metrics_port, "gateway")

    async def forever(stop: asyncio.Event) -> None:
        await run(settings, stations, stop)

    return _run_async(forever)


def run_fake_api(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    from casatwin.errors import UserError
    from casatwin.gateway import faults, traffic
    from casatwin.gateway.fakeapi import FakeTrafficApi, load_admin_token, serve

    overrides = {
        name: value
        for name, value in (
            ("port", args.port),
            ("fault", args.fault),
            ("fault_count", args.fault_count),
            ("seed", args.seed),
        )
        if value is not None
    }
    config = dataclasses.replace(settings.fake_api, **overrides)
    try:
        faults.parse_mode(config.fault)
    except ValueError as exc:
        raise UserError(str(exc), hint="e.g. --fault http500 --fault-count 5") from None
    pack = load_pack(settings)
    token = load_admin_token(settings)
    api = FakeTrafficApi(traffic.profiles(pack, config.seed), config, admin_token=token)

    async def main(stop: asyncio.Event) -> None:
        try:
            await serve(api, stop)
        except OSError as exc:
            raise UserError(
                f"the fake API cannot listen on {config.host}:{config.port}: {exc.strerror}",
                hint="another process holds the port? set CASATWIN_FAKE_API_PORT "
                "(and CASATWIN_GATEWAY_API_URL to match)",
            ) from None

    return _run_async(main)


def run_fault(args: argparse.Namespace, settings: Settings) -> int:
    import urllib.error
    import urllib.request

    import orjson

    from casatwin.errors import UserError
    from casatwin.gateway.fakeapi import FAULT_PATH, load_admin_token

    host, port = settings.fake_api.host, settings.fake_api.port
    url = args.url or f"http://{host}:{port}{FAULT_PATH}"
    request = urllib.request.Request(url)
    if args.mode is not None:
        body = orjson.dumps({"mode": args.mode, "count": args.count})
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {load_admin_token(settings)}",
        }
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = orjson.loads(exc.read() or b"{}")
        raise UserError(
            detail.get("error", f"HTTP {exc.code}"),
            hint="for example: casatwin gateway fault http500 --count 5",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"cannot reach the fake API at {url}: {reason}",
            hint="is it running? `make run` starts it; CASATWIN_FAKE_API_PORT says where",
        ) from None
    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _run_async(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``main(stop)`` until it returns; SIGINT/SIGTERM set ``stop`` for a clean drain."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(wrapper())
    return 0
