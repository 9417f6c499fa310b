"""The live side of the dashboard: bus → state → clients, with an explicit lifecycle.

``start()`` launches the two bus readers (threads) and the ticker; ``stop()`` ends them.
Batches from the readers are applied on the event loop (:meth:`on_telemetry`,
:meth:`on_events`); infraction, dispatch and congestion updates are broadcast at once,
positions once per tick (``position_hz``), a ``stats`` message once per second.

WebSocket protocol (server → client; the client sends nothing but pings)::

    {"type": "hello", "server_ts", "position_hz", "view", "language"}
    {"type": "snapshot", "vehicles": [[index, id, kind], ...], "infractions": [...],
     "units": [...], "congestion": [...], "stats": {...}}
    binary  positions frame (see positions.py)          every tick, changes only
    {"type": "vehicles", "items": [[index, id, kind], ...]}   new vehicle ids
    {"type": "gone", "items": [index, ...]}                   vehicles gone quiet
    {"type": "infractions", "server_ts", "items": [infraction, ...]}  driver masked
    {"type": "units", "items": [unit, ...]}                   after dispatch events
    {"type": "congestion", "items": [window, ...]}
    {"type": "stats", ...}                                    once per second

Kinds: 0 taxi_petit, 1 taxi_grand, 2 police, 3 private. A client too slow to keep up is
closed with code 4008 and the reason as close message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from casatwin.bus import topics
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin_dashboard.fanout import Fanout, encode
from casatwin_dashboard.feed import (
    EVENT_TOPICS,
    EventBatch,
    TopicFeed,
    decode_events,
    decode_telemetry,
    event_triple,
)
from casatwin_dashboard.live import LiveState
from casatwin_dashboard.positions import PositionTable, TelemetryBatch

log = get_logger("dashboard")

FLAG_FOR_S = 180.0  # how long a vehicle stays highlighted after an infraction
STATS_EVERY_S = 1.0
REPORT_EVERY_S = 30.0
# A batch is decoded in one C call that holds the GIL: small batches keep the event loop's
# waits for it short (the fan-out releases and retakes the GIL at every socket write).
TELEMETRY_BATCH = 500


class Hub:
    def __init__(self, settings: Settings, units: dict[str, str] | None = None) -> None:
        self.settings = settings
        cfg = settings.dashboard
        self.positions = PositionTable(ttl_s=cfg.vehicle_ttl_s)
        self.live = LiveState.with_units(
            units or {}, recent_max=cfg.recent_infractions, history_minutes=cfg.history_minutes
        )
        self.fanout = Fanout(cfg.queue_max_messages, cfg.stall_timeout_s, self._frame_since)
        self.feeds: list[TopicFeed] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._frame_ts_ms = 0.0
        self._telemetry_count = 0  # for messages/s
        self._rate = 0.0
        self._invalid_reported = 0
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, read_bus: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if read_bus:
            kafka = self.settings.kafka
            replay = f"-{self.settings.dashboard.replay_messages}"
            self.feeds = [
                TopicFeed(
                    "telemetry", kafka, [topics.TELEMETRY], "latest",
                    decode_telemetry, self.on_telemetry, loop, max_batch=TELEMETRY_BATCH,
                ),
                TopicFeed(
                    "events", kafka, list(EVENT_TOPICS), replay,
                    decode_events, self.on_events, loop, raw_form=event_triple, max_batch=1000,
                ),
            ]  # fmt: skip
            for feed in self.feeds:
                feed.start()
        self._tasks = [
            asyncio.create_task(self._tick_positions(), name="positions-ticker"),
            asyncio.create_task(self._tick_stats(), name="stats-ticker"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.get_running_loop().run_in_executor(None, self._stop_feeds)
        await self.fanout.close_all(1001, "dashboard stopping")

    def _stop_feeds(self) -> None:
        for feed in self.feeds:
            feed.stop()

    # -- input (on the event loop) ---------------------------------------------------------

    def on_telemetry(self, batch: TelemetryBatch) -> None:
        self.positions.apply(batch, time.time())
        self._telemetry_count += len(batch)

    def on_events(self, batch: EventBatch) -> None:
        infractions = self.live.add_infractions(batch.by_topic[topics.INFRACTIONS])
        if infractions:
            until = time.time() + FLAG_FOR_S
            for infraction in infractions:
                vehicle_id = infraction["vehicle"].get("vehicle_id", "")
                self.positions.flag(vehicle_id, infraction["type"] == "speeding", until)
            # server_ts: when the push left the dashboard (the latency budget's "push" hop)
            pushed = {"type": "infractions", "server_ts": time.time() * 1000, "items": infractions}
            self.fanout.broadcast(encode(pushed))
        units = self.live.add_dispatch(batch.by_topic[topics.DISPATCH])
        if units:
            self.fanout.broadcast(encode({"type": "units", "items": units}))
        windows = self.live.add_congestion(batch.by_topic[topics.CONGESTION])
        if windows:
            self.fanout.broadcast(encode({"type": "congestion", "items": windows}))

    # -- output ----------------------------------------------------------------------------

    def hello(self, view: str, language: str) -> bytes:
        return encode(
            {
                "type": "hello",
                "server_ts": time.time() * 1000,
                "position_hz": self.settings.dashboard.position_hz,
                "view": view,
                "language": language,
            }
        )

    def snapshot(self) -> bytes:
        return encode(
            {
                "type": "snapshot",
                "vehicles": self.positions.registry(),
                "infractions": self.live.recent_infractions(),
                "units": list(self.live.units.values()),
                "congestion": list(self.live.congestion.values()),
                "stats": self.stats(),
            }
        )

    def stats(self) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        return {
            "type": "stats",
            "server_ts": now_ms,
            "vehicles": self.positions.count_alive(),
            "messages_per_s": round(self._rate, 1),
            "infractions_per_min": self.live.infractions_last_minute(now_ms),
            "units_available": self.live.units_available(),
            "units_total": len(self.live.units),
            "congested": self.live.congested_count(),
            "clients": len(self.fanout.clients),
            "history": self.live.history(now_ms),
        }

    def _frame_since(self, since: int) -> tuple[int, bytes]:
        return self.positions.tick, self.positions.frame(since, self._frame_ts_ms)

    def tick(self) -> None:
        """Close a positions tick: announce new vehicles, retire quiet ones, wake clients."""
        now = time.time()
        new, gone = self.positions.advance(now)
        self._frame_ts_ms = now * 1000
        if new:
            self.fanout.broadcast(encode({"type": "vehicles", "items": new}))
        if gone:
            self.fanout.broadcast(encode({"type": "gone", "items": gone}))
        self.fanout.positions_ready(self.positions.tick)

    async def _tick_positions(self) -> None:
        period = 1.0 / max(self.settings.dashboard.position_hz, 0.1)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > period:  # fell behind (machine busy): skip, not burst
                next_at = loop.time()
            self.tick()

    async def _tick_stats(self) -> None:
        last_count, last_at, last_report = 0, time.monotonic(), time.monotonic()
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            now = time.monotonic()
            self._rate = (self._telemetry_count - last_count) / max(now - last_at, 1e-6)
            last_count, last_at = self._telemetry_count, now
            self.fanout.broadcast(encode(self.stats()))
            if now - last_report >= REPORT_EVERY_S:
                last_report = now
                self._report()

    def _report(self) -> None:
        invalid = sum(f.status.invalid for f in self.feeds)
        log.info(
            "dashboard running",
            clients=len(self.fanout.clients),
            vehicles=self.positions.count_alive(),
            telemetry_per_s=round(self._rate),
            recent_infractions=len(self.live.infractions),
        )
        if invalid > self._invalid_reported:
            log.warning(
                "skipped messages that break their topic's contract",
                skipped=invalid - self._invalid_reported,
                hint="casatwin tail <topic> shows them; their producer should dead-letter them",
            )
            self._invalid_reported = invalid
