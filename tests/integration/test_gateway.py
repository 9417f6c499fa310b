"""The gateway against the real fake API (aiohttp on loopback) and the real broker.

Every test runs the fake API and the gateway in one event loop with short intervals. Each
test shifts the fake API's clock by a random number of days into the past, so that the
(station, timestamp) pairs it produces are its own among everything the session's broker
holds; counting them on the topic shows whether anything was published twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY

from casatwin.bus import consumer, dlq, messages, topics
from casatwin.city import load, synthetic
from casatwin.config import FakeApiSettings, Settings
from casatwin.devstack.servers import free_port
from casatwin.gateway import faults, traffic
from casatwin.gateway.breaker import BreakerState
from casatwin.gateway.fakeapi import FakeTrafficApi
from casatwin.gateway.service import Gateway, published_keys

pytestmark = pytest.mark.integration

PACK = load.from_dict(synthetic.grid(3, 3, motorway=True))
STATIONS = [s.id for s in PACK.highway_stations]
PROFILES = traffic.profiles(PACK, seed=11)
THRESHOLD = 3
OPEN, CLOSED = BreakerState.OPEN, BreakerState.CLOSED
ADMIN_TOKEN = "the fake API's admin token of these tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def gateway_settings(base: Settings, api_url: str, **overrides: object) -> Settings:
    return base.replace(
        gateway={
            "api_url": api_url,
            "poll_interval_s": 0.05,
            "request_timeout_s": 0.5,
            "breaker_failure_threshold": THRESHOLD,
            "breaker_open_s": 0.4,
            "breaker_half_open_probes": 1,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
            "metrics_port": 0,
            **overrides,
        }
    )


def past_clock(frozen: bool = False) -> Callable[[], float]:
    """A clock some random days back (and stopped, if ``frozen``): readings of this test only."""
    shift = random.randint(2, 5000) * 86_400 + random.random() * 86_400
    if frozen:
        instant = time.time() - shift
        return lambda: instant
    return lambda: time.time() - shift


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def fake_api(
    clock: Callable[[], float], port: int = 0, **config: object
) -> AsyncIterator[FakeTrafficApi]:
    settings = FakeApiSettings(
        **{"port": port, "period_s": 0.25, "slow_s": 0.1, "hang_s": 5.0, **config}
    )
    api = FakeTrafficApi(PROFILES, settings, clock=clock, admin_token=ADMIN_TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway polling in the background; on exit it must still be running, then drains."""
    gateway = Gateway(settings, STATIONS)
    await gateway.start()
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run_until(stop))
    try:
        yield gateway
        assert not task.done(), "the gateway's poll loop ended on its own"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await gateway.drain()


async def switch(api: FakeTrafficApi, mode: str, count: int = 0) -> None:
    """Switch the fault mode through the admin endpoint, as an operator would."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.admin_url, json={"mode": mode, "count": count}, headers=ADMIN) as response,
    ):
        assert response.status == 200, await response.text()


def published_counts(settings: Settings, clock: Callable[[], float]) -> Counter:
    """How many times each (station, ts) of this test's time range is on the topic."""
    now_ms = clock() * 1000
    keys = published_keys(settings.kafka, capacity=10**7)
    return Counter((s, ts) for s, ts in keys if abs(ts - now_ms) < 3_600_000)


def dead_letters(settings: Settings, stage: str, since_ms: int) -> list[dict]:
    reader = consumer.reader(settings.kafka, [topics.DLQ], "test-gateway-dlq", start="earliest")
    try:
        found = consumer.read_to_end(reader, timeout_s=10)
    finally:
        reader.close()
    letters = [orjson.loads(m.value()) for m in found]
    return [x for x in letters if x["stage"] == stage and x["ts"] >= since_ms]


def states(gateway: Gateway) -> list[tuple[str, str]]:
    return [(t.before.value, t.after.value) for t in gateway.transitions]


# -- healthy feed -----------------------------------------------------------------------


def test_healthy_feed_publishes_every_reading_exactly_once(broker_settings):
    clock = past_clock()

    async def scenario():
        async with fake_api(clock) as api:
            settings = gateway_settings(broker_settings, api.url)
            async with running_gateway(settings) as gateway:
                await until(
                    lambda: (
                        gateway.stats.published >= 3 * len(STATIONS)
                        and gateway.stats.duplicates > 0
                    ),
                    "three periods of readings, some served twice",
                )
            return settings, gateway

    settings, gateway = asyncio.run(scenario())
    counts = published_counts(settings, clock)
    assert counts, "nothing reached the topic"
    assert set(counts.values()) == {1}, "a reading was published twice"
    assert sum(counts.values()) == gateway.stats.published
    assert {station for station, _ in counts} == set(STATIONS)
    assert gateway.stats.failed_polls == 0
    assert states(gateway) == []


