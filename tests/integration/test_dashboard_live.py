"""The live dashboard against the real broker and the real WebSocket server."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import orjson
import pytest

from casatwin.bus import topics
from casatwin.bus.producer import Producer
from casatwin_dashboard.fanout import CLOSE_TOO_SLOW
from casatwin_dashboard.loadgen import FleetFeeder, SyntheticFleet
from casatwin_dashboard.positions import decode_frame
from casatwin_dashboard.privacy import public_infraction
from tests.dashboard_support import running_dashboard, sample_infraction, until

pytestmark = pytest.mark.integration


@pytest.fixture
def live_settings(stack_settings, grid_pack):
    return stack_settings.replace(
        city={"pack": str(grid_pack)},
        dashboard={"position_hz": 4.0, "metrics_port": 0},
    )


def publish(settings, messages, topic=topics.INFRACTIONS):
    producer = Producer(settings.kafka, "test-dashboard")
    for message in messages:
        key = message.get("vehicle", {}).get("vehicle_id") or message.get("unit_id")
        producer.send_json(topic, message, key=key)
    assert producer.flush(10) == 0


async def receive_until(ws, predicate, timeout_s=20.0):
    """Messages (decoded) until one satisfies ``predicate``; that one."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type == aiohttp.WSMsgType.TEXT:
            data = orjson.loads(message.data)
            if predicate(data):
                return data
        elif message.type == aiohttp.WSMsgType.BINARY:
            data = {"type": "positions", "frame": decode_frame(message.data)}
            if predicate(data):
                return data
        else:
            raise AssertionError(f"socket closed: {message}")


def test_infraction_reaches_a_websocket_client_with_all_its_fields(live_settings):
    sent = sample_infraction()

    async def scenario():
        async with (
            running_dashboard(live_settings) as (_dash, url),
            aiohttp.ClientSession() as http,
        ):
            ws = await http.ws_connect(f"{url}/ws?view=kiosk")
            hello = await receive_until(ws, lambda m: True)
            assert hello["type"] == "hello" and hello["view"] == "kiosk"
            snapshot = await receive_until(ws, lambda m: True)
            assert snapshot["type"] == "snapshot"
            assert {u["unit_id"] for u in snapshot["units"]} == {
                "PU-SW-1", "PU-SW-2", "PU-NE-1", "PU-NE-2",
            }  # fmt: skip
            publish(live_settings, [sent])
            update = await receive_until(
                ws,
                lambda m: (
                    m["type"] == "infractions"
                    and any(i["infraction_id"] == sent["infraction_id"] for i in m["items"])
                ),
            )
            await ws.close()
            return next(i for i in update["items"] if i["infraction_id"] == sent["infraction_id"])

    got = asyncio.run(scenario())
    # The live feed is public: what anyone may see arrives unchanged, the rest not at all.
    assert got == public_infraction(sent) and got["identity"] == "masked"
    for field in ("type", "event_ts", "lat", "lon", "measured", "limit", "district"):
        assert got[field] == sent[field], field
    assert got["decision"]["fine_mad"] == 700 and "points_after" not in got["decision"]
    assert got["driver"] == {"on_record": True}
    assert sent["driver"]["ref"] not in orjson.dumps(got).decode()


def test_positions_snapshot_then_coalesced_updates(live_settings):
    """A client gets every vehicle once known, then frames of changes; ids travel once."""

    async def scenario():
        async with running_dashboard(live_settings) as (dash, url), aiohttp.ClientSession() as http:
            fleet = SyntheticFleet(dash.pack, 300)
            feeder = FleetFeeder(live_settings.kafka, fleet, hz=2.0).start()
            try:
                await until(lambda: dash.hub.positions.count_alive() >= 300, 20, "fleet seen")
                ws = await http.ws_connect(f"{url}/ws")
                known: dict[int, str] = {}
                seen: set[int] = set()
                deadline = time.monotonic() + 20
                while len(seen) < 300 and time.monotonic() < deadline:
                    message = await ws.receive(timeout=5)
                    if message.type == aiohttp.WSMsgType.BINARY:
                        frame = decode_frame(message.data)
                        assert set(frame.index.tolist()) <= set(known), "index before its id"
                        seen |= set(frame.index.tolist())
                    else:
                        data = orjson.loads(message.data)
                        if data["type"] in ("snapshot", "vehicles"):
                            items = data["vehicles" if data["type"] == "snapshot" else "items"]
                            known.update({i: vid for i, vid, _ in items})
                await ws.close()
                return {known[i] for i in seen}
            finally:
                feeder.stop()

    ids = asyncio.run(scenario())
    assert {f"TX-{i:05d}" for i in range(1, 301)} <= ids


