"""A producer that accounts for every message.

The seed's lesson: "stop assuming code works and implement robust callbacks in the
producers to catch silent failures". Every message handed to :meth:`Producer.send` ends in
exactly one of three counters — delivered, failed (the broker never acknowledged it within
``kafka.message_timeout_ms``) or refused (the local buffer was full because the broker has
been away for a while) — and failures are reported in aggregated log lines, never dropped
silently and never one line per message.

What depends on a message being on the topic — an offset committed, a dedupe mark, a row
written after it — waits for it: :meth:`Producer.confirm` after the sends (or
:meth:`Producer.undelivered_since` to decide what to do), or a per-message ``on_delivery``
callback when the mark is per message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
from prometheus_client import Counter as PromCounter

from casatwin.bus import messages
from casatwin.bus.credentials import librdkafka_auth
from casatwin.config import KafkaSettings
from casatwin.logs import get_logger
from casatwin.observability.families import DELIVERY_SAMPLE, DELIVERY_SECONDS

log = get_logger("bus")

SENT = PromCounter("casatwin_bus_sent_total", "Messages handed to the producer", ["topic"])
DELIVERED = PromCounter(
    "casatwin_bus_delivered_total", "Messages the broker acknowledged", ["topic"]
)
FAILED = PromCounter(
    "casatwin_bus_failed_total", "Messages the broker never acknowledged", ["topic"]
)
REFUSED = PromCounter(
    "casatwin_bus_refused_total", "Messages refused because the local buffer was full", ["topic"]
)


class _LibrdkafkaLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """librdkafka's own log lines (one per reconnect attempt, every ~50 ms while a broker is
    away) at DEBUG: errors reach the user once, in words, through error callbacks and
    exceptions (``CASATWIN_GENERAL_LOG_LEVEL=DEBUG`` shows the raw lines)."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.log(logging.DEBUG, msg, *args, **kwargs)


LIBRDKAFKA_LOG = _LibrdkafkaLog(logging.getLogger("casatwin.librdkafka"), {})


def client_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """librdkafka settings shared by producers, consumers and admin clients."""
    return {
        "bootstrap.servers": settings.bootstrap,
        "client.id": client_id,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": settings.reconnect_backoff_max_ms,
        # One line per broker outage from our own error callback is enough.
        "log.connection.close": False,
        "logger": LIBRDKAFKA_LOG,
    } | librdkafka_auth(settings)


class DeliveryError(RuntimeError):
    """Messages that something depends on were not acknowledged by the broker."""


@dataclass(frozen=True)
class Undelivered:
    """Of the messages sent since a reading of :meth:`Producer.lost`: how many failed or
    were refused, and how many the producer still waits for (of any sender)."""

    lost: int
    waiting: int

    def __str__(self) -> str:
        return f"{self.lost} failed or refused, {self.waiting} still waiting"


@dataclass
class DeliveryReport:
    """What happened to the messages since the producer started."""

    sent: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def totals(self) -> dict[str, int]:
        return {
            "sent": sum(self.sent.values()),
            "delivered": sum(self.delivered.values()),
            "failed": sum(self.failed.values()),
            "refused": sum(self.refused.values()),
        }