def test_published_readings_follow_the_contract(broker_settings):
    clock = past_clock(frozen=True)

    async def scenario():
        async with fake_api(clock) as api:
            gateway = Gateway(gateway_settings(broker_settings, api.url), STATIONS)
            await gateway.start()
            try:
                result = await gateway.poll_once()
            finally:
                await gateway.drain()
            return result, api.document()

    result, document = asyncio.run(scenario())
    assert result.ok and result.published == len(STATIONS)
    reader = consumer.reader(broker_settings.kafka, [topics.SENSORS_HIGHWAY], "t", start="-50")
    try:
        found = consumer.read_to_end(reader)
    finally:
        reader.close()
    ts = {v.ts_ms for v in traffic.snapshot(PROFILES, clock(), 0.25, 11)}
    mine = [m for m in found if orjson.loads(m.value())["ts"] in ts]
    assert sorted(m.key().decode() for m in mine) == sorted(STATIONS)  # key = station_id
    for message in mine:
        reading = messages.decode(topics.SENSORS_HIGHWAY, message.value())
        assert set(reading) == {"station_id", "ts", "speed_kmh", "volume", "occupancy_pct"}
        assert f"<station-id>{reading['station_id']}</station-id>".encode() in document


def test_slow_answers_within_the_timeout_are_not_failures(broker_settings):
    clock = past_clock()

    async def scenario():
        async with fake_api(clock, fault="slow") as api:  # 0.1 s, timeout 0.5 s
            settings = gateway_settings(broker_settings, api.url)
            async with running_gateway(settings) as gateway:
                await until(lambda: gateway.stats.published >= 2 * len(STATIONS), "readings")
            return gateway, api

    gateway, api = asyncio.run(scenario())
    assert api.requests["slow"] == gateway.stats.polls
    assert gateway.stats.failed_polls == 0
    assert states(gateway) == []


# -- the breaker in each fault mode -------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    ["http500", "timeout", "disconnect", "malformed", "truncated", "billion_laughs"],
)
def test_breaker_opens_half_opens_and_closes_in_each_fault_mode(broker_settings, mode):
    clock = past_clock()
    since_ms = int(time.time() * 1000)

    async def scenario():
        async with fake_api(clock) as api:
            # open long enough for the test to switch the API back before a second trial
            settings = gateway_settings(broker_settings, api.url, breaker_open_s=0.8)
            async with running_gateway(settings) as gateway:
                await until(lambda: gateway.stats.published > 0, "a first reading")
                await switch(api, mode)
                await until(lambda: gateway.breaker.state is OPEN, "the breaker to open")
                assert REGISTRY.get_sample_value("casatwin_gateway_breaker_state") == 2
                # half-open lasts one request: watch the transitions, not the state
                await until(lambda: len(gateway.transitions) >= 3, "a trial request to fail")
                await switch(api, "none")
                await until(lambda: gateway.breaker.state is CLOSED, "the breaker to close")
                assert REGISTRY.get_sample_value("casatwin_gateway_breaker_state") == 0
                published = gateway.stats.published
                await until(lambda: gateway.stats.published > published, "readings again")
            return settings, gateway, api

    settings, gateway, api = asyncio.run(scenario())
    assert states(gateway)[:5] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    # While open, nothing went out: the faulty polls are the threshold plus one trial
    # (aiohttp itself sends a GET twice when the server hangs up without answering).
    assert api.requests[mode] == (THRESHOLD + 1) * (2 if mode == "disconnect" else 1)
    counts = published_counts(settings, clock)
    assert set(counts.values()) == {1}, "a reading was published twice"
    letters = dead_letters(settings, "gateway.xml", since_ms)
    if mode in ("malformed", "truncated", "billion_laughs"):
        assert len(letters) == THRESHOLD + 1
        for letter in letters:
            payload = dlq.payload(letter)
            assert api.url in letter["error"]
            if mode == "malformed":
                assert b"casablanca-tmc & partners" in payload
                assert "malformed XML: not well-formed (invalid token)" in letter["error"]
            elif mode == "truncated":
                assert payload.startswith(b"<?xml") and b"</tmdd:detectorDataMsg>" not in payload
                assert "ends too early (truncated?)" in letter["error"]
            else:
                assert payload == faults.BILLION_LAUGHS
                assert "declares a DTD" in letter["error"]
    else:
        assert letters == []


def test_an_api_that_fails_a_few_requests_then_recovers_keeps_the_breaker_closed(
    broker_settings,
):
    clock = past_clock()

    async def scenario():
        # the fault is set at start (like `fake-api --fault http500 --fault-count 2`)
        async with fake_api(clock, fault="http500", fault_count=THRESHOLD - 1) as api:
            settings = gateway_settings(broker_settings, api.url)
            async with running_gateway(settings) as gateway:
                await until(lambda: gateway.stats.published >= len(STATIONS), "readings")
            return settings, gateway, api

    settings, gateway, api = asyncio.run(scenario())
    assert api.requests["http500"] == THRESHOLD - 1
    assert gateway.stats.failed_polls == THRESHOLD - 1  # retried with backoff, then fine
    assert states(gateway) == []
    assert set(published_counts(settings, clock).values()) == {1}