def stalling_socket(addr_info):
    """A client socket with a tiny receive buffer: once it stops reading, it is full."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def test_a_stalled_client_does_not_delay_the_others_and_is_disconnected_with_a_reason(
    live_settings,
):
    settings = live_settings.replace(
        dashboard={"stall_timeout_s": 4.0, "queue_max_messages": 50, "send_buffer_kb": 32}
    )
    burst = [sample_infraction(n) for n in range(20)]

    async def scenario():
        async with running_dashboard(settings) as (dash, url):
            fleet = SyntheticFleet(dash.pack, 3000)
            feeder = FleetFeeder(settings.kafka, fleet, hz=2.0).start()
            healthy_http = aiohttp.ClientSession()
            stalled_http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(socket_factory=stalling_socket)
            )
            try:
                healthy = await healthy_http.ws_connect(f"{url}/ws")
                stalled = await stalled_http.ws_connect(f"{url}/ws", max_msg_size=0)
                # The stalled client reads nothing from now on: wait until its writer is stuck.
                stuck = await until(
                    lambda: any(
                        c.stalled_for(time.monotonic()) > 0.5 for c in dash.hub.fanout.clients
                    ),
                    30,
                    "a writer stuck on the stalled client",
                )
                assert stuck
                publish(settings, burst)
                wanted = {m["infraction_id"] for m in burst}
                got: set[str] = set()
                while wanted - got:
                    update = await receive_until(healthy, lambda m: m["type"] == "infractions")
                    got |= {i["infraction_id"] for i in update["items"]}
                healthy_done_at = time.time()
                assert not dash.hub.fanout.dropped, "the stalled client was dropped too early"
                # Then the stalled client is disconnected, with a reason it can read.
                await until(lambda: dash.hub.fanout.dropped, 30, "the stalled client dropped")
                drop = dash.hub.fanout.dropped[0]
                close = None
                deadline = time.monotonic() + 15
                while close is None and time.monotonic() < deadline:
                    message = await stalled.receive(timeout=5)
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        close = (stalled.close_code, message.extra)
                healthy_still_open = not healthy.closed
                await healthy.close()
                return healthy_done_at, drop, close, healthy_still_open
            finally:
                feeder.stop()
                await healthy_http.close()
                await stalled_http.close()

    healthy_done_at, drop, close, healthy_still_open = asyncio.run(scenario())
    assert healthy_done_at < drop["at"]
    assert "too slow" in drop["reason"]
    assert close is not None and close[0] == CLOSE_TOO_SLOW
    assert "too slow" in (close[1] or "")
    assert healthy_still_open


def test_a_restarted_dashboard_shows_the_recent_past_and_live_units_and_congestion(
    live_settings,
):
    """Infractions published while no dashboard ran are in the next one's snapshot; dispatch
    and congestion updates reach clients as `units` and `congestion` messages."""
    before = sample_infraction()
    publish(live_settings, [before])
    event = {
        "dispatch_id": "d-live", "infraction_id": before["infraction_id"], "unit_id": "PU-NE-1",
        "status": "en_route", "ts": before["event_ts"] + 1000, "eta_s": 180.0,
        "route": [[33.58, -7.63], [33.59, -7.62]],
    }  # fmt: skip
    window = {
        "key": "s0003", "scope": "segment", "window_start": before["event_ts"] - 300_000,
        "window_end": before["event_ts"], "count": 9, "avg_speed_kmh": 7.5,
        "min_speed_kmh": 0.0, "max_speed_kmh": 30.0, "level": "severe", "anomaly": True,
    }  # fmt: skip

    async def scenario():
        async with running_dashboard(live_settings) as (_, url), aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{url}/ws")
            snapshot = await receive_until(ws, lambda m: m["type"] == "snapshot")
            publish(live_settings, [event], topics.DISPATCH)
            units = await receive_until(ws, lambda m: m["type"] == "units")
            publish(live_settings, [window], topics.CONGESTION)
            congestion = await receive_until(
                ws,
                lambda m: (
                    m["type"] == "congestion" and any(w["key"] == "s0003" for w in m["items"])
                ),
            )
            stats = await receive_until(ws, lambda m: m["type"] == "stats")
            await ws.close()
            return snapshot, units, congestion, stats

    snapshot, units, congestion, stats = asyncio.run(scenario())
    assert before["infraction_id"] in {i["infraction_id"] for i in snapshot["infractions"]}
    unit = next(u for u in units["items"] if u["unit_id"] == "PU-NE-1")
    assert unit["status"] == "en_route" and unit["route"] == event["route"]
    assert unit["infraction_id"] == before["infraction_id"]
    level = next(w for w in congestion["items"] if w["key"] == "s0003")
    assert level["level"] == "severe" and level["anomaly"] is True
    assert stats["units_available"] == stats["units_total"] - 1
    assert stats["congested"] >= 1 and len(stats["history"]["infractions"]) == 60
