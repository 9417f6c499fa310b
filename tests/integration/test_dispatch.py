"""The dispatcher against the real broker, MariaDB and read model: two instances racing for
units, bad input to the DLQ, the queue served by severity then age, units off duty and back,
an incident no unit can take passed over, a unit's reports out of order, every dispatch
event in the read model's timeline once, a MariaDB or read model outage waited out with
nothing lost, an ``assigned`` event the broker never acknowledged read again and published
again (and only to units that did not answer), a repeated order carried out once by the
simulator."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import orjson
import pytest

from casatwin.bus import topics
from casatwin.bus.producer import Producer
from casatwin.city import load, synthetic
from casatwin.devstack.servers import MariaDBServer, MongoWireServer, free_port
from casatwin.dispatch import store
from casatwin.dispatch.nearest import Place
from casatwin.dispatch.planner import Incident
from casatwin.dispatch.service import Dispatcher
from casatwin.readmodel import store as readmodel
from casatwin.registry import db
from casatwin.registry.loader import police_units_of
from casatwin.simulator.dispatching import DispatchBridge
from casatwin.simulator.service import SimulatorService
from casatwin.simulator.simulation import Simulation
from casatwin.waiting import wait_until
from casatwin_dashboard.history import find_timeline
from tests.conftest import query
from tests.dispatch_support import committed, create_topics, dispatch_db, read

pytestmark = pytest.mark.integration

UNITS_PER_STATION = 15


@pytest.fixture(scope="module")
def pack():
    """The grid with 30 units (two stations at opposite corners)."""
    raw = synthetic.grid(rows=6, cols=6, spacing_m=300)
    for station in raw["police_stations"]:
        prefix = station["units"][0].rsplit("-", 1)[0]
        station["units"] = [f"{prefix}-{i}" for i in range(1, UNITS_PER_STATION + 1)]
    return load.from_dict(raw)


def infraction(pack, n, segment, *, klass=2, event_ts=None, required=True, **extra):
    a = pack.seg_from[segment]
    return {
        "infraction_id": f"INF-{n:04d}",
        "type": "red_light",
        "event_ts": event_ts or int(time.time() * 1000),
        "detected_ts": int(time.time() * 1000),
        "lat": float(pack.node_lat[a]),
        "lon": float(pack.node_lon[a]),
        "segment_id": pack.segment_ids[segment],
        "measured": 0.0,
        "limit": 0.0,
        "vehicle": {"vehicle_id": f"TX-{n + 1:05d}"},  # the key: spread over the partitions
        "driver": {},
        "decision": {"class": klass, "dispatch_required": required},
        "dispatch_required": required,
    } | extra


def shared_or_own(request, shared, own):
    """``shared``; or, for a test parametrised "private", a server of its own (to stop)."""
    if getattr(request, "param", None) != "private":
        yield shared
        return
    server = own()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(request, mariadb, tmp_path):
    """The MariaDB server of the dispatchers."""
    yield from shared_or_own(request, mariadb, lambda: MariaDBServer(
        "127.0.0.1", free_port(), tmp_path / "mariadb", options={"innodb-buffer-pool-size": "32M"}
    ))  # fmt: skip


@pytest.fixture
def read_model(request, mongo, tmp_path):
    """The read model server of the dispatchers."""
    yield from shared_or_own(
        request, mongo, lambda: MongoWireServer("127.0.0.1", free_port(), tmp_path / "mongo")
    )


@pytest.fixture
def setup(broker_settings, server, read_model, pack):
    """Settings with private topics and databases, and a way to run dispatchers."""
    (infractions_topic,) = create_topics(broker_settings, 4, 1)
    (dispatch_topic,) = create_topics(broker_settings, 2, 1)
    settings = broker_settings.replace(
        mariadb=dispatch_db(server, pack).__dict__,
        mongo={"url": read_model.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        dispatcher={
            "consumer_group": f"dispatch-{uuid.uuid4().hex[:6]}",
            "queue_check_s": 0.3,
            "backoff_max_s": 1.0,
        },
    )
    running: list[tuple[Dispatcher, threading.Thread]] = []
    stop = threading.Event()

    def start(n: int, **dispatcher) -> list[Dispatcher]:
        for i in range(n):
            d = Dispatcher(
                settings.replace(dispatcher=dispatcher),
                pack,
                client_id=f"dispatcher-{i}",
                infractions_topic=infractions_topic,
                dispatch_topic=dispatch_topic,
            )
            d.start()
            t = threading.Thread(target=d.run_until, args=(stop,), daemon=True)
            t.start()
            running.append((d, t))
        return [d for d, _ in running]

    def send(topic, values):
        """Keyed as the contracts say (a unit's reports share a partition, so they stay in
        order; unkeyed, the sticky partitioner may split them across partitions)."""
        producer = Producer(settings.kafka, "test")
        for value in values:
            if isinstance(value, bytes):
                raw, key = value, None
            else:
                raw = orjson.dumps(value)
                key = value.get("unit_id") or value.get("vehicle", {}).get("vehicle_id")
            producer.send(topic, raw, key=key)
        assert producer.flush(10) == 0

    yield settings, infractions_topic, dispatch_topic, start, send
    stop.set()
    for d, t in running:
        t.join(15)
        d.stop()


def rows(settings, sql, args=None):
    return query(settings.mariadb, sql, args)


def infraction_partitions(dispatcher: Dispatcher) -> set[int]:
    assert dispatcher.consumer is not None
    return {
        tp.partition
        for tp in dispatcher.consumer.assignment()
        if tp.topic == dispatcher.infractions_topic
    }


def record_handled(dispatcher: Dispatcher) -> list[str]:
    """The ids of the infractions ``dispatcher`` handles from now on."""
    handled: list[str] = []
    handle = dispatcher.handle_infraction

    def recorded(value):
        handled.append(value["infraction_id"])
        return handle(value)

    dispatcher.handle_infraction = recorded
    return handled


def test_two_dispatchers_never_book_a_unit_twice(setup, pack):
    settings, infractions_topic, dispatch_topic, start, send = setup
    dispatchers = start(2)
    handled = [record_handled(d) for d in dispatchers]
    # Until the group has shared the partitions, one instance would take everything.
    assert wait_until(lambda: all(infraction_partitions(d) for d in dispatchers), 30), [
        infraction_partitions(d) for d in dispatchers
    ]
    n = 100
    segments = [i * 7 % pack.n_segments for i in range(n)]
    send(infractions_topic, [infraction(pack, i, s) for i, s in enumerate(segments)])
    count = "SELECT COUNT(*) FROM dispatch_assignments"
    assert wait_until(lambda: rows(settings, count)[0][0] == n, 60), rows(settings, count)
    by_status = dict(rows(settings, "SELECT status, COUNT(*) FROM dispatch_assignments"
                                    " GROUP BY status"))  # fmt: skip
    units = len(police_units_of(pack))
    assert by_status == {"assigned": units, "queued": n - units}
    booked = rows(settings, "SELECT unit_id, COUNT(*) FROM dispatch_assignments"
                            " WHERE unit_id IS NOT NULL GROUP BY unit_id")  # fmt: skip
    assert len(booked) == units and all(c == 1 for _, c in booked)
    assigned = [e for e in read(settings, dispatch_topic) if e["status"] == "assigned"]
    assert sorted(e["unit_id"] for e in assigned) == sorted(u for u, _ in booked)
    assert len({e["infraction_id"] for e in assigned}) == units
    assert all(e["route"] and e["segments"] and e["eta_s"] >= 0 for e in assigned)
    # Both instances took part: the race for units was real.
    assert all(handled), [len(h) for h in handled]
    assert set(handled[0]) | set(handled[1]) == {f"INF-{i:04d}" for i in range(n)}


def test_bad_input_goes_to_the_dlq_and_the_dispatcher_goes_on(setup, pack):
    settings, infractions_topic, _, start, send = setup
    start(1)
    unknown = infraction(pack, 1, 0, segment_id="s-nowhere")
    send(infractions_topic, [b"{not json", unknown, infraction(pack, 2, 3)])
    assert wait_until(lambda: rows(settings, "SELECT infraction_id FROM dispatch_assignments")
                    == [("INF-0002",)], 30)  # fmt: skip
    letters = [d for d in read(settings, topics.DLQ) if d["topic"] == infractions_topic]
    reasons = sorted(d["error"] for d in letters)
    assert len(reasons) == 2
    assert reasons[0].startswith("not valid JSON")
    assert "segment 's-nowhere' is not in city pack" in reasons[1]
    assert all(d["stage"] == "dispatcher" for d in letters)


def test_the_queue_is_served_by_severity_then_age_and_off_duty_units_wait(setup, pack):
    settings, infractions_topic, dispatch_topic, start, send = setup
    units = [u.unit_id for u in police_units_of(pack)]
    conn = db.open_connection(settings.mariadb)
    store.set_on_duty(conn, units, False)
    (dispatcher,) = start(1)
    t0 = int(time.time() * 1000) - 60_000
    send(infractions_topic, [
        infraction(pack, 1, 5, klass=3, event_ts=t0),
        infraction(pack, 2, 9, klass=1, event_ts=t0 + 2000),
        infraction(pack, 3, 11, klass=1, event_ts=t0 + 1000),
        infraction(pack, 4, 13, required=False),  # nothing to send
    ])  # fmt: skip
    queued = "SELECT COUNT(*) FROM dispatch_assignments WHERE status = 'queued'"
    assert wait_until(lambda: rows(settings, queued)[0][0] == 3, 30)
    time.sleep(1)  # a few queue checks: nobody is on duty
    assert rows(settings, queued)[0][0] == 3
    # One unit back on duty at a time: each takes the most severe, then oldest, incident.
    assert served_one_by_one(settings, conn, units[:3]) == ["INF-0003", "INF-0002", "INF-0001"]
    # A closed assignment frees its unit, which serves the queue again; times are kept.
    dispatch_id = store.dispatch_id_of("INF-0003")
    now = int(time.time() * 1000)
    send(dispatch_topic, [
        {"dispatch_id": dispatch_id, "infraction_id": "INF-0003", "unit_id": units[0],
         "status": "on_scene", "ts": now, "response_s": 75.0},
        {"dispatch_id": dispatch_id, "infraction_id": "INF-0003", "unit_id": units[0],
         "status": "closed", "ts": now + 5000},
    ])  # fmt: skip
    times = (
        "SELECT status, arrived_ms, closed_ms, response_s FROM dispatch_assignments"
        " WHERE dispatch_id = %s"
    )
    assert wait_until(lambda: rows(settings, times, (dispatch_id,))[0][0] == "closed", 20)
    assert rows(settings, times, (dispatch_id,)) == [("closed", now, now + 5000, 75.0)]
    states = {u.unit_id: u.status for u in store.units(conn)}
    assert states[units[0]] == "available" and states[units[3]] == "off_duty"
    conn.close()
    assert dispatcher.planner.pack is pack


def served_one_by_one(settings, conn, units) -> list[str]:
    """Bring ``units`` back on duty one at a time: the infraction each is given."""
    order = []
    mine = "SELECT infraction_id FROM dispatch_assignments WHERE unit_id = %s"
    for unit in units:
        store.set_on_duty(conn, [unit], True)
        assert wait_until(lambda u=unit: rows(settings, mine, (u,)), 20), f"{unit} got nothing"
        order.append(rows(settings, mine, (unit,))[0][0])
    return order


def test_an_incident_no_unit_can_take_does_not_hold_up_the_queue(setup, pack):
    settings, infractions_topic, _, start, send = setup
    units = [u.unit_id for u in police_units_of(pack)]
    conn = db.open_connection(settings.mariadb)
    store.set_on_duty(conn, units, False)
    start(1)
    t0 = int(time.time() * 1000) - 60_000
    # The most urgent incident was queued under another version of the city pack: its
    # segment is not on this map, no unit can be sent there.
    lost = Incident("INF-0001", "red_light", t0, 33.585, -7.625, Place(0, 10.0), 0)
    assert store.enqueue(conn, lost, "s-gone")
    send(infractions_topic, [
        infraction(pack, 2, 9, klass=3, event_ts=t0 + 1000),
        infraction(pack, 3, 11, klass=2, event_ts=t0 + 2000),
    ])  # fmt: skip
    queued = "SELECT infraction_id FROM dispatch_assignments WHERE status = 'queued'"
    assert wait_until(lambda: len(rows(settings, queued)) == 3, 30)
    # The others are served past it, still most severe first.
    assert served_one_by_one(settings, conn, units[:2]) == ["INF-0003", "INF-0002"]
    assert rows(settings, queued) == [("INF-0001",)]
    conn.close()


def test_an_arrival_reported_after_the_close_still_counts_once(setup, pack):
    settings, infractions_topic, dispatch_topic, start, send = setup
    start(1)
    t0 = int(time.time() * 1000) - 600_000
    send(infractions_topic, [infraction(pack, 1, 5, event_ts=t0)])
    dispatch_id = store.dispatch_id_of("INF-0001")
    unit_of = "SELECT unit_id FROM dispatch_assignments WHERE dispatch_id = %s"
    assert wait_until(lambda: rows(settings, unit_of, (dispatch_id,)), 30)
    ((unit,),) = rows(settings, unit_of, (dispatch_id,))
    # The close is applied first: the arrival still gives the true time, and the unit,
    # freed by the close, stays free.
    arrived, closed = t0 + 90_000, t0 + 400_000
    report = {"dispatch_id": dispatch_id, "infraction_id": "INF-0001", "unit_id": unit}
    send(dispatch_topic, [
        report | {"status": "closed", "ts": closed},
        report | {"status": "on_scene", "ts": arrived},
    ])  # fmt: skip
    times = (
        "SELECT status, arrived_ms, closed_ms, response_s, open_unit FROM dispatch_assignments"
        " WHERE dispatch_id = %s"
    )
    assert wait_until(lambda: rows(settings, times, (dispatch_id,))[0][3] is not None, 20)
    recorded = [("closed", arrived, closed, 90.0, None)]
    assert rows(settings, times, (dispatch_id,)) == recorded
    # Repeated (or later still) reports change nothing.
    conn = db.open_connection(settings.mariadb)
    try:
        for status, ts in (("on_scene", arrived + 1000), ("closed", closed + 1000),
                           ("en_route", closed + 2000)):  # fmt: skip
            assert store.record_status(conn, dispatch_id, status, ts, 1.0) is None
        assert rows(settings, times, (dispatch_id,)) == recorded
        assert {u.unit_id: u.status for u in store.units(conn)}[unit] == "available"
    finally:
        conn.close()


def test_every_dispatch_event_reaches_the_timeline_once_and_in_order(setup, pack):
    settings, infractions_topic, dispatch_topic, start, send = setup
    start(1)
    # An id no other test of the module uses: nx-27017 shares collections across databases.
    t0 = int(time.time() * 1000) - 120_000
    send(infractions_topic, [infraction(pack, 900, 5, event_ts=t0)])
    assert wait_until(lambda: read(settings, dispatch_topic), 30)
    (assigned,) = read(settings, dispatch_topic)
    report = {k: assigned[k] for k in ("dispatch_id", "infraction_id", "unit_id")}
    now = int(time.time() * 1000)
    on_scene = report | {"status": "on_scene", "ts": now + 2000, "response_s": 122.0}
    # As the simulator reports, with two messages delivered twice (a producer's retry, a
    # replay after a crash): the timeline keeps one entry per step.
    send(dispatch_topic, [
        assigned,
        report | {"status": "en_route", "ts": now + 1000},
        on_scene,
        on_scene,
        report | {"status": "closed", "ts": now + 3000},
    ])  # fmt: skip
    steps = ["assigned", "en_route", "on_scene", "closed"]
    timeline = readmodel.connect(settings.mongo)
    try:

        def statuses():
            return [e["status"] for e in find_timeline(timeline, "INF-0900")]

        # The unit's messages share a partition: once the close is in, so are the repeats.
        assert wait_until(lambda: "closed" in statuses(), 30), statuses()
        recorded = find_timeline(timeline, "INF-0900")
    finally:
        timeline.client.close()
    assert [e["status"] for e in recorded] == steps
    assert all(e["unit_id"] == assigned["unit_id"] for e in recorded)
    assert recorded[0]["route"] == assigned["route"] and recorded[0]["eta_s"] == assigned["eta_s"]
    assert recorded[2]["response_s"] == 122.0 and recorded[2]["ts"] == now + 2000


@pytest.fixture
def logged(caplog):
    """The dispatcher's log records of an event, from the test's start."""
    caplog.set_level(logging.INFO, logger="casatwin.dispatcher")

    def records(event: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "casatwin.dispatcher" and event in r.message]

    return records


@pytest.mark.parametrize("server", ["private"], indirect=True)
def test_a_mariadb_outage_pauses_the_dispatcher_which_then_loses_nothing(
    setup, server, pack, logged
):
    settings, infractions_topic, dispatch_topic, start, send = setup
    group = settings.dispatcher.consumer_group
    # No queue check after the first: the outage is met handling a message, half-way
    # through a batch.
    start(1, queue_check_s=3600)
    send(infractions_topic, [infraction(pack, 901, 5)])
    assert wait_until(lambda: committed(settings, group, dispatch_topic) == 1, 30)  # assigned
    (assigned,) = read(settings, dispatch_topic)
    assert committed(settings, group, infractions_topic) == 1

    server.stop()
    # One partition, so one batch: the first needs no unit (handled without MariaDB), the
    # second a unit (not handled while it is away).
    same = {"vehicle": {"vehicle_id": "TX-00902"}}
    send(infractions_topic, [
        infraction(pack, 904, 7, required=False, **same),
        infraction(pack, 902, 9, **same),
    ])  # fmt: skip
    paused = "MariaDB unreachable; dispatching paused, no message lost, retrying"
    assert wait_until(lambda: logged(paused), 30)
    # More arrives meanwhile: an infraction, the unit's reports.
    now = int(time.time() * 1000)
    report = {k: assigned[k] for k in ("dispatch_id", "infraction_id", "unit_id")}
    send(infractions_topic, [infraction(pack, 903, 11)])
    send(dispatch_topic, [
        report | {"status": "en_route", "ts": now},
        report | {"status": "on_scene", "ts": now + 1000, "response_s": 61.0},
    ])  # fmt: skip
    assert wait_until(lambda: len(logged(paused)) >= 3, 30)
    # Still running, retrying with backoff; committed: what was handled, and no more.
    line = logged(paused)[-1]
    assert line.levelname == "WARNING"
    fields = line.casatwin_fields
    assert fields["failures_in_row"] >= 3 and 0 < fields["retry_in_s"] <= 1.0
    assert fields["reason"].startswith(f"cannot reach MariaDB at 127.0.0.1:{server.port}")
    assert committed(settings, group, infractions_topic) == 2
    assert committed(settings, group, dispatch_topic) == 1

    server.start()
    rows_of = "SELECT infraction_id, status, unit_id IS NOT NULL FROM dispatch_assignments"
    expected = [("INF-0901", "on_scene", 1), ("INF-0902", "assigned", 1),
                ("INF-0903", "assigned", 1)]  # fmt: skip
    assert wait_until(lambda: sorted(rows(settings, rows_of)) == expected, 60), rows(
        settings, rows_of
    )
    assert logged("MariaDB reachable again; dispatching resumed")
    # Each infraction assigned once, every message handled and then committed.
    assert wait_until(lambda: committed(settings, group, dispatch_topic) == 5, 30)
    assert committed(settings, group, infractions_topic) == 4
    published = [e for e in read(settings, dispatch_topic) if e["status"] == "assigned"]
    assert sorted(e["infraction_id"] for e in published) == ["INF-0901", "INF-0902", "INF-0903"]
    arrival = "SELECT arrived_ms, response_s FROM dispatch_assignments WHERE infraction_id = %s"
    assert rows(settings, arrival, ("INF-0901",)) == [(now + 1000, 61.0)]


@pytest.mark.parametrize("read_model", ["private"], indirect=True)
def test_a_read_model_outage_pauses_the_dispatcher_until_the_timeline_is_written(
    setup, read_model, pack, logged
):
    settings, infractions_topic, dispatch_topic, start, send = setup
    group = settings.dispatcher.consumer_group
    start(1)
    send(infractions_topic, [infraction(pack, 905, 5)])
    assert wait_until(lambda: committed(settings, group, dispatch_topic) == 1, 30)  # assigned
    (assigned,) = read(settings, dispatch_topic)

    read_model.stop()
    now = int(time.time() * 1000)
    report = {k: assigned[k] for k in ("dispatch_id", "infraction_id", "unit_id")}
    send(dispatch_topic, [
        report | {"status": "en_route", "ts": now},
        report | {"status": "on_scene", "ts": now + 1000, "response_s": 61.0},
        report | {"status": "closed", "ts": now + 2000},
    ])  # fmt: skip
    paused = "read model (MongoDB) unreachable; dispatching paused, no message lost, retrying"
    assert wait_until(lambda: logged(paused), 30)
    assert committed(settings, group, dispatch_topic) == 1

    read_model.start()
    assert wait_until(lambda: committed(settings, group, dispatch_topic) == 4, 60)
    assert logged("read model (MongoDB) reachable again; dispatching resumed")
    timeline = readmodel.connect(settings.mongo)
    try:
        steps = [e["status"] for e in find_timeline(timeline, "INF-0905")]
    finally:
        timeline.client.close()
    assert steps == ["assigned", "en_route", "on_scene", "closed"]
    # MariaDB has the unit's reports too (recorded before the read model's write failed).
    times = "SELECT status, arrived_ms, closed_ms FROM dispatch_assignments WHERE dispatch_id = %s"
    assert rows(settings, times, (assigned["dispatch_id"],)) == [("closed", now + 1000, now + 2000)]


def steps_until(dispatcher: Dispatcher, condition, timeout_s: float) -> bool:
    """Step ``dispatcher`` on this thread until ``condition()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dispatcher.step()
        if condition():
            return True
    return False