class Producer:
    """Wraps ``confluent_kafka.Producer`` with delivery accounting and outage reports."""

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str,
        report_every_s: float = 10.0,
        **overrides: Any,
    ) -> None:
        config = client_config(settings, client_id) | {
            "linger.ms": settings.linger_ms,
            "message.timeout.ms": settings.message_timeout_ms,
            "queue.buffering.max.messages": settings.queue_max_messages,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
            # A record whose acknowledgement a broker crash swallowed is sent again; the
            # broker recognises it (producer id and sequence) instead of writing it twice,
            # and retries keep the order of a partition.
            "enable.idempotence": True,
            "acks": "all",
            "error_cb": self._on_error,
        }
        config.update(overrides)
        self._producer = confluent_kafka.Producer(config)
        self._bootstrap = settings.bootstrap
        self.report = DeliveryReport()
        self._report_every_s = report_every_s
        self._last_report = time.monotonic()
        self._reported = DeliveryReport()  # totals at the last report, to log differences
        self._errors: Counter[str] = Counter()  # delivery error reasons since the last report
        self._broker_down_since: float | None = None
        self._lock = threading.Lock()
        self._acks = 0  # acknowledged messages, to sample their latency

    # -- sending -------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        on_delivery: Callable[[bool], None] | None = None,
    ) -> bool:
        """Queue one message; False if the local buffer is full (counted as refused).

        ``on_delivery(acknowledged)`` is called once the broker acknowledged the message
        (True) or it failed (False), on the thread that calls :meth:`poll` or :meth:`flush`;
        not for a refused message."""
        callback = self._on_delivery
        if on_delivery is not None:

            def callback(err: confluent_kafka.KafkaError | None, msg: Any) -> None:
                self._on_delivery(err, msg)
                on_delivery(err is None)

        kwargs: dict[str, Any] = {"key": key, "on_delivery": callback}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        self.report.sent[topic] += 1
        SENT.labels(topic).inc()
        try:
            self._producer.produce(topic, value, **kwargs)
        except BufferError:
            # Serve delivery callbacks once to make room, then try again one time.
            self._producer.poll(0)
            try:
                self._producer.produce(topic, value, **kwargs)
            except BufferError:
                self.report.refused[topic] += 1
                REFUSED.labels(topic).inc()
                return False
        return True

    def send_json(
        self, topic: str, message: dict[str, Any], key: str | None = None, **kwargs: Any
    ) -> bool:
        return self.send(topic, messages.encode(message), key=key, **kwargs)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery callbacks; report failures when the report interval has passed."""
        served = self._producer.poll(timeout_s)
        self._maybe_report()
        return served

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait for outstanding messages; returns how many are still undelivered."""
        remaining = self._producer.flush(timeout_s)
        self._maybe_report(force=True)
        return remaining

    def undelivered_since(self, lost_before: int, timeout_s: float) -> Undelivered | None:
        """Wait up to ``timeout_s`` for what is queued; None when every message sent since
        ``lost_before`` (a reading of :meth:`lost` taken before sending them) was
        acknowledged, else what was not."""
        waiting = self.flush(timeout_s)
        lost = self.lost() - lost_before
        return Undelivered(lost, waiting) if lost or waiting else None

    def confirm(self, lost_before: int, timeout_s: float, what: str) -> None:
        """:meth:`undelivered_since`, raising :class:`DeliveryError` about ``what`` unless
        everything was acknowledged: the caller must not mark anything done."""
        undelivered = self.undelivered_since(lost_before, timeout_s)
        if undelivered is not None:
            raise DeliveryError(
                f"{what}: the broker did not acknowledge every message ({undelivered})"
            )

    def close(self, timeout_s: float = 10.0) -> DeliveryReport:
        remaining = self.flush(timeout_s)
        if remaining:
            log.warning(
                "producer closed with messages still undelivered",
                undelivered=remaining,
                **self.report.totals(),
            )
        return self.report

    def lost(self) -> int:
        """Messages failed or refused since the producer started. Two readings around some
        sends, the second after a :meth:`flush` that left nothing, tell whether any of
        them was lost."""
        return sum(self.report.failed.values()) + sum(self.report.refused.values())

    def __len__(self) -> int:
        """Messages queued locally and not yet acknowledged."""
        return len(self._producer)

    # -- callbacks (called from poll/flush on this thread) ---------------------------------

    def _on_delivery(self, err: confluent_kafka.KafkaError | None, msg: Any) -> None:
        topic = msg.topic()
        if err is None:
            self.report.delivered[topic] += 1
            DELIVERED.labels(topic).inc()
            self._acks += 1
            if self._acks % DELIVERY_SAMPLE == 0 and (latency := msg.latency()) is not None:
                DELIVERY_SECONDS.labels(topic).observe(latency)
            if self._broker_down_since is not None:
                down_for = time.monotonic() - self._broker_down_since
                self._broker_down_since = None
                log.info("broker reachable again, deliveries resumed", down_s=round(down_for, 1))
        else:
            self.report.failed[topic] += 1
            FAILED.labels(topic).inc()
            self._errors[err.str()] += 1

    def _on_error(self, err: confluent_kafka.KafkaError) -> None:
        if err.code() in (
            confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
            confluent_kafka.KafkaError._TRANSPORT,
        ):
            with self._lock:
                if self._broker_down_since is None:
                    self._broker_down_since = time.monotonic()
                    log.warning(
                        "broker unreachable; buffering and retrying with backoff",
                        bootstrap=self._bootstrap,
                        reason=err.str(),
                    )
        elif err.fatal():
            # The idempotent producer cannot go on (the broker lost records of its sequence):
            # librdkafka refuses every message after this; the service must be restarted.
            log.error("producer failed fatally; messages will not be delivered", reason=err.str())
        else:
            log.warning("producer error", reason=err.str())

    def _maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self._report_every_s:
            return
        self._last_report = now
        failed = sum(self.report.failed.values()) - sum(self._reported.failed.values())
        refused = sum(self.report.refused.values()) - sum(self._reported.refused.values())
        if failed or refused:
            log.warning(
                "messages could not be delivered",
                failed=failed,
                refused_buffer_full=refused,
                reasons="; ".join(f"{r} ×{n}" for r, n in self._errors.most_common(3)),
                queued=len(self._producer),
            )
        self._errors.clear()
        self._reported = DeliveryReport(
            sent=Counter(self.report.sent),
            delivered=Counter(self.report.delivered),
            failed=Counter(self.report.failed),
            refused=Counter(self.report.refused),
        )
