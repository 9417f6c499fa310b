"""``casatwin dispatcher``: infractions in, units assigned in MariaDB, dispatch events out.

One step per batch of messages, in a consumer group (instances share the partitions):

1. ``casatwin.infractions``: an infraction whose decision needs a unit is put on the map
   (:class:`~casatwin.dispatch.planner.Planner`), the free units are read from MariaDB, the
   one that arrives first by road is booked (:func:`store.assign`: a unit another
   instance booked in the meantime is skipped and the next best tried) and ``assigned`` is
   published with the route, the ETA and the handling time; with no unit free the
   incident is queued.
2. ``casatwin.dispatch``: the units' reports (``en_route``, ``on_scene``, ``closed``, from
   the simulator) are recorded; a closed unit is free again and the queue is served. Every
   event of the topic, the instances' own ``assigned`` included, goes to the read model's
   timeline (``dispatch_events``): this consumer group is where each passes once, after
   it was published.
3. Every ``queue_check_s`` the queue is offered the free units (a unit back on duty, or
   freed by another instance); every ``congestion_refresh_s`` the routing takes in the
   segment speeds read from ``casatwin.congestion``.

Offsets are committed after the batch is recorded and only once everything it published
was acknowledged by the broker: should a publication fail (the broker away for longer than
``kafka.message_timeout_ms``) or still be waiting after the flush, nothing of the batch is
committed and it is read again. A replay assigns nothing twice (the dispatch id is the
infraction's) and rewrites the same timeline entries (keyed by dispatch id and status); an
infraction read again whose unit has not answered (still ``assigned``: no ``en_route``
yet) has its ``assigned`` event published again, the very event kept with the assignment
in MariaDB (same route, ETA and ``ts``). So ``assigned`` is delivered at least once, and
its consumers take a repeat of a dispatch id and status as the same step. Bad input goes
to the DLQ with the reason.

A store that goes away (MariaDB, the read model) pauses the dispatcher instead of ending
it: what was handled is committed, the consumer is sent back to the first message that was
not, and the step is tried again with backoff, logged each time (:mod:`outage`).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
import pymongo.errors
from prometheus_client import Counter, Gauge, Histogram
from pymongo.database import Database

from casatwin import metrics
from casatwin.backoff import Backoff
from casatwin.bus import messages, topics
from casatwin.bus.admin import require_topics, wait_for_broker
from casatwin.bus.consumer import group_consumer, reader
from casatwin.bus.consumer import messages as next_batch
from casatwin.bus.dlq import DeadLetterWriter
from casatwin.bus.producer import Producer
from casatwin.city.model import CityPack
from casatwin.config import Settings
from casatwin.dispatch import outage, store
from casatwin.dispatch.nearest import Choice
from casatwin.dispatch.planner import Incident, Planner, UnknownPlace, freshness
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.observability.families import observe_event_latency
from casatwin.readmodel import store as readmodel
from casatwin.registry import db

log = get_logger("dispatcher")

ASSIGNED = Counter("casatwin_dispatch_assigned_total", "Units assigned to incidents")
QUEUED = Counter("casatwin_dispatch_queued_total", "Incidents queued: no unit was free")
CONFLICTS = Counter(
    "casatwin_dispatch_conflicts_total", "Units booked by another instance first (picked again)"
)
RESPONSE = Histogram(
    "casatwin_dispatch_response_seconds",
    "From the offence to the unit on scene",
    buckets=(60, 120, 180, 300, 420, 600, 900, 1200, 1800, 3600),
)
QUEUE_LENGTH = Gauge("casatwin_dispatch_queue_length", "Incidents waiting for a unit")
UNIT_BUSY = Gauge(
    "casatwin_dispatch_unit_busy", "1 while the unit has an open assignment", ["unit", "station"]
)
STATION_UTILISATION = Gauge(
    "casatwin_dispatch_station_utilisation", "Share of a station's units on duty that are busy",
    ["station"],
)  # fmt: skip
BUSY_SECONDS = Counter(
    "casatwin_dispatch_unit_busy_seconds_total",
    "Time units spent assigned (rate() of it is the utilisation)",
    ["unit", "station"],
)
REPORT_EVERY_S = 10.0
MAX_PICKS = 5  # units booked by others before an incident is queued for the next check
QUEUE_PER_CHECK = 200
CONGESTION_BATCHES = 20  # of 5,000 windows, read per refresh
# Short: while the read model is away each write waits this long, and the consumer must
# poll again within kafka.max_poll_interval_ms.
READ_MODEL_TIMEOUT_MS = 2000
PUBLISH_WAIT_S = 10.0  # how long a step waits for the broker to acknowledge what it sent


@dataclass
class _Tally:
    assigned: int = 0
    republished: int = 0
    queued: int = 0
    skipped: int = 0
    dead: int = 0
    reports: int = 0
    since: float = field(default_factory=time.monotonic)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        pack: CityPack,
        *,
        client_id: str = "casatwin-dispatcher",
        infractions_topic: str = topics.INFRACTIONS,
        dispatch_topic: str = topics.DISPATCH,
        congestion_topic: str = topics.CONGESTION,
        clock: Any = time.time,
    ) -> None:
        self.settings = settings
        self.planner = Planner(pack, settings.dispatcher.min_speed_kmh)
        self.client_id = client_id
        self.infractions_topic = infractions_topic
        self.dispatch_topic = dispatch_topic
        self.congestion_topic = congestion_topic
        self.clock = clock
        self.rand = random.random
        self.outage = outage.Outage(
            Backoff(settings.dispatcher.backoff_base_s, settings.dispatcher.backoff_max_s)
        )
        self.conn: db.Connection | None = None
        self.timeline: Database | None = None  # the read model
        self.producer: Producer | None = None
        self.dlq: DeadLetterWriter | None = None
        self.consumer: confluent_kafka.Consumer | None = None
        self.congestion: confluent_kafka.Consumer | None = None
        self._tally = _Tally()
        self._unplaceable: set[str] = set()  # queued incidents already reported off the map
        self._unconfirmed: set[str] = set()  # queue orders the broker did not acknowledge
        self._next_queue_check = 0.0
        self._next_refresh = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Connect to MariaDB (UserError: unreachable, not migrated) and the broker."""
        self.conn = db.connect(self.settings.mariadb)
        self.timeline = readmodel.connect(self.settings.mongo, READ_MODEL_TIMEOUT_MS)
        try:
            readmodel.ensure_indexes(self.timeline, [readmodel.DISPATCH_EVENTS])
        except pymongo.errors.ConnectionFailure as exc:
            # Not fatal: its writes wait for it (and make the index at the first start after).
            log.warning("read model not reachable yet", reason=str(exc)[:200])
        wait_for_broker(self.settings.kafka)
        require_topics(
            self.settings.kafka,
            [self.infractions_topic, self.dispatch_topic, self.congestion_topic],
        )
        self.producer = Producer(self.settings.kafka, self.client_id)
        self.dlq = DeadLetterWriter(self.producer, "dispatcher")
        self.consumer = group_consumer(
            self.settings.kafka,
            self.settings.dispatcher.consumer_group,
            [self.infractions_topic, self.dispatch_topic],
            self.client_id,
            offset_reset="earliest",
        )
        # Every instance reads all the congestion windows: the whole map's speeds.
        self.congestion = reader(self.settings.kafka, [self.congestion_topic], self.client_id)
        log.info(
            "dispatcher started",
            city=self.planner.pack.name,
            units=len(self.planner.home),
            group=self.settings.dispatcher.consumer_group,
        )

    def run_until(self, stop: threading.Event) -> None:
        """Step until ``stop``; an unreachable store is waited for, other errors end it."""
        assert self.consumer is not None, "start() first"
        while not stop.is_set():
            try:
                if self.outage.failures:
                    self._probe()
                self.step()
            except Exception as exc:
                down = outage.unavailable(exc)
                if down is None:
                    raise
                self._pause(down, stop)

    def _pause(self, down: outage.StoreUnavailable, stop: threading.Event) -> None:
        now = time.monotonic()
        delay = self.outage.failed(down.store, now, self.rand)
        log.warning(
            f"{down.store} unreachable; dispatching paused, no message lost, retrying",
            reason=down.reason,
            failures_in_row=self.outage.failures,
            down_s=round(self.outage.lasted(now), 1),
            retry_in_s=round(delay, 2),
        )
        stop.wait(delay)

    def _probe(self) -> None:
        """Raise :class:`outage.StoreUnavailable` unless the store that was away answers."""
        if self.outage.store == outage.MARIADB:
            if self.conn is not None:
                with contextlib.suppress(Exception):  # broken: we only let go of it
                    self.conn.close()
                self.conn = None
            try:
                self.conn = db.connect(self.settings.mariadb)
            except UserError as exc:
                raise outage.StoreUnavailable(outage.MARIADB, exc.message) from None
        else:
            assert self.timeline is not None
            self.timeline.command("ping")
        log.info(
            f"{self.outage.store} reachable again; dispatching resumed",
            down_s=round(self.outage.lasted(time.monotonic()), 1),
            attempts=self.outage.failures,
        )
        self.outage.end()

    def step(self, timeout_s: float = 0.2) -> None:
        """One batch of messages, then the periodic work that is due."""
        assert self.consumer is not None and self.producer is not None
        batch = next_batch(self.consumer, max_messages=500, timeout_s=timeout_s)
        lost_before = self.producer.lost()
        handled = 0
        try:
            for message in batch:
                self._handle(message)
                handled += 1
        finally:
            if batch:
                self._settle(batch, handled, lost_before)
        now = time.monotonic()
        if now >= self._next_queue_check:
            self._next_queue_check = now + self.settings.dispatcher.queue_check_s
            self.serve_queue()
            self._update_gauges()
        if now >= self._next_refresh:
            self._next_refresh = now + self.settings.dispatcher.congestion_refresh_s
            self._read_congestion()
        self.producer.poll(0)
        self._maybe_report()

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
        if self.congestion is not None:
            self.congestion.close()
        if self.producer is not None:
            self.producer.close()
        if self.conn is not None:
            self.conn.close()
        if self.timeline is not None:
            self.timeline.client.close()
        self._maybe_report(force=True)
        log.info("dispatcher stopped")

    def _settle(self, batch: list[confluent_kafka.Message], handled: int, lost_before: int) -> None:
        """Commit the handled messages once what they published is out; send the consumer
        back to each partition's first message that was not handled, to read it again.
        Should a publication have failed since ``lost_before`` (:meth:`Producer.lost`) or
        still wait, none of the batch is committed: all of it is read again."""
        assert self.consumer is not None and self.producer is not None
        undelivered = self.producer.undelivered_since(lost_before, PUBLISH_WAIT_S)
        if undelivered is not None:
            log.warning(
                "messages published for this batch not acknowledged by the broker; nothing of"
                " it committed, it is read again (assignments are published again)",
                failed=undelivered.lost,
                still_waiting=undelivered.waiting,
                batch=len(batch),
            )
            handled = 0
        commit, again = outage.resume_points(
            [(m.topic(), m.partition(), m.offset()) for m in batch], handled
        )
        for (topic, partition), offset in again.items():
            try:
                self.consumer.seek(confluent_kafka.TopicPartition(topic, partition, offset))
            except confluent_kafka.KafkaException as exc:
                # Revoked meanwhile: its new owner starts from the committed offset.
                log.debug("partition not read again here", partition=partition, reason=str(exc))
        if commit:
            self.consumer.commit(
                offsets=[confluent_kafka.TopicPartition(t, p, o) for (t, p), o in commit.items()],
                asynchronous=False,
            )

    # -- messages ------------------------------------------------------------------------

    def _handle(self, message: confluent_kafka.Message) -> None:
        topic, raw = message.topic(), message.value()
        kind = topics.INFRACTIONS if topic == self.infractions_topic else topics.DISPATCH
        try:
            value = messages.decode(kind, raw or b"")
            if kind == topics.INFRACTIONS:
                self.handle_infraction(value)
            else:
                self.handle_report(value)
                self.record_timeline(value)
        except (messages.InvalidMessage, UnknownPlace) as exc:
            assert self.dlq is not None
            key = message.key()
            self.dlq.send(
                raw,
                str(exc),
                topic=topic,
                partition=message.partition(),
                offset=message.offset(),
                key=key.decode(errors="replace") if key else None,
            )
            self._tally.dead += 1

    def handle_infraction(self, infraction: dict[str, Any]) -> str | None:
        """Assign (or queue) a unit for one infraction; the dispatch id, or None if no unit
        is needed or it was handled before."""
        if not infraction["dispatch_required"]:
            self._tally.skipped += 1
            return None
        incident = self.planner.incident(infraction)
        assert self.conn is not None
        dispatch_id, now_ms = store.dispatch_id_of(incident.infraction_id), self._now_ms()

        def event_of(choice: Choice) -> dict[str, Any]:
            return assigned_event(
                self.planner, self.settings, dispatch_id, incident, choice, now_ms
            )

        try:
            booked = book(self.conn, self.planner, incident, now_ms, event_of)
        except store.AlreadyHandled:
            self._publish_again(dispatch_id)
            return None
        if booked is not None:
            _, choice, event = booked
            assert event is not None
            self._publish_assigned(event, choice)
            return dispatch_id
        if store.enqueue(self.conn, incident, self.planner.segment_id(incident)):
            QUEUED.inc()
            self._tally.queued += 1
            log.info(
                "no unit free; incident queued",
                infraction=incident.infraction_id,
                severity=incident.severity,
            )
        return None

    def handle_report(self, event: dict[str, Any]) -> None:
        """A unit's report: record arrival and close; a closed unit takes the queue."""
        status = event["status"]
        if status not in ("en_route", "on_scene", "closed"):
            return  # our own assigned events, or another producer's
        assert self.conn is not None
        after = store.record_status(
            self.conn, event["dispatch_id"], status, event["ts"], event.get("response_s")
        )
        if after is None:
            return
        self._tally.reports += 1
        if status == "on_scene" and after.response_s is not None:
            RESPONSE.observe(after.response_s)
            log.info(
                "unit on scene",
                unit=after.unit_id,
                infraction=after.infraction_id,
                response_s=round(after.response_s, 1),
            )
        if status == "closed":
            if after.assigned_ms is not None and after.closed_ms is not None:
                station = self.planner.station_of.get(after.unit_id or "", "")
                BUSY_SECONDS.labels(after.unit_id, station).inc(
                    max(0, after.closed_ms - after.assigned_ms) / 1000
                )
            self.serve_queue()

    def record_timeline(self, event: dict[str, Any]) -> None:
        """One step of an incident's timeline in the read model (the dashboard's history);
        a replayed event overwrites its own entry."""
        assert self.timeline is not None
        readmodel.record_dispatch_events(self.timeline, [event])

    # -- the queue -----------------------------------------------------------------------

    def serve_queue(self) -> int:
        """Give queued incidents (most severe, then oldest, first) the free units. One that
        none of them can take is passed over until the next check: it must not hold up
        the incidents behind it.

        An order given here answers no message that could be read again (the infraction
        was committed when it was queued), so the check itself makes sure it went out:
        orders the broker did not acknowledge are published again at the next checks,
        while their units have not answered."""
        assert self.conn is not None and self.producer is not None
        lost_before = self.producer.lost()
        sent = [d for d in sorted(self._unconfirmed) if self._publish_again(d)]
        served = 0
        passed_over: set[str] = set()
        for _ in range(QUEUE_PER_CHECK):
            try:
                result = store.assign_queued(
                    self.conn, self._pick_for_queued, self._now_ms(), passed_over
                )
            except store.UnitTaken:
                CONFLICTS.inc()
                continue
            if result is None:
                break
            if isinstance(result, store.PassedOver):
                passed_over.add(result.queued.dispatch_id)
                continue
            _, event, choice = result
            self._publish_assigned(event, choice)
            sent.append(event["dispatch_id"])
            served += 1
        if sent:
            undelivered = self.producer.undelivered_since(lost_before, PUBLISH_WAIT_S)
            self._unconfirmed = set(sent) if undelivered is not None else set()
            if undelivered is not None:
                log.warning(
                    "orders given from the queue not acknowledged by the broker; they are "
                    "published again at the next check",
                    orders=len(sent),
                    failed=undelivered.lost,
                    still_waiting=undelivered.waiting,
                )
        return served

    def _pick_for_queued(self, queued: store.Assignment, free: list[str]) -> store.Picked | None:
        try:
            incident = self.planner.queued_incident(queued)
        except UnknownPlace as exc:
            if queued.dispatch_id not in self._unplaceable:  # said once, not every check
                self._unplaceable.add(queued.dispatch_id)
                log.warning(
                    "queued incident not on this city's map; passed over",
                    infraction=queued.infraction_id,
                    reason=str(exc),
                )
            return None
        choice = self.planner.choose_free(incident, free)
        if choice is None:
            return None
        event = assigned_event(
            self.planner, self.settings, queued.dispatch_id, incident, choice, self._now_ms()
        )
        return choice.unit_id, choice.eta_s, event, choice

    # -- helpers -------------------------------------------------------------------------

    def _publish_assigned(self, event: dict[str, Any], choice: Choice) -> None:
        assert self.producer is not None
        self.producer.send_json(self.dispatch_topic, event, key=choice.unit_id)
        ASSIGNED.inc()
        offence = [{"event_ts": event["incident_ts"]}]
        observe_event_latency("event_to_dispatch", offence, event["ts"])
        self._tally.assigned += 1
        log.info(
            "unit assigned",
            unit=choice.unit_id,
            infraction=event["infraction_id"],
            eta_s=round(choice.eta_s),
            crow_m=round(choice.crow_m),
        )

    def _publish_again(self, dispatch_id: str) -> bool:
        """An order that may never have gone out (its infraction read again after it was
        booked, or a queue order the broker did not acknowledge): if its unit has not
        answered, the same ``assigned`` event goes out again; True if it did. A unit that
        reported ``en_route`` had it: nothing is sent."""
        assert self.conn is not None and self.producer is not None
        event = store.unanswered_order(self.conn, dispatch_id)
        if event is None:
            return False
        self.producer.send_json(self.dispatch_topic, event, key=event["unit_id"])
        self._tally.republished += 1
        log.info(
            "unit's order published again (it may not have gone out; no answer from the unit)",
            unit=event["unit_id"],
            infraction=event["infraction_id"],
        )
        return True

    def _read_congestion(self) -> None:
        if self.congestion is None:
            return
        seen = 0
        for _ in range(CONGESTION_BATCHES):
            batch = next_batch(self.congestion, max_messages=5000, timeout_s=0.0)
            for message in batch:
                try:
                    window = messages.decode(topics.CONGESTION, message.value() or b"")
                except messages.InvalidMessage:
                    continue  # the congestion producer's DLQ is its own business
                if window["scope"] == "segment" and window["count"] > 0:
                    seen += self.planner.observe_speed(
                        window["key"], window["avg_speed_kmh"], freshness(window)
                    )
            if not batch:
                break
        if self.planner.refresh():
            log.info("routing updated with current segment speeds", segments=seen)

    def _update_gauges(self) -> None:
        assert self.conn is not None
        units = store.units(self.conn)
        QUEUE_LENGTH.set(store.queue_length(self.conn))
        per_station: dict[str, list[int]] = {}
        for unit in units:
            busy = int(unit.dispatch_id is not None)
            UNIT_BUSY.labels(unit.unit_id, unit.station_id).set(busy)
            if unit.on_duty or busy:
                per_station.setdefault(unit.station_id, []).append(busy)
        for station, flags in per_station.items():
            STATION_UTILISATION.labels(station).set(sum(flags) / len(flags))

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _maybe_report(self, force: bool = False) -> None:
        t = self._tally
        if not force and time.monotonic() - t.since < REPORT_EVERY_S:
            return
        if t.assigned or t.republished or t.queued or t.dead or t.reports or force:
            log.info(
                "dispatch progress",
                assigned=t.assigned,
                published_again=t.republished,
                queued=t.queued,
                not_needed=t.skipped,
                unit_reports=t.reports,
                dead_letters=t.dead,
            )
        self._tally = _Tally()