def assigned_events(settings, topic, infraction_id=None):
    return [
        e for e in read(settings, topic)
        if e["status"] == "assigned" and infraction_id in (None, e["infraction_id"])
    ]  # fmt: skip


def stepped_dispatcher(setup, pack) -> Dispatcher:
    """A started dispatcher of ``setup``'s topics, stepped by the test (no thread)."""
    settings, infractions_topic, dispatch_topic, _, _ = setup
    dispatcher = Dispatcher(
        settings, pack, infractions_topic=infractions_topic, dispatch_topic=dispatch_topic
    )
    dispatcher.start()
    return dispatcher


def cut_off_producer(settings) -> Producer:
    """A producer whose broker is away longer than its message timeout: what it publishes
    fails, as after kafka.message_timeout_ms with the broker down."""
    return Producer(settings.kafka, "dispatcher-cut-off", **{
        "bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 1000,
    })  # fmt: skip


def booking_sql(infraction_id: str) -> str:
    return (
        "SELECT unit_id, status, assigned_event FROM dispatch_assignments"
        f" WHERE infraction_id = '{infraction_id}'"
    )


def test_an_assigned_event_the_broker_never_acknowledged_is_read_again_and_published_again(
    setup, pack, logged
):
    settings, infractions_topic, dispatch_topic, _, send = setup
    group = settings.dispatcher.consumer_group
    dispatcher = stepped_dispatcher(setup, pack)
    real, cut_off = dispatcher.producer, cut_off_producer(settings)
    dispatcher.producer = cut_off
    try:
        send(infractions_topic, [infraction(pack, 910, 5)])
        booked_sql = booking_sql("INF-0910")
        assert steps_until(dispatcher, lambda: rows(settings, booked_sql), 30)
        # Booked in MariaDB, the order lost: the infraction is not committed ...
        assert cut_off.lost() == 1
        assert committed(settings, group, infractions_topic) == 0
        (line,) = logged("not acknowledged by the broker")
        assert line.levelname == "WARNING" and line.casatwin_fields["failed"] == 1
        # ... but read again; its order is published again, and lost again.
        assert steps_until(dispatcher, lambda: cut_off.lost() == 2, 30)
        assert committed(settings, group, infractions_topic) == 0
        assert not read(settings, dispatch_topic)

        # The broker answers again: the next reading publishes the order, then commits.
        dispatcher.producer = real
        assert steps_until(
            dispatcher, lambda: committed(settings, group, infractions_topic) == 1, 30
        )
        (assigned,) = assigned_events(settings, dispatch_topic)
        ((unit, status, stored),) = rows(settings, booked_sql)
        # The order as it was booked (not routed again from where the units are now).
        assert assigned == orjson.loads(stored)
        assert assigned["unit_id"] == unit and status == "assigned"
        assert assigned["dispatch_id"] == store.dispatch_id_of("INF-0910")
        assert assigned["route"] and assigned["segments"] and assigned["handling_s"] > 0
        assert logged("unit's order published again")
    finally:
        cut_off.close(1)
        dispatcher.stop()


