"""The dispatch loop closed, through the real chain: a scripted red-light runner in the
simulator → its telemetry on ``casatwin.telemetry`` → the Spark processor detects and decides
the infraction → ``casatwin.infractions`` → the dispatcher assigns the nearest unit → the
simulator's dispatch bridge drives it along the route (its telemetry moves) → on scene →
closed → available again, with the response time in MariaDB and on ``casatwin.dispatch``.

A red light alone is settled by a fine (no unit); the runner's driver has a suspended
licence, so loi 52-05 sends the case to court and the vehicle must be stopped: a unit.

Lean for CI: the 5×5 grid, 20 taxis, the processor's infractions query only, in this process
on the session's Spark, the simulation paced at up to ~40× real time, 30 s of handling.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import orjson
import pytest

from casatwin.bus import topics
from casatwin.bus.admin import ensure_topics
from casatwin.city import load, synthetic
from casatwin.city.geometry import haversine_m
from casatwin.config import Settings
from casatwin.devstack.vault import generate_secrets
from casatwin.dispatch import store
from casatwin.dispatch.service import Dispatcher
from casatwin.fleet import FLEET_SIZE
from casatwin.processor.app import InfractionsQuery
from casatwin.registry import db, loader
from casatwin.simulator import scenario as scenarios
from casatwin.simulator.dispatching import DispatchBridge
from casatwin.simulator.service import SimulatorService
from casatwin.simulator.simulation import Simulation
from tests.conftest import REGISTRY_AS_OF, query, scratch_database
from tests.dispatch_support import create_topics, read, wait_for
from tests.processor_support import (
    RunningApp,
    grid_city,
    ledger_rows,
    read_topic,
    topic_ends,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

RUNNER = "TX-00012"
SCENARIO = f"""\
name: dispatch-loop
city: grid
traffic: {{taxis: 20, speeder_share: 0, red_light_runner_share: 0, illegal_parker_share: 0}}
duration_s: 600
events:
  - {{type: red_light, vehicle: {RUNNER}, at: 20, intersection: Row 2 x Column 2}}
"""
SIM_SECONDS_PER_TICK = 2.0  # the test paces the simulation: up to ~40x real time
HANDLING_S = 30.0


def suspend_licence_of_driver(ledger, vehicle_id: str) -> None:
    """The driver on the taxi's open shift drives with a suspended licence."""
    conn = db.open_connection(ledger)
    try:
        conn.cursor().execute(
            "UPDATE drivers d JOIN taxi_shifts s ON s.cin = d.cin SET d.status = 'suspended'"
            " WHERE s.open_vehicle = %s",
            (vehicle_id,),
        )
        conn.commit()
    finally:
        conn.close()


