"""CasaTwin's load test: who watches the dashboard, who reads its history, what feeds it.

* :class:`LiveViewer` — a browser on ``/ws``: every infraction pushed is timed from its
  ``event_ts`` (when the taxi did it) to its arrival here, every positions frame from its
  tick; both are Locust request events (type ``WS``), so the report's percentiles are
  push latencies.
* :class:`HistoryReader` — an operator's screen on the history API.
* :class:`InfractionSource` — the processor's output, steady: infractions published on
  ``casatwin.infractions`` with ``event_ts`` = now (the processor itself is not in this
  test; its latency is the latency budget's business).
* :class:`TelemetrySpike` — bursts of telemetry (a traffic spike): thousands of fixes at once.

Run by ``make loadtest`` (``python -m loadtest``), which starts a private stack; the
settings come from the ``CASATWIN_*`` variables it sets.
"""

from __future__ import annotations

import itertools
import random
import time

import gevent
import orjson
import websocket
from locust import HttpUser, User, between, constant, events, task

from casatwin.bus import topics
from casatwin.bus.producer import Producer
from casatwin.config import load
from casatwin.fleet import taxi_id, taxi_kind
from casatwin_dashboard.positions import frame_header
from loadtest.messages import LAT, LON, infraction

SETTINGS = load()
SPIKE_VEHICLES = 2000  # fixes per burst


class LiveViewer(User):
    """One browser tab on the live map; it only listens."""

    weight = 6
    wait_time = constant(0)

    def on_start(self) -> None:
        url = self.host.replace("http", "ws", 1).rstrip("/") + "/ws"
        started = time.perf_counter()
        self.ws = websocket.create_connection(url, timeout=10)
        events.request.fire(
            request_type="WS", name="connect", response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=None, context={},
        )  # fmt: skip

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def receive(self) -> None:
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return  # nothing for 10 s: not an error on a quiet city
        except (websocket.WebSocketException, OSError) as exc:
            events.request.fire(request_type="WS", name="receive", response_time=0,
                                response_length=0, exception=exc, context={})  # fmt: skip
            self.stop()
            return
        now_ms = time.time() * 1000
        if opcode == websocket.ABNF.OPCODE_BINARY:
            self._report("positions frame (tick → client)", now_ms - frame_header(data)[1], data)
            return
        message = orjson.loads(data)
        if message.get("type") == "infractions":
            for item in message["items"]:
                if "event_ts" in item:
                    self._report("infraction (event_ts → client)", now_ms - item["event_ts"], data)

    @staticmethod
    def _report(name: str, latency_ms: float, data: bytes) -> None:
        events.request.fire(request_type="WS", name=name, response_time=max(0.0, latency_ms),
                            response_length=len(data), exception=None, context={})  # fmt: skip


class HistoryReader(HttpUser):
    """An operator browsing the history: lists, filters, one infraction, health."""

    weight = 3
    wait_time = between(0.5, 2.0)

    @task(4)
    def recent(self) -> None:
        with self.client.get("/api/infractions?limit=50", name="/api/infractions",
                             catch_response=True) as response:  # fmt: skip
            if response.ok:
                self.ids = [i["infraction_id"] for i in response.json()["items"]]

    @task(2)
    def by_type(self) -> None:
        self.client.get("/api/infractions?type=speeding&limit=20", name="/api/infractions?type")

    @task(2)
    def one(self) -> None:
        ids = getattr(self, "ids", None)
        if ids:
            self.client.get(f"/api/infractions/{random.choice(ids)}", name="/api/infractions/{id}")

    @task(1)
    def health(self) -> None:
        self.client.get("/api/health")


class _Publisher(User):
    """A user that writes to the bus (not HTTP): a producer of its own, delivery counted."""

    abstract = True

    def on_start(self) -> None:
        self.producer = Producer(SETTINGS.kafka, f"casatwin-loadtest-{type(self).__name__}")

    def on_stop(self) -> None:
        report = self.producer.close(5)
        failed = sum(report.failed.values()) + sum(report.refused.values())
        if failed:
            events.request.fire(request_type="BUS", name="undelivered", response_time=0,
                                response_length=failed, exception=RuntimeError(f"{failed} lost"),
                                context={})  # fmt: skip

    def publish(self, name: str, messages: list[tuple[str, str, bytes]]) -> None:
        started = time.perf_counter()
        for topic, key, value in messages:
            self.producer.send(topic, value, key=key)
        # Wait for the acknowledgements without blocking the other users' greenlets (a
        # blocking flush() would stall every WebSocket reader and inflate their latencies).
        deadline = started + 10
        while len(self.producer) and time.perf_counter() < deadline:
            self.producer.poll(0)
            gevent.sleep(0.002)
        self.producer.poll(0)
        waiting = len(self.producer)
        events.request.fire(
            request_type="BUS", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=sum(len(v) for _, _, v in messages), context={},
            exception=RuntimeError(f"{waiting} not acknowledged in 10 s") if waiting else None,
        )  # fmt: skip


class InfractionSource(_Publisher):
    """The infractions the viewers time: a few per second, each stamped when published."""

    fixed_count = 1
    wait_time = constant(0.25)

    @task
    def infraction(self) -> None:
        message = infraction(int(time.time() * 1000))
        key = message["vehicle"]["vehicle_id"]
        self.publish("publish infraction", [(topics.INFRACTIONS, key, orjson.dumps(message))])


class TelemetrySpike(_Publisher):
    """A traffic spike: ``SPIKE_VEHICLES`` fixes at once, every few seconds."""

    fixed_count = 1
    wait_time = between(3, 6)

    def on_start(self) -> None:
        super().on_start()
        self.rounds = itertools.count()

    @task
    def burst(self) -> None:
        now_ms = int(time.time() * 1000)
        step = next(self.rounds) * 0.0001
        messages = [
            (topics.TELEMETRY, taxi_id(i), orjson.dumps({
                "vehicle_id": taxi_id(i), "kind": taxi_kind(i), "ts": now_ms,
                "lat": LAT + (i % 50) * 0.001 + step, "lon": LON + (i // 50) * 0.001,
                "speed_kmh": 40.0, "heading_deg": 90.0, "source": "sim"}))
            for i in range(SPIKE_VEHICLES)
        ]  # fmt: skip
        self.publish(f"telemetry burst ({SPIKE_VEHICLES} fixes)", messages)
