"""The infractions sink (``foreachBatch``): decide, record, publish, index. Driver side.

For each micro-batch's detections, in this order:

1. **enrich and decide** — one batched registry lookup for the batch's vehicles, the rules
   engine's decision, and the ledger (MariaDB) in one transaction per infraction; the
   ledger is idempotent on ``infraction_id`` and returns the decision *it stored first*, so
   a replayed batch gets the original decision even though the driver's points have moved;
2. **publish** on ``casatwin.infractions`` at most once per infraction id across crashes
   (:class:`~casatwin.processor.publication.BatchPublisher`);
3. **index** the messages in the read model (upsert keyed by ``infraction_id``).

A batch that fails midway raises: Spark does not commit it and it is replayed with the same
detections, which each step absorbs. Net effect under kill -9 and restart: every infraction
exactly once in the ledger, the read model and the topic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from casatwin.bus import topics
from casatwin.bus.messages import InvalidMessage, check, encode
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.observability.families import observe_event_latency
from casatwin.processor.network import RoadNetwork
from casatwin.processor.publication import BatchPublisher
from casatwin.processor.stages import SinkTimes

log = get_logger("processor")

INFRACTIONS = Counter("casatwin_processor_infractions_total", "Infractions published", ["type"])
SINK_SECONDS = Histogram(
    "casatwin_processor_sink_seconds",
    "Time to decide, record, publish and index one micro-batch's infractions",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)

OPTIONAL_FIELDS = ("segment_id", "intersection_id", "zone_id", "parking_kind")


@dataclass(frozen=True)
class Decided:
    """What the registry and the rules say about one detection (as the ledger stored it),
    or why it could not be decided (``rejected``: it goes to the DLQ, the batch goes on)."""

    vehicle: dict[str, Any]
    driver: dict[str, Any]
    decision: dict[str, Any]
    dispatch_required: bool
    rejected: str | None = None


class Decider(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def decide(self, detections: Sequence[dict[str, Any]]) -> list[Decided]:
        """Look up, decide and record in the ledger; the stored outcome per detection."""
        ...


def infraction_message(
    detection: dict[str, Any], decided: Decided, district: str | None
) -> dict[str, Any]:
    """The ``casatwin.infractions`` message of one decided detection."""
    message = {
        "infraction_id": detection["infraction_id"],
        "type": detection["type"],
        "vehicle_id": detection["vehicle_id"],  # also the message key
        "event_ts": int(detection["event_ts"]),
        "evidence_ts": int(detection["evidence_ts"]),
        "detected_ts": int(detection["detected_ts"]),
        "lat": float(detection["lat"]),
        "lon": float(detection["lon"]),
        "measured": float(detection["measured"]),
        "limit": float(detection["limit"]),
        "vehicle": decided.vehicle,
        "driver": decided.driver,
        "decision": decided.decision,
        "dispatch_required": decided.dispatch_required,
    }
    for name in OPTIONAL_FIELDS:
        if detection.get(name) is not None:
            message[name] = detection[name]
    if district is not None:
        message["district"] = district
    return message


class BatchInterrupted(RuntimeError):
    """The query was stopped while its micro-batch was being collected (it will be replayed)."""


def collect_rows(frame: Any) -> list[dict[str, Any]]:
    """A ``foreachBatch`` micro-batch's rows, on the driver.

    Stopping a query interrupts the collect. Spark tells an interruption from a failure by a
    regex over the error's text that recurses once per character: on py4j's message, with
    the whole Java stack trace in it, the stream thread dies of a StackOverflowError and
    prints a thousand lines. The interruption is raised again with a short message that the
    regex still recognises, so a stop is quiet and the batch is replayed on restart.
    """
    from py4j.protocol import Py4JJavaError

    try:
        return [row.asDict() for row in frame.collect()]
    except Py4JJavaError as exc:
        if "java.lang.InterruptedException" not in str(exc):
            raise
        raise BatchInterrupted(
            "py4j.protocol.Py4JJavaError: An error occurred while calling collect: "
            "java.lang.InterruptedException (the query is stopping)"
        ) from None


class InfractionSink:
    """``foreachBatch`` target of the infractions query; ``start()`` before the query."""

    def __init__(
        self, settings: Settings, journal_dir: Path, decider: Decider, network: RoadNetwork
    ) -> None:
        from casatwin.readmodel.store import INFRACTIONS, Retention

        self.settings = settings
        self.decider = decider
        self.network = network
        self.times = SinkTimes()  # the driver's work per batch, for the limiting stage
        self.publisher = BatchPublisher(
            settings.kafka,
            topics.INFRACTIONS,
            journal_dir,
            f"{settings.processor.client_id}-infractions",
            id_field="infraction_id",
            key_field="vehicle_id",
        )
        self._db: Any = None
        self._dlq: Any = None
        self._retention = Retention(
            INFRACTIONS, "event_ts", settings.privacy.infraction_retention_days
        )

    def start(self) -> None:
        from casatwin.readmodel.store import INFRACTIONS, connect, ensure_indexes

        self.decider.start()
        self.publisher.start()
        self._db = connect(self.settings.mongo)
        ensure_indexes(self._db, [INFRACTIONS])

    def _dead_letter(self, item: dict[str, Any], reason: str, stage: str) -> None:
        from casatwin.bus.dlq import DeadLetterWriter
        from casatwin.bus.producer import Producer

        if self._dlq is None:
            client = f"{self.settings.processor.client_id}-sink-dlq"
            self._dlq = Producer(self.settings.kafka, client)
        lost_before = self._dlq.lost()
        DeadLetterWriter(self._dlq, stage).send(encode(item), reason, key=item.get("vehicle_id"))
        # Not in the DLQ: the batch fails and is run again, rather than the infraction lost.
        what = f"casatwin.dlq, infraction {item.get('infraction_id')}"
        self._dlq.confirm(lost_before, 10.0, what)
        log.warning("infraction set aside in the DLQ", stage=stage, reason=reason,
                    infraction=item.get("infraction_id"))  # fmt: skip

    def stop(self) -> None:
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = None
        self.publisher.stop()
        self.decider.stop()
        if self._db is not None:
            self._db.client.close()
            self._db = None

    def __call__(self, frame: Any, batch_id: int) -> None:
        detections = collect_rows(frame)  # runs the batch's tasks
        with self.times.timing(batch_id):
            self.write(batch_id, detections)

    def write(self, batch_id: int, detections: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decide, record, publish and index one batch; the messages as published."""
        from casatwin.readmodel.store import upsert_infractions

        if not detections:
            return []
        started = time.perf_counter()
        unique = {d["infraction_id"]: d for d in detections}  # a replay inside one batch
        ordered = sorted(unique.values(), key=lambda d: (d["event_ts"], d["infraction_id"]))
        decided = self.decider.decide(ordered)
        messages = []
        for detection, outcome in zip(ordered, decided, strict=True):
            if outcome.rejected is not None:
                self._dead_letter(detection, outcome.rejected, "processor.decide")
                continue
            message = infraction_message(
                detection,
                outcome,
                self.network.district_of(detection["lat"], detection["lon"]),
            )
            try:
                check(topics.INFRACTIONS, message)
            except InvalidMessage as exc:  # a bug upstream: set it aside, keep the batch
                self._dead_letter(message, str(exc), "processor.publish")
                continue
            messages.append(message)
        published = self.publisher.publish(batch_id, messages)
        upsert_infractions(self._db, published)
        self._prune(ordered[-1]["event_ts"])
        for message in published:
            INFRACTIONS.labels(message["type"]).inc()
        SINK_SECONDS.observe(time.perf_counter() - started)
        observe_event_latency("event_to_published", published)
        log.debug(
            "infractions published",
            batch=batch_id,
            count=len(published),
            types=",".join(sorted({m["type"] for m in published})),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return published

    def _prune(self, newest_event_ms: int) -> None:
        removed = self._retention.apply(self._db, int(newest_event_ms))
        if removed:
            log.info("old infractions removed from the read model (the ledger keeps them)",
                     infractions=removed, retention_days=self._retention.days)  # fmt: skip