def test_a_queue_order_the_broker_never_acknowledged_is_published_again(setup, pack, logged):
    # A queued incident answers no message that could be read again: the queue check must
    # itself publish again an order the broker did not take.
    settings, infractions_topic, dispatch_topic, _, send = setup
    units = [u.unit_id for u in police_units_of(pack)]
    conn = db.open_connection(settings.mariadb)
    store.set_on_duty(conn, units, False)
    dispatcher = stepped_dispatcher(setup, pack)
    real, cut_off = dispatcher.producer, cut_off_producer(settings)
    booked_sql = booking_sql("INF-0920")
    try:
        send(infractions_topic, [infraction(pack, 920, 5)])
        queued = [(None, "queued", None)]
        assert steps_until(dispatcher, lambda: rows(settings, booked_sql) == queued, 30)
        # A unit comes back on duty while the broker is away from the dispatcher.
        dispatcher.producer = cut_off
        store.set_on_duty(conn, units[:1], True)
        assert steps_until(dispatcher, lambda: cut_off.lost() >= 1, 30)
        assert rows(settings, booked_sql)[0][:2] == (units[0], "assigned")
        assert logged("orders given from the queue not acknowledged")
        assert not read(settings, dispatch_topic)
        # The broker answers again: the next check publishes the very order, once.
        dispatcher.producer = real
        assert steps_until(dispatcher, lambda: assigned_events(settings, dispatch_topic), 30)
        for _ in range(5):
            dispatcher.step()  # later checks: acknowledged, so not sent again
        (assigned,) = assigned_events(settings, dispatch_topic)
        assert assigned == orjson.loads(rows(settings, booked_sql)[0][2])
        assert assigned["unit_id"] == units[0]
    finally:
        cut_off.close(1)
        dispatcher.stop()
        conn.close()


