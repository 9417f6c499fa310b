"""The dead-letter queue: bad input is set aside with the reason, never lost, never fatal."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

from prometheus_client import Counter

from casatwin.bus import topics
from casatwin.bus.messages import DeadLetter
from casatwin.bus.producer import Producer
from casatwin.logs import get_logger

log = get_logger("dlq")

DEAD_LETTERS = Counter(
    "casatwin_dlq_messages_total", "Messages sent to the dead-letter queue", ["stage"]
)


def dead_letter(
    raw: bytes | None,
    error: str,
    stage: str,
    *,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
    key: str | None = None,
    now_ms: int | None = None,
) -> DeadLetter:
    """The DLQ record of one bad message (pure; :class:`DeadLetterWriter` sends it)."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "error": error,
        "stage": stage,
        "payload_b64": base64.b64encode(raw or b"").decode("ascii"),
        "ts": int(time.time() * 1000) if now_ms is None else now_ms,
    }


def payload(letter: DeadLetter) -> bytes:
    """The original bytes of a dead letter."""
    return base64.b64decode(letter["payload_b64"])


class DeadLetterWriter:
    """Sends dead letters for one processing stage (e.g. ``parse``, ``gateway.xml``)."""

    def __init__(self, producer: Producer, stage: str) -> None:
        self._producer = producer
        self.stage = stage

    def send(
        self,
        raw: bytes | None,
        error: str,
        *,
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
        key: str | None = None,
        on_delivery: Callable[[bool], None] | None = None,
    ) -> None:
        letter = dead_letter(
            raw, error, self.stage, topic=topic, partition=partition, offset=offset, key=key
        )
        self._producer.send_json(topics.DLQ, dict(letter), key=key, on_delivery=on_delivery)
        DEAD_LETTERS.labels(self.stage).inc()
        log.debug("message sent to the DLQ", stage=self.stage, error=error, topic=topic)
