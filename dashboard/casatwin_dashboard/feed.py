"""Kafka readers on their own threads, handing decoded batches to the event loop.

librdkafka's poll blocks, and JSON decoding is CPU work: both happen on a reader thread,
never on the event loop. A thread polls a batch (returning as soon as one message is
there: a lone infraction does not wait for a batch to fill), decodes and validates it
against the topic's contract (:func:`casatwin.bus.messages.check`), and hands the result to
the loop with ``call_soon_threadsafe``; applying a batch there takes microseconds.

Two readers, no consumer group (every dashboard instance wants every message):

* telemetry starts at the end: positions a second old are worth nothing;
* infractions, dispatch and congestion start ``replay_messages`` before the end of each
  partition, so that a restarted dashboard shows the recent infractions, the units' state
  and the congestion map at once, through the very code that handles live messages.

Malformed messages are skipped and counted (the services that produce these topics own
the dead-letter queue; the messages stay on the topic, nothing is lost).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter

from casatwin.bus import consumer, topics
from casatwin.bus.messages import InvalidMessage, decode, decode_many
from casatwin.config import KafkaSettings
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.observability.families import observe_event_latency
from casatwin_dashboard.positions import TelemetryBatch

log = get_logger("dashboard")

CONSUMED = Counter(
    "casatwin_dashboard_consumed_total", "Messages the dashboard read from the bus", ["topic"]
)
SKIPPED = Counter(
    "casatwin_dashboard_invalid_total",
    "Messages the dashboard skipped because they broke their topic's contract",
    ["topic"],
)

EVENT_TOPICS = (topics.INFRACTIONS, topics.DISPATCH, topics.CONGESTION)


def decode_telemetry(raws: list[bytes]) -> TelemetryBatch:
    """Validated telemetry as arrays; bad messages are counted, not raised.

    Telemetry is the bulk of the input (26,000 messages a second for 13,000 vehicles at
    2 Hz): the contract is checked a column at a time
    (:func:`~casatwin.bus.messages.decode_many`).
    """
    decoded = decode_many(topics.TELEMETRY, raws)
    c = decoded.columns
    if not decoded:
        empty = np.zeros(0)
        return TelemetryBatch([], [], empty, empty, empty, empty, len(decoded.reasons))
    return TelemetryBatch(
        c["vehicle_id"],
        c["kind"],
        *(np.asarray(c[name], dtype=np.float64) for name in _NUMERIC),
        invalid=len(decoded.reasons),
    )


_NUMERIC = ("lat", "lon", "speed_kmh", "heading_deg")


@dataclass
class EventBatch:
    """Validated infractions, dispatch events and congestion windows, in arrival order."""

    by_topic: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {t: [] for t in EVENT_TOPICS}
    )
    invalid: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_topic.values())


def decode_events(messages: list[tuple[str, bytes | None, bytes]]) -> EventBatch:
    """``(topic, key, value)`` triples → validated messages grouped by topic."""
    batch = EventBatch()
    for topic, key, raw in messages:
        try:
            msg = decode(topic, raw)
        except InvalidMessage:
            batch.invalid[topic] = batch.invalid.get(topic, 0) + 1
            continue
        if topic == topics.INFRACTIONS and key and not msg["vehicle"].get("vehicle_id"):
            msg["vehicle"] = {**msg["vehicle"], "vehicle_id": key.decode("utf-8", "replace")}
        batch.by_topic[topic].append(msg)
    return batch


@dataclass
class FeedStatus:
    """What `/api/health` says about a reader."""

    state: str = "starting"  # starting, connecting, reading, stopped
    messages: int = 0
    invalid: int = 0
    last_message_at: float | None = None  # time.time()
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        age = None if self.last_message_at is None else time.time() - self.last_message_at
        return {
            "state": self.state,
            "messages": self.messages,
            "invalid": self.invalid,
            "last_message_age_s": None if age is None else round(age, 1),
            "error": self.error,
        }


class TopicFeed:
    """One group-less reader on its own thread; decoded batches go to ``deliver`` on the loop."""

    def __init__(
        self,
        name: str,
        settings: KafkaSettings,
        topic_names: list[str],
        start: str,
        decode: Callable[[list[Any]], Any],
        deliver: Callable[[Any], None],
        loop: asyncio.AbstractEventLoop,
        raw_form: Callable[[Any], Any] = lambda m: m.value(),
        max_batch: int = 5000,
        retry_s: float = 2.0,
    ) -> None:
        self.name = name
        self._settings = settings
        self._topics = topic_names
        self._start = start
        self._decode = decode
        self._deliver = deliver
        self._loop = loop
        self._raw_form = raw_form
        self._max_batch = max_batch
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed-{name}", daemon=True)
        self.status = FeedStatus()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _open(self) -> Any:
        """The reader, retrying while the broker or the topics are missing."""
        announced = False
        while not self._stop.is_set():
            try:
                reader = consumer.reader(
                    self._settings, self._topics, f"casatwin-dashboard-{self.name}", self._start
                )
            except UserError as exc:
                self.status.state, self.status.error = "connecting", exc.message
                if not announced:
                    log.warning(
                        "cannot read the bus yet; retrying", feed=self.name, reason=exc.message
                    )
                    announced = True
                self._stop.wait(self._retry_s)
                continue
            if announced:
                log.info("reading the bus", feed=self.name)
            self.status.state, self.status.error = "reading", ""
            return reader
        return None

    def _run(self) -> None:
        reader = self._open()
        if reader is None:
            return
        try:
            while not self._stop.is_set():
                batch = consumer.messages(reader, self._max_batch, timeout_s=0.2)
                if not batch:
                    continue
                for topic, count in collections.Counter(m.topic() for m in batch).items():
                    CONSUMED.labels(topic).inc(count)
                decoded = self._decode([self._raw_form(m) for m in batch])
                self.status.messages += len(batch)
                self.status.last_message_at = time.time()
                self._count_invalid(decoded, batch[0].topic())
                if isinstance(decoded, EventBatch):
                    for events in decoded.by_topic.values():
                        observe_event_latency("event_to_dashboard", events)
                if not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._deliver, decoded)
        except Exception:
            log.exception("bus reader failed", feed=self.name)
            self.status.state = "failed"
            raise
        finally:
            reader.close()
            if self.status.state != "failed":
                self.status.state = "stopped"

    def _count_invalid(self, decoded: Any, topic: str) -> None:
        invalid = decoded.invalid if isinstance(decoded.invalid, dict) else {topic: decoded.invalid}
        for name, count in invalid.items():
            if count:
                SKIPPED.labels(name).inc(count)
                self.status.invalid += count


def event_triple(message: Any) -> tuple[str, bytes | None, bytes]:
    return message.topic(), message.key(), message.value()
