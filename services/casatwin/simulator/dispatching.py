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

Every change to the fleet runs on the simulator's thread (:meth:`SimulatorService.submit`
and the arrival listener), so the bridge's own state needs no lock.
"""

from __future__ import annotations

import threading
from collections import deque
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


@dataclass
class _Job:
    event: dict[str, Any]
    on_scene_s: float | None = None  # simulated seconds since start


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
        self._producer: Producer | None = None
        self.consumer: confluent_kafka.Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        kafka = self.service.settings.kafka
        self._producer = Producer(kafka, self.client_id)
        self.consumer = group_consumer(kafka, self.group_id, [self.topic], self.client_id)
        self.service.add_listener(self._on_event)
        self._thread = threading.Thread(target=self._run, name="dispatch-bridge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
        if self.consumer is not None:
            self.consumer.close()
        if self._producer is not None:
            self._producer.close()

    # -- the bridge's thread: orders in, closing checks out ------------------------------

    def _run(self) -> None:
        assert self.consumer is not None
        while not self._stop.is_set():
            for message in next_batch(self.consumer, max_messages=100, timeout_s=CLOSE_CHECK_S):
                try:
                    event = messages.decode(topics.DISPATCH, message.value() or b"")
                except messages.InvalidMessage as exc:
                    log.warning("dispatch event ignored", reason=str(exc))
                    continue
                if event["status"] == "assigned" and event.get("segments"):
                    self.service.submit(lambda fleet, e=event: self._drive(fleet, e))
            self.service.submit(self._close_due)
            assert self._producer is not None
            self._producer.poll(0)
            self.consumer.commit(asynchronous=True)

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
        assert self._producer is not None
        event = {
            "dispatch_id": order["dispatch_id"],
            "infraction_id": order["infraction_id"],
            "unit_id": order["unit_id"],
            "status": status,
            "ts": self.service.sim.t_ms,
            **extra,
        }
        self._producer.send_json(self.topic, event, key=order["unit_id"])