def assigned_event(
    planner: Planner,
    settings: Settings,
    dispatch_id: str,
    incident: Incident,
    choice: Choice,
    now_ms: int,
) -> dict[str, Any]:
    """The ``assigned`` order for ``choice``: the unit, its route and ETA, how long the
    case takes (what the simulator needs to drive the unit there and back)."""
    pack = planner.pack
    event: messages.DispatchEvent = {
        "dispatch_id": dispatch_id,
        "infraction_id": incident.infraction_id,
        "unit_id": choice.unit_id,
        "status": "assigned",
        "ts": now_ms,
        "eta_s": round(choice.eta_s, 1),
        "route": planner.route_latlon(choice.route),
        "segments": [pack.segment_ids[s] for s in choice.route],
        "target_offset_m": round(incident.place.offset_m, 2),
        "handling_s": settings.dispatcher.handling_s(incident.type),
        "incident_ts": incident.event_ts,
    }
    return dict(event)


def book(
    conn: db.Connection,
    planner: Planner,
    incident: Incident,
    now_ms: int,
    event_of: Callable[[Choice], dict[str, Any]] | None = None,
) -> tuple[str, Choice, dict[str, Any] | None] | None:
    """Book the free unit that reaches ``incident`` first: (dispatch id, choice, the
    ``assigned`` event ``event_of(choice)`` stored with the booking), or None when no unit
    can go. A unit another dispatcher booked meanwhile is passed over;
    :class:`store.AlreadyHandled` if the infraction has a dispatch record already."""
    cursor = conn.cursor()
    try:
        free = store.free_units(cursor)
    finally:
        cursor.close()
    segment_id = planner.segment_id(incident)
    for _ in range(MAX_PICKS):
        choice = planner.choose_free(incident, free)
        if choice is None:
            return None
        event = event_of(choice) if event_of is not None else None
        try:
            return store.assign(conn, incident, segment_id, choice.unit_id, choice.eta_s,
                                now_ms, event), choice, event  # fmt: skip
        except store.UnitTaken:
            CONFLICTS.inc()
            free.remove(choice.unit_id)
    return None


def serve(settings: Settings, pack: CityPack, stop: threading.Event) -> None:
    """Run one dispatcher until ``stop`` (what ``casatwin dispatcher`` does)."""
    metrics.serve(settings.dispatcher.metrics_port, "dispatcher")
    dispatcher = Dispatcher(settings, pack)
    dispatcher.start()
    try:
        dispatcher.run_until(stop)
    finally:
        dispatcher.stop()
