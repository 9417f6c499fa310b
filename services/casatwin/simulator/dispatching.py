"""The simulator's side of dispatch: drive the units the dispatcher assigns.

Reads ``assigned`` events from ``casatwin.dispatch`` (its own consumer group), sends the
unit along the route (:meth:`Fleet.dispatch`; if the unit has moved since the dispatcher
saw it — returning to its station, say — it is routed from where it is), and reports on
the same topic: ``en_route`` when it sets off, ``on_scene`` with the response time when it
arrives, and ``closed`` once the handling time has passed in simulated time, when it heads
back to its station (available again). Units of another simulation are ignored.

``assigned`` comes at least once: the dispatcher publishes an order again when it cannot be
sure it went out. A repeat of an order the bridge is carrying out, or has closed, is
ignored: the unit is neither sent again nor taken off the job it is on now.

Nothing is marked done before it is: an order's offset is committed only once the
simulator has taken it into its fleet (sent the unit, or ignored it as a repeat or another
simulation's unit). The orders of a batch are handed to the simulator's thread, followed
by a command that marks the batch's offsets taken (commands run in order); the bridge's
thread commits the taken offsets of the partitions it still owns. A report is kept until
the broker acknowledges it, and sent again, unchanged (same ``ts``), if it failed: one at a
time per unit, so a unit's reports reach the topic in the order they happened.

Every change to the fleet runs on the simulator's thread (:meth:`SimulatorService.submit`
and the arrival listener), so ``jobs`` and ``closed`` need no lock; the taken offsets and
the reports waiting for the broker are shared with the bridge's thread, under locks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import confluent_kafka

from casatwin.bus import messages, topics
from casatwin.bus.consumer import group_consumer
from casatwin.bus.consumer import messages as next_batch
from casatwin.bus.producer import Producer
from casatwin.logs import get_logger
from casatwin.simulator.service import SimulatorService
from casatwin.simulator.traffic import Fleet, FleetEvent

log = get_logger("simulator.dispatch")

CLOSE_CHECK_S = 0.2  # how often (wall clock) due closings are looked at
CLOSED_REMEMBERED = 10_000  # closed dispatch ids kept to recognise a late repeated order
REPORTS_KEPT = 10_000  # reports waiting for the broker, at most (the oldest go first)
WARN_EVERY_S = 10.0  # at most one warning this often about dropped reports

Partition = tuple[str, int]
Send = Callable[[dict[str, Any], Callable[[bool], None]], bool]


@dataclass
class _Job:
    event: dict[str, Any]
    on_scene_s: float | None = None  # simulated seconds since start


class _TakenOffsets:
    """Per partition, the offset after the last order the simulator has taken (marked on
    the simulator's thread, committed from the bridge's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[Partition, int] = {}

    def mark(self, ends: dict[Partition, int]) -> None:
        with self._lock:
            for where, offset in ends.items():
                self._next[where] = max(offset, self._next.get(where, 0))

    def pop(self) -> dict[Partition, int]:
        with self._lock:
            taken, self._next = self._next, {}
            return taken


class _Outbox:
    """The units' reports until the broker acknowledges each.

    One report per unit is with the producer at a time, the unit's next ones wait behind
    it: a report that failed is sent again (:meth:`send_again`) before any later report of
    its unit, so a unit's reports keep their order. At most ``limit`` reports are kept; over
    that, the oldest is dropped, with a warning.
    """

    def __init__(self, send: Send, limit: int = REPORTS_KEPT) -> None:
        self._send = send
        self._limit = limit
        # Reentrant: the producer may serve delivery callbacks inside a send (buffer full).
        self._lock = threading.RLock()
        self._units: dict[str, deque[dict[str, Any]]] = {}  # unit → its reports, oldest first
        self._in_flight: set[str] = set()  # units whose first report is with the producer
        self._size = 0
        self._failing = False  # a report failed and none was acknowledged since
        self.dropped = 0
        self._warned_at: float | None = None

    def __len__(self) -> int:
        with self._lock:
            return self._size

    def add(self, report: dict[str, Any]) -> None:
        with self._lock:
            if self._size >= self._limit:
                self._drop_oldest()
            unit = report["unit_id"]
            self._units.setdefault(unit, deque()).append(report)
            self._size += 1
            self._send_first(unit)

    def send_again(self) -> None:
        """Send the reports that failed or were refused (each unit's first, if not out)."""
        with self._lock:
            for unit in list(self._units):
                self._send_first(unit)

    def _send_first(self, unit: str) -> None:
        if unit in self._in_flight or unit not in self._units:
            return
        report = self._units[unit][0]
        self._in_flight.add(unit)
        if not self._send(report, lambda ok: self._delivered(unit, report, ok)):
            self._in_flight.discard(unit)  # refused (local buffer full): sent again later

    def _delivered(self, unit: str, report: dict[str, Any], acknowledged: bool) -> None:
        with self._lock:
            self._in_flight.discard(unit)
            if not acknowledged:
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "unit reports not acknowledged by the broker; kept and sent again"
                        " until they are",
                        waiting=self._size,
                    )
                return
            if self._failing:
                self._failing = False
                log.info("unit reports acknowledged by the broker again", waiting=self._size)
            reports = self._units.get(unit)
            if reports and reports[0] is report:  # else it was dropped meanwhile
                reports.popleft()
                self._size -= 1
                if not reports:
                    del self._units[unit]
            self._send_first(unit)

    def _drop_oldest(self) -> None:
        unit = min(self._units, key=lambda u: self._units[u][0]["ts"])
        report = self._units[unit].popleft()
        if not self._units[unit]:
            del self._units[unit]
        self._size -= 1
        self.dropped += 1
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "too many unit reports waiting for the broker; the oldest dropped, the"
                " dispatcher will not hear of it",
                kept=self._limit,
                dropped=self.dropped,
                unit=unit,
                status=report["status"],
                dispatch=report["dispatch_id"],
            )


