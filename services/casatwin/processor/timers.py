"""The infractions query's timers without Spark's empty batches.

The detectors' timers (a parked car's dwell, the end of a speeding episode) are event-time
timeouts: they fire in the first batch whose watermark has passed them. Spark's default is
to run a batch with no new data as soon as the watermark has moved and the source has
nothing new; a fix that arrives meanwhile waits for that empty batch before its own (p95
+235 ms measured, docs/processor.md). With ``processor.timer_batches`` off the query runs
no such batch: while the fleet reports, the next batch with data fires the timers a
fraction of a second later. When the telemetry falls silent there is no next batch, so the
processor asks for one: after ``processor.timers_silence_s`` without a newer batch, the
application writes one record to ``casatwin.processor.timers``, which the query reads with
the telemetry and drops (:func:`~casatwin.processor.telemetry_source.telemetry_rows`). The
batch it starts has the watermark the empty batch would have had, and fires the same timers.

:class:`SilenceWatch` decides (pure: batches seen and the time); :class:`TimerNudges` sends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter

from casatwin.bus import topics
from casatwin.config import Settings
from casatwin.logs import get_logger

log = get_logger("processor")

NUDGES = Counter(
    "casatwin_processor_timer_nudges_total",
    "Batches the processor asked for because timers were due and the telemetry was silent",
    ["query"],
)


@dataclass
class SilenceWatch:
    """When a query whose last batch moved the watermark has had no batch since for
    ``silence_s``: then (once per such batch) it needs one for its timers."""

    silence_s: float
    batch_id: int = -1
    seen_at: float = 0.0
    moved: bool = False  # the batch saw event times, so the next one has a later watermark
    asked: bool = False

    def due(self, progress: dict[str, Any] | None, now: float) -> bool:
        """Whether to ask for a batch now, given the query's last progress."""
        if progress is None:
            return False
        if progress["batchId"] != self.batch_id:
            self.batch_id, self.seen_at, self.asked = progress["batchId"], now, False
            self.moved = "max" in (progress.get("eventTime") or {})
            return False
        if self.moved and not self.asked and now - self.seen_at >= self.silence_s:
            self.asked = True
            return True
        return False


class TimerNudges:
    """Asks for a batch on :data:`~casatwin.bus.topics.TIMERS` for the queries whose
    timers are due (one producer, opened at the first request)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watches: dict[str, SilenceWatch] = {}
        self._producer: Any = None

    def check(self, name: str, progress: dict[str, Any] | None) -> None:
        """Look at the query ``name``'s last progress; ask for its batch when due."""
        watch = self.watches.setdefault(
            name, SilenceWatch(self.settings.processor.timers_silence_s)
        )
        if watch.due(progress, time.monotonic()):
            self.ask(name)

    def ask(self, name: str) -> None:
        from casatwin.bus.producer import Producer

        if self._producer is None:
            client_id = f"{self.settings.processor.client_id}-timers"
            self._producer = Producer(self.settings.kafka, client_id)
        value = orjson.dumps({"query": name, "ts": int(time.time() * 1000)})
        self._producer.send(topics.TIMERS, value, key=name)
        self._producer.poll(0)
        NUDGES.labels(name).inc()
        log.info("asked for a batch: timers due, telemetry silent", query=name)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
