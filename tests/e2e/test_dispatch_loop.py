"""The dispatch loop closed: a scripted red-light runner in the simulator → an infraction →
the nearest unit assigned → its telemetry moves along the route → on scene → closed →
available again, with the response time in MariaDB and on ``casatwin.dispatch``.

The simulator, its dispatch bridge and the dispatcher run for real against the broker and
MariaDB. The infraction is published from the simulator's own red-light crossing, in the
processor's message shape: the Spark processor is not in this loop (its detection of the
same scripted runner is ``test_processor_scenario``), which keeps this test at ~30 s.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from casatwin.bus.producer import Producer
from casatwin.city import load, synthetic
from casatwin.city.geometry import haversine_m
from casatwin.dispatch import store
from casatwin.dispatch.service import Dispatcher
from casatwin.registry import db
from casatwin.simulator import scenario as scenarios
from casatwin.simulator.dispatching import DispatchBridge
from casatwin.simulator.service import SimulatorService
from casatwin.simulator.simulation import Simulation
from tests.conftest import query
from tests.dispatch_support import create_topics, dispatch_db, read, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCENARIO = """\
name: dispatch-loop
city: grid
traffic: {taxis: 20, speeder_share: 0, red_light_runner_share: 0, illegal_parker_share: 0}
duration_s: 600
events:
  - {type: red_light, vehicle: TX-00012, at: 20, intersection: Row 2 x Column 2}
"""
SIM_SECONDS_PER_TICK = 2.0  # the test paces the simulation: up to ~40x real time
HANDLING_S = 30.0


def test_a_red_light_runner_gets_a_unit_that_drives_there_and_comes_free(
    broker_settings, mariadb, tmp_path
):
    pack = load.from_dict(synthetic.grid(5, 5))
    ledger = dispatch_db(mariadb, pack)
    conn = db.open_connection(ledger)
    infractions, dispatch, telemetry = create_topics(broker_settings, 1, 3)
    settings = broker_settings.replace(
        mariadb=ledger.__dict__,
        simulator={"metrics_port": 0},
        dispatcher={
            "consumer_group": f"dispatch-{uuid.uuid4().hex[:6]}",
            "handling_red_light_s": HANDLING_S,
            "queue_check_s": 0.5,
        },
    )
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    sim = Simulation(pack, settings.simulator, int(time.time() * 1000), scenarios.load(path))
    service = SimulatorService(settings, sim, realtime=False, seconds=0, telemetry_topic=telemetry)
    bridge = DispatchBridge(service, topic=dispatch, group_id=f"sim-{uuid.uuid4().hex[:6]}")
    dispatcher = Dispatcher(settings, pack, infractions_topic=infractions, dispatch_topic=dispatch)
    producer = Producer(settings.kafka, "test-processor-stand-in")

    def processor_stand_in(event):
        """What the processor publishes for the runner's crossing (decision: a unit)."""
        if event.kind != "red_crossing" or event.vehicle_id != "TX-00012":
            return
        lat, lon = sim.fleet.net.latlon([event.segment], [event.offset_m])
        producer.send_json(infractions, {
            "infraction_id": "INF-E2E-1", "type": "red_light",
            "event_ts": int(event.t_s * 1000), "detected_ts": sim.t_ms,
            "lat": float(lat[0]), "lon": float(lon[0]),
            "segment_id": pack.segment_ids[event.segment], "measured": 0.0, "limit": 0.0,
            "vehicle": {"vehicle_id": event.vehicle_id}, "driver": {},
            "decision": {"class": 2, "dispatch_required": True}, "dispatch_required": True,
        })  # fmt: skip
        producer.flush(5)

    service.add_listener(processor_stand_in)
    stop = threading.Event()
    service.start()
    dispatcher.start()
    bridge.start()

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
        "SELECT status, unit_id, created_ms, arrived_ms, closed_ms, response_s"
        " FROM dispatch_assignments"
    )
    try:
        # Both consumer groups have joined before the simulation starts.
        threads[0].start()
        assert wait_for(dispatcher.consumer.assignment, 20)
        assert wait_for(bridge.consumer.assignment, 20)
        threads[1].start()
        assert wait_for(lambda: query(ledger, row) and query(ledger, row)[0][0] == "closed", 120), (
            query(ledger, row), sim.elapsed_s)  # fmt: skip
        time.sleep(1)  # the dispatcher's next queue check has run
        stop.set()
        for t in threads:
            t.join(20)
    finally:
        stop.set()
        bridge.stop()
        dispatcher.stop()
        service.drain()
    status, unit, created_ms, arrived_ms, closed_ms, response_s = query(ledger, row)[0]
    events = [e for e in read(settings, dispatch) if e["infraction_id"] == "INF-E2E-1"]
    assert [e["status"] for e in events] == ["assigned", "en_route", "on_scene", "closed"]
    assigned, en_route, on_scene, _ = events
    assert all(e["unit_id"] == unit for e in events)
    # The response time is recorded and published, and it is what the clock says.
    assert on_scene["response_s"] == pytest.approx(response_s)
    assert response_s == pytest.approx((arrived_ms - created_ms) / 1000, abs=0.2)
    assert closed_ms - arrived_ms >= HANDLING_S * 1000
    # The unit's telemetry left its station and followed the route to the scene.
    fixes = [
        m for m in read(settings, telemetry)
        if m["vehicle_id"] == unit and en_route["ts"] - 1000 <= m["ts"] <= on_scene["ts"]
    ]  # fmt: skip
    assert len(fixes) >= 10
    scene = assigned["route"][-1]
    first, last = fixes[0], fixes[-1]
    to_scene = [float(haversine_m(f["lat"], f["lon"], *scene)) for f in fixes]
    assert to_scene[-1] < 0.2 * to_scene[0]
    route_nodes = assigned["route"]
    assert all(min(float(haversine_m(f["lat"], f["lon"], *n)) for n in route_nodes) < 320
               for f in fixes)  # fmt: skip
    assert (first["lat"], first["lon"]) != (last["lat"], last["lon"])
    # Available again: in MariaDB (free for the next incident) and heading home.
    assert status == "closed"
    states = {u.unit_id: u.status for u in store.units(conn)}
    assert states[unit] == "available"
    assert sim.fleet.unit_status(unit).task in ("returning", "available")
    conn.close()