class DispatchBridge:
    def __init__(
        self,
        service: SimulatorService,
        *,
        topic: str = topics.DISPATCH,
        group_id: str = "casatwin-simulator-dispatch",
        client_id: str = "casatwin-simulator-dispatch",
    ) -> None:
        self.service = service
        self.topic = topic
        self.group_id = group_id
        self.client_id = client_id
        self.jobs: dict[str, _Job] = {}  # dispatch id → job (simulator thread only)
        self.closed: set[str] = set()  # the last CLOSED_REMEMBERED closed dispatch ids
        self._closed_order: deque[str] = deque()
        self.messages_read = 0  # events read from the topic, orders or not (bridge thread)
        # Set once the group gave this bridge its partitions. Other threads wait on this, not
        # on the consumer: its calls from another thread block while this one consumes.
        self.assigned = threading.Event()
        self._taken = _TakenOffsets()
        self._outbox = _Outbox(self._send)
        self._producer: Producer | None = None
        self.consumer: confluent_kafka.Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def reports_waiting(self) -> int:
        """Reports not yet acknowledged by the broker."""
        return len(self._outbox)

    def start(self) -> None:
        kafka = self.service.settings.kafka
        self._producer = Producer(kafka, self.client_id)
        self.consumer = group_consumer(
            kafka,
            self.group_id,
            [self.topic],
            self.client_id,
            on_assign=lambda _consumer, _partitions: self.assigned.set(),
            on_commit=self._on_commit,
        )
        self.service.add_listener(self._on_event)
        self._thread = threading.Thread(target=self._run, name="dispatch-bridge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
        if self.consumer is not None:
            self._commit_taken()
            self.consumer.close()
        if self._producer is not None:
            self._outbox.send_again()
            self._producer.close()
            if waiting := len(self._outbox):
                log.warning(
                    "unit reports not acknowledged by the broker at exit; the dispatcher will"
                    " not hear of them",
                    reports=waiting,
                )

    # -- the bridge's thread: orders in, closing checks and reports out -------------------

    def _run(self) -> None:
        assert self._producer is not None
        while not self._stop.is_set():
            self._read_orders()
            self.service.submit(self._close_due)
            self._producer.poll(0)
            self._outbox.send_again()
            self._commit_taken()

    def _read_orders(self) -> None:
        """Hand a batch's orders to the simulator, then the mark that they were taken."""
        assert self.consumer is not None
        ends: dict[Partition, int] = {}
        for message in next_batch(self.consumer, max_messages=100, timeout_s=CLOSE_CHECK_S):
            self.messages_read += 1
            ends[(message.topic(), message.partition())] = message.offset() + 1
            try:
                event = messages.decode(topics.DISPATCH, message.value() or b"")
            except messages.InvalidMessage as exc:
                log.warning("dispatch event ignored", reason=str(exc))
                continue  # taken as it is: nothing to do with it
            if event["status"] == "assigned" and event.get("segments"):
                self.service.submit(lambda fleet, e=event: self._drive(fleet, e))
        if ends:
            # Runs after the orders above (commands are applied in order).
            self.service.submit(lambda _fleet: self._taken.mark(ends))

    def _commit_taken(self) -> None:
        """Commit the offsets of the orders the simulator has taken, of the partitions this
        instance still owns: a revoked one's new owner reads from the committed offset."""
        assert self.consumer is not None
        taken = self._taken.pop()
        if not taken:
            return
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        if revoked := sorted(p for t, p in taken if (t, p) not in owned):
            log.debug("orders' offsets not committed here: partition revoked", partitions=revoked)
        offsets = [
            confluent_kafka.TopicPartition(t, p, o)
            for (t, p), o in taken.items()
            if (t, p) in owned
        ]
        if not offsets:
            return
        try:
            # Asynchronous: a commit waits for the group coordinator, and this thread must
            # go on sending reports again while the broker is away.
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except confluent_kafka.KafkaException as exc:
            log.debug("orders' offsets not committed", reason=str(exc))

    @staticmethod
    def _on_commit(
        err: confluent_kafka.KafkaError | None, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        failed = [tp.partition for tp in partitions if tp.error is not None]
        if err is not None or failed:
            # A later commit of the partition covers it; else its orders are read again
            # (at least once: a repeat of an order the bridge knows changes nothing).
            log.debug("orders' offsets not committed", reason=str(err), partitions=failed)

    # -- on the simulator's thread -------------------------------------------------------

    def _drive(self, fleet: Fleet, event: dict[str, Any]) -> None:
        unit, dispatch_id = event["unit_id"], event["dispatch_id"]
        if dispatch_id in self.jobs or dispatch_id in self.closed:
            log.debug("repeated order ignored", unit=unit, dispatch=dispatch_id)
            return
        if unit not in fleet.index:
            log.debug("order for a unit of another simulation", unit=unit)
            return
        offset = event.get("target_offset_m")
        try:
            fleet.dispatch(unit, event["segments"], offset, tag=event["dispatch_id"])
        except ValueError:
            fleet.dispatch(unit, self._route_from_here(fleet, unit, event), offset,
                           tag=event["dispatch_id"])  # fmt: skip
        self.jobs[event["dispatch_id"]] = _Job(event)
        self._report(event, "en_route")
        log.info("unit sent", unit=unit, dispatch=event["dispatch_id"], eta_s=event.get("eta_s"))

    @staticmethod
    def _route_from_here(fleet: Fleet, unit: str, event: dict[str, Any]) -> list[int]:
        pack = fleet.net.pack
        here = fleet.unit_status(unit)
        target = pack.segment_index[event["segments"][-1]]
        if here.segment == target and here.offset_m <= (event.get("target_offset_m") or 0.0):
            return [target]
        middle = fleet.router.path(int(pack.seg_to[here.segment]), int(pack.seg_from[target]))
        return [here.segment, *middle.tolist(), target]

    def _on_event(self, event: FleetEvent) -> None:
        if event.kind != "arrived" or event.tag not in self.jobs:
            return
        job = self.jobs[event.tag]
        if job.on_scene_s is not None:
            return
        job.on_scene_s = self.service.sim.elapsed_s
        now = self.service.sim.t_ms
        incident_ts = job.event.get("incident_ts")
        extra = {"response_s": round((now - incident_ts) / 1000, 1)} if incident_ts else {}
        self._report(job.event, "on_scene", **extra)

    def _close_due(self, fleet: Fleet) -> None:
        elapsed = self.service.sim.elapsed_s
        for dispatch_id, job in list(self.jobs.items()):
            if job.on_scene_s is None:
                continue
            if elapsed - job.on_scene_s < float(job.event.get("handling_s") or 0.0):
                continue
            del self.jobs[dispatch_id]
            self._remember_closed(dispatch_id)
            fleet.return_to_station(job.event["unit_id"])
            self._report(job.event, "closed")

    def _remember_closed(self, dispatch_id: str) -> None:
        self.closed.add(dispatch_id)
        self._closed_order.append(dispatch_id)
        if len(self._closed_order) > CLOSED_REMEMBERED:
            self.closed.discard(self._closed_order.popleft())

    def _report(self, order: dict[str, Any], status: str, **extra: Any) -> None:
        """Publish one step of the order; kept and sent again until acknowledged, with
        the ``ts`` of when it happened."""
        event = {
            "dispatch_id": order["dispatch_id"],
            "infraction_id": order["infraction_id"],
            "unit_id": order["unit_id"],
            "status": status,
            "ts": self.service.sim.t_ms,
            **extra,
        }
        self._outbox.add(event)

    def _send(self, report: dict[str, Any], on_delivery: Callable[[bool], None]) -> bool:
        assert self._producer is not None
        return self._producer.send_json(
            self.topic, report, key=report["unit_id"], on_delivery=on_delivery
        )