def test_a_red_light_runner_detected_by_the_processor_gets_a_unit_that_comes_free(
    spark, mariadb, broker, mongo, tmp_path
):
    pack = load.from_dict(synthetic.grid())  # the grid of grid_city(), the processor's city
    ledger = scratch_database(mariadb, f"casatwin_dispatch_e2e_{uuid.uuid4().hex[:6]}")
    loader.load(
        ledger,
        FLEET_SIZE,
        seed=52,
        as_of=dt.date.fromisoformat(REGISTRY_AS_OF),
        police_units=loader.police_units_of(pack),
    )
    suspend_licence_of_driver(ledger, RUNNER)
    settings = Settings().replace(
        general={"data_dir": tmp_path / "state"},
        city=grid_city(tmp_path),
        kafka={"bootstrap": broker.bootstrap},
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb=ledger.__dict__,
        simulator={"metrics_port": 0},
        dispatcher={
            "consumer_group": f"dispatch-{uuid.uuid4().hex[:6]}",
            "handling_red_light_s": HANDLING_S,
            "queue_check_s": 0.5,
        },
    )
    generate_secrets(settings)
    ensure_topics(settings.kafka)
    (dispatch,) = create_topics(settings, 1, 1)
    since = topic_ends(settings, topics.INFRACTIONS)
    starting = orjson.dumps(topic_ends(settings, topics.TELEMETRY)).decode()
    settings = settings.replace(processor={"starting_offsets": starting})

    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    sim = Simulation(pack, settings.simulator, int(time.time() * 1000), scenarios.load(path))
    service = SimulatorService(settings, sim, realtime=False, seconds=0)
    bridge = DispatchBridge(service, topic=dispatch, group_id=f"sim-{uuid.uuid4().hex[:6]}")
    dispatcher = Dispatcher(settings, pack, dispatch_topic=dispatch)
    processor = RunningApp(settings, spark, queries=[InfractionsQuery(settings)])
    stop = threading.Event()

    def simulate():
        while not stop.is_set():
            service.seconds = sim.elapsed_s + SIM_SECONDS_PER_TICK
            service.run_until(stop)
            time.sleep(0.05)

    threads = [
        threading.Thread(target=dispatcher.run_until, args=(stop,), daemon=True),
        threading.Thread(target=simulate, daemon=True),
    ]
    row = (
        "SELECT infraction_id, status, unit_id, created_ms, arrived_ms, closed_ms, response_s"
        " FROM dispatch_assignments"
    )
    started = time.monotonic()
    try:
        processor.__enter__()
        service.start()
        dispatcher.start()
        bridge.start()
        # Both consumer groups have joined before the simulation starts.
        threads[0].start()
        assert wait_for(dispatcher.consumer.assignment, 20)
        assert wait_for(bridge.consumer.assignment, 20)
        threads[1].start()
        assert wait_for(lambda: [r for r in query(ledger, row) if r[1] == "closed"], 240), (
            query(ledger, row), sim.elapsed_s)  # fmt: skip
        time.sleep(1)  # the dispatcher's next queue check has run
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        processor.stop()
        bridge.stop()
        dispatcher.stop()
        service.drain()
    print(f"dispatch loop through the processor: {time.monotonic() - started:.0f} s wall")

    # The processor detected the runner, and its decision called for a unit.
    published = read_topic(settings, topics.INFRACTIONS, since)
    (infraction,) = [m for m in published if m["vehicle_id"] == RUNNER]
    assert infraction["type"] == "red_light"
    assert infraction["decision"]["court"] and infraction["dispatch_required"]
    (assignment,) = [r for r in query(ledger, row) if r[1] == "closed"]
    infraction_id, _, unit, created_ms, arrived_ms, closed_ms, response_s = assignment
    assert infraction_id == infraction["infraction_id"]
    assert ledger_rows(settings.mariadb, [infraction_id])[infraction_id]["court"]
    events = [e for e in read(settings, dispatch) if e["infraction_id"] == infraction_id]
    assert [e["status"] for e in events] == ["assigned", "en_route", "on_scene", "closed"]
    assigned, en_route, on_scene, _ = events
    assert all(e["unit_id"] == unit for e in events)
    # The response time is recorded and published, and it is what the clock says.
    assert on_scene["response_s"] == pytest.approx(response_s)
    assert response_s == pytest.approx((arrived_ms - created_ms) / 1000, abs=0.2)
    assert closed_ms - arrived_ms >= HANDLING_S * 1000
    # The unit's telemetry left its station and followed the route to the scene.
    fixes = [
        m for m in read(settings, topics.TELEMETRY)
        if m["vehicle_id"] == unit and en_route["ts"] - 1000 <= m["ts"] <= on_scene["ts"]
    ]  # fmt: skip
    assert len(fixes) >= 10
    scene = assigned["route"][-1]
    to_scene = [float(haversine_m(f["lat"], f["lon"], *scene)) for f in fixes]
    assert to_scene[-1] < 0.2 * to_scene[0]
    route_nodes = assigned["route"]
    assert all(min(float(haversine_m(f["lat"], f["lon"], *n)) for n in route_nodes) < 320
               for f in fixes)  # fmt: skip
    assert (fixes[0]["lat"], fixes[0]["lon"]) != (fixes[-1]["lat"], fixes[-1]["lon"])
    # Available again: in MariaDB (free for the next incident) and heading home.
    conn = db.open_connection(ledger)
    try:
        states = {u.unit_id: u.status for u in store.units(conn)}
    finally:
        conn.close()
    assert states[unit] == "available"
    assert sim.fleet.unit_status(unit).task in ("returning", "available")