def test_a_replay_publishes_again_only_the_orders_no_unit_answered(setup, pack):
    settings, infractions_topic, dispatch_topic, start, send = setup
    start(1)
    send(infractions_topic, [infraction(pack, 920, 5), infraction(pack, 921, 9)])
    assert wait_until(lambda: len(assigned_events(settings, dispatch_topic)) == 2, 30)
    first = {e["infraction_id"]: e for e in assigned_events(settings, dispatch_topic)}
    # The unit sent to INF-0921 got its order: it is on its way.
    answered = first["INF-0921"]
    report = {k: answered[k] for k in ("dispatch_id", "infraction_id", "unit_id")}
    send(dispatch_topic, [report | {"status": "en_route", "ts": answered["ts"] + 500}])
    status = "SELECT status FROM dispatch_assignments WHERE dispatch_id = %s"
    assert wait_until(lambda: rows(settings, status, (answered["dispatch_id"],)) == [("en_route",)],
                    20)  # fmt: skip
    # Everything read again, as after a crash before the commit (a group with no offsets).
    replay = f"replay-{uuid.uuid4().hex[:6]}"
    start(1, consumer_group=replay)
    assert wait_until(lambda: committed(settings, replay, infractions_topic) == 2, 30)
    again = assigned_events(settings, dispatch_topic)
    assert [e["infraction_id"] for e in again].count("INF-0921") == 1
    repeats = [e for e in again if e["infraction_id"] == "INF-0920"]
    assert repeats == [first["INF-0920"]] * 2  # the same event, ts included
    # The timeline has each step of an incident once, the repeat included.
    timeline = readmodel.connect(settings.mongo)
    try:
        assert wait_until(lambda: committed(settings, replay, dispatch_topic) == 4, 30)
        assert [e["status"] for e in find_timeline(timeline, "INF-0920")] == ["assigned"]
        steps = [e["status"] for e in find_timeline(timeline, "INF-0921")]
        assert steps == ["assigned", "en_route"]
    finally:
        timeline.client.close()