def test_a_dead_api_opens_the_breaker_and_the_gateway_waits_for_it(broker_settings, caplog):
    clock = past_clock()
    port = free_port()
    url = f"http://127.0.0.1:{port}/tmdd/detector-data"  # nothing listens there yet
    caplog.set_level(logging.INFO, logger="casatwin.gateway")

    async def scenario():
        settings = gateway_settings(broker_settings, url)
        async with running_gateway(settings) as gateway:
            await until(lambda: len(gateway.transitions) >= 3, "open, half-open, open again")
            async with fake_api(clock, port=port):
                await until(lambda: gateway.breaker.state is CLOSED, "the breaker to close")
                await until(lambda: gateway.stats.published > 0, "readings")
        return gateway

    gateway = asyncio.run(scenario())
    assert states(gateway)[:4] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "casatwin.gateway"]
    assert "circuit breaker OPEN: the traffic API is failing; requests paused" in logged
    assert "circuit breaker HALF-OPEN: sending a trial request to the traffic API" in logged
    assert "circuit breaker CLOSED: the traffic API answers again; normal polling resumes" in logged
    assert "traffic API request failed; retrying with backoff" in logged


# -- bad readings, restarts ---------------------------------------------------------------


def test_bad_readings_go_to_the_dlq_and_the_good_ones_of_the_document_publish(
    broker_settings,
):
    clock = past_clock(frozen=True)  # one period: every poll serves the same timestamp
    since_ms = int(time.time() * 1000)

    async def scenario():
        async with fake_api(clock, fault="bad_values", fault_count=1) as api:
            settings = gateway_settings(broker_settings, api.url)
            gateway = Gateway(settings, STATIONS)
            await gateway.start()
            try:
                first = await gateway.poll_once()
                second = await gateway.poll_once()
            finally:
                await gateway.drain()
            return settings, first, second

    settings, first, second = asyncio.run(scenario())
    # hw-e1 (negative speed) and hw-e2 (occupancy 130) and hw-ghost refused; the rest published
    assert (first.ok, first.published, first.invalid) == (True, len(STATIONS) - 2, 3)
    # healthy again: the two refused stations publish, the others are not published again
    assert (second.published, second.duplicates) == (2, len(STATIONS) - 2)
    counts = published_counts(settings, clock)
    assert sorted(s for s, _ in counts) == sorted(STATIONS)
    assert set(counts.values()) == {1}
    letters = {x["key"]: x for x in dead_letters(settings, "gateway.reading", since_ms)}
    assert "'speed_kmh'=-12.0 is below 0" in letters["hw-e1"]["error"]
    assert "'occupancy_pct'=130.0 is above 100" in letters["hw-e2"]["error"]
    assert "unknown station 'hw-ghost'" in letters[faults.UNKNOWN_STATION]["error"]
    assert dlq.payload(letters["hw-e1"]).startswith(b"<detector-data-detail>")
    assert b"<vehicle-speed>-12.0</vehicle-speed>" in dlq.payload(letters["hw-e1"])


def test_a_restarted_gateway_does_not_publish_the_same_readings_again(broker_settings):
    clock = past_clock(frozen=True)

    async def poll_with_a_new_gateway(api: FakeTrafficApi):
        gateway = Gateway(gateway_settings(broker_settings, api.url), STATIONS)
        await gateway.start()
        try:
            return await gateway.poll_once()
        finally:
            await gateway.drain()

    async def scenario():
        async with fake_api(clock) as api:
            return [await poll_with_a_new_gateway(api) for _ in range(2)]

    first, second = asyncio.run(scenario())
    assert first.published == len(STATIONS)
    assert (second.published, second.duplicates) == (0, len(STATIONS))
    assert set(published_counts(broker_settings, clock).values()) == {1}


def test_a_reading_the_broker_never_acknowledged_is_published_when_served_again(
    broker_settings, cuttable_broker
):
    now = [past_clock(frozen=True)()]
    # Messages the broker does not acknowledge within 2 s fail (30 s in production).
    settings = broker_settings.replace(kafka={"message_timeout_ms": 2000})

    async def scenario():
        async with fake_api(lambda: now[0]) as api:
            gateway = Gateway(gateway_settings(settings, api.url), STATIONS)
            await gateway.start()
            try:
                first = await gateway.poll_once()
                await asyncio.to_thread(gateway.producer.flush, 10.0)
                await asyncio.to_thread(cuttable_broker.kill)
                now[0] += 1.0  # the API's next period: new readings
                cut = await gateway.poll_once()
                await until(
                    lambda: gateway.producer.poll(0) >= 0 and not gateway.in_flight,
                    "the readings sent to a dead broker to fail",
                    30,
                )
                lost = gateway.producer.lost()
                await asyncio.to_thread(cuttable_broker.start)
                again = await gateway.poll_once()  # the API serves the same readings
                await asyncio.to_thread(gateway.producer.flush, 30.0)
                after = await gateway.poll_once()
            finally:
                await gateway.drain()
        return first, cut, lost, again, after

    first, cut, lost, again, after = asyncio.run(scenario())
    stations = len(STATIONS)
    assert first.published == stations and cut.published == stations and lost == stations
    assert (again.published, again.duplicates) == (stations, 0)  # not taken as published
    assert (after.published, after.duplicates) == (0, stations)
    counts = published_counts(settings, lambda: now[0])
    assert len(counts) == 2 * stations and set(counts.values()) == {1}