def test_the_simulator_carries_out_a_repeated_order_once(setup, pack):
    settings, infractions_topic, dispatch_topic, start, send = setup
    start(1, handling_red_light_s=20.0)
    send(infractions_topic, [infraction(pack, 930, 5)])
    assert wait_until(lambda: assigned_events(settings, dispatch_topic), 30)
    (order,) = assigned_events(settings, dispatch_topic)
    unit, dispatch_id = order["unit_id"], order["dispatch_id"]
    simulator = settings.replace(simulator={"taxis": 10}).simulator
    sim = Simulation(pack, simulator, int(time.time() * 1000))
    bridge = DispatchBridge(SimulatorService(settings, sim, realtime=False), topic=dispatch_topic)
    # What start() opens but its consumer: the orders are handed to the bridge here, on the
    # thread that steps the simulation (as the simulator's thread runs them).
    bridge._producer = Producer(settings.kafka, "test-bridge")
    bridge._drive(sim.fleet, order)
    for _ in range(20):  # on its way, it is given the same order again
        sim.tick()
    bridge._drive(sim.fleet, order)
    for _ in range(20_000):
        for event in sim.tick().events:
            bridge._on_event(event)
        bridge._close_due(sim.fleet)
        if dispatch_id not in bridge.jobs:
            break
    assert dispatch_id not in bridge.jobs, sim.fleet.unit_status(unit)
    bridge._drive(sim.fleet, order)  # and once more after it closed
    assert sim.fleet.unit_status(unit).task == "returning" and not bridge.jobs
    assert bridge._producer.flush(10) == 0
    reports = [e["status"] for e in read(settings, dispatch_topic) if e["status"] != "assigned"]
    assert reports == ["en_route", "on_scene", "closed"]
    close = "SELECT status FROM dispatch_assignments WHERE dispatch_id = %s"
    assert wait_until(lambda: rows(settings, close, (dispatch_id,)) == [("closed",)], 20)
