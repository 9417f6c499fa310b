"""The dispatch loop closed, through the real chain: a scripted red-light runner and a
dangerous parker in the simulator → their telemetry on ``casatwin.telemetry`` → the Spark
processor detects and decides the infractions → ``casatwin.infractions`` → the dispatcher
assigns the nearest unit → the simulator's dispatch bridge drives it along the route (its
telemetry moves) → on scene → closed → available again, with the response time in MariaDB
and on ``casatwin.dispatch``, and nothing in the DLQ.

A red light alone is settled by a fine (no unit); the runner's driver has a suspended
licence, so loi 52-05 sends the case to court and the vehicle must be stopped: a unit.
Parking in a dangerous place asks for a unit by itself (``parking.dangerous``): the grid's
no-parking zone is one here, and the unit is sent to the road the processor found the car on.

Lean for CI: the 5×5 grid, 20 taxis, the processor's infractions query only, in this process
on the session's Spark, 30 s of handling. One clock for the whole loop, set and paced by the
test: the simulation starts at ``START_MS`` at every run (the signal phases, hence the
runner's crossing and the unit's trip through the lights, are the same each time) and runs
at up to ~40× real time; the dispatcher stamps its orders with the same simulated time.

The test prints the run's timeline — when the crossing, the processor's first micro-batch, the
infraction and each step of the dispatch were first seen, and the slowest hop — and a loop
that does not close says the same in its failure.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from casatwin.bus import topics
from casatwin.bus.admin import ensure_topics
from casatwin.bus.ranges import OffsetMap
from casatwin.city import load, synthetic
from casatwin.city.geometry import haversine_m
from casatwin.config import MariaDBSettings, Settings
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
from casatwin.waiting import wait_until
from tests.conftest import REGISTRY_AS_OF, query, scratch_database
from tests.dispatch_support import (
    Timeline,
    create_topics,
    pressure_between,
    pressure_totals,
    read,
)
from tests.processor_support import (
    RunningApp,
    grid_city,
    ledger_rows,
    read_topic,
    topic_ends,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

RUNNER = "TX-00012"
PARKER = "TX-00015"
PARKED_AT_S = 5  # simulated; the processor's dwell (120 s) later, the infraction
PARKED_FOR_S = 3600  # still there when the unit comes, however far the simulation ran ahead
SCENARIO = f"""\
name: dispatch-loop
city: grid
traffic: {{taxis: 20, speeder_share: 0, red_light_runner_share: 0, illegal_parker_share: 0}}
duration_s: 600
events:
  - {{type: red_light, vehicle: {RUNNER}, at: 20, intersection: Row 2 x Column 2}}
  - {{type: illegal_parking, vehicle: {PARKER}, at: {PARKED_AT_S}, zone: z-row0,
      duration_s: {PARKED_FOR_S}}}
"""
START_MS = 1_800_000_000_000  # the simulated clock's start, the same at every run
SIM_SECONDS_PER_TICK = 2.0  # the test paces the simulation: up to ~40x real time
HANDLING_S = 30.0
CLOSED_WITHIN_S = 240.0
LOOP = ("assigned", "en_route", "on_scene", "closed")  # a dispatch's statuses, in order
DISPATCH_OF = (
    "SELECT i.infraction_id, d.status FROM infractions i"
    " LEFT JOIN dispatch_assignments d ON d.infraction_id = i.infraction_id"
    " WHERE i.infraction_id LIKE %s"
)


@dataclass(frozen=True)
class Case:
    """A scripted offender whose infraction must get a unit: its name on the timeline."""

    name: str
    vehicle_id: str
    id_prefix: str  # of its infraction id

    @property
    def ids(self) -> str:
        return f"{self.id_prefix}-{self.vehicle_id}-%"


CASES = (Case("runner", RUNNER, "RED"), Case("parker", PARKER, "PRK"))
FIRST_BATCH = "processor's first micro-batch with telemetry done"
PROCESSOR_LOOK_S = 1.0  # the query's progress is a py4j round trip: looked at once a second


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


def batch_seconds(progress: dict[str, Any]) -> float:
    return progress["durationMs"].get("triggerExecution", 0) / 1000


def batch_end(progress: dict[str, Any]) -> float:
    """When a micro-batch ended (epoch s): its trigger's start plus its duration."""
    started = dt.datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00"))
    return started.timestamp() + batch_seconds(progress)


def describe_batch(progress: dict[str, Any]) -> str:
    return (
        f"batch {progress['batchId']}: {batch_seconds(progress):.1f} s,"
        f" {progress['numInputRows']} records"
    )


class LoopWatch:
    """What the test polls while the loop runs, each step put on the timeline the first time
    it is seen: the runner's crossing and the parker's stop on the simulated clock, the
    processor's query (its first micro-batch with telemetry, a restart after a failure),
    each case's infraction and its dispatch in MariaDB. Simulated seconds are the clock's
    reading when a step was seen."""

    def __init__(
        self, ledger: MariaDBSettings, sim: Simulation, processor: RunningApp, timeline: Timeline
    ) -> None:
        assert sim.player is not None
        self.ledger = ledger
        self.sim = sim
        self.infractions = processor.app.running[0]
        self.timeline = timeline
        self.crossing_s = sim.player.crossing_s[RUNNER] - sim.start_ms / 1000
        self.runs: list[Any] = []  # every query the processor started: one more per failure
        self.last_look = (timeline.start, 0.0)  # (epoch s, simulated s)
        self.pressure: tuple[dict[str, int], dict[str, int]] = ({}, {})  # at begin, last look
        self._next_processor_look = 0.0

    def begin(self) -> None:
        """The simulation starts now: the timeline's zero."""
        self.timeline.start = time.time()
        self.last_look = (self.timeline.start, self.sim.elapsed_s)
        self.pressure = (pressure_totals(), pressure_totals())
        self.timeline.reach("simulation started", sim_s=self.sim.elapsed_s)

    def __call__(self) -> bool:
        """One look at the loop; True once every case's dispatch is closed."""
        self.last_look = (time.time(), self.sim.elapsed_s)
        self.pressure = (self.pressure[0], pressure_totals())
        if self.sim.elapsed_s >= self.crossing_s:
            self.timeline.reach("runner crossed on red (simulated)", sim_s=self.crossing_s)
        if self.sim.elapsed_s >= PARKED_AT_S:
            self.timeline.reach("parker parked (simulated)", sim_s=PARKED_AT_S)
        self._processor()
        return all([self._dispatch(case) == "closed" for case in CASES])  # each looked at

    def _processor(self) -> None:
        running = self.infractions.query
        if running is not None and not any(run is running for run in self.runs):
            self.runs.append(running)
            if len(self.runs) > 1:
                self.timeline.reach(f"processor's query restarted ({len(self.runs) - 1})")
        now = time.monotonic()
        if running is None or FIRST_BATCH in self.timeline.steps or now < self._next_processor_look:
            return
        self._next_processor_look = now + PROCESSOR_LOOK_S
        last = running.lastProgress
        if last is None or not last["numInputRows"]:
            return
        first = next(p for p in running.recentProgress if p["numInputRows"])
        self.timeline.reach(FIRST_BATCH, at=batch_end(first), note=describe_batch(first))

    def _dispatch(self, case: Case) -> str | None:
        rows = query(self.ledger, DISPATCH_OF, (case.ids,))
        if not rows:
            return None
        now_s = self.sim.elapsed_s
        self.timeline.reach(f"{case.name}'s infraction in the ledger", sim_s=now_s)
        status = rows[0][1]
        if status in LOOP:
            for step in LOOP[: LOOP.index(status) + 1]:  # a poll can miss a short status
                self.timeline.reach(f"{case.name}'s dispatch {step}", sim_s=now_s)
        elif status is not None:  # queued: no unit free
            self.timeline.reach(f"{case.name}'s dispatch {status}", sim_s=now_s)
        return status

    def summary(self) -> str:
        """The simulation's pace, how starved the machine was and the processor's query
        runs, as of the last look."""
        wall = max(self.last_look[0] - self.timeline.start, 1e-3)
        sim_s = self.last_look[1]
        lines = [
            f"simulated {sim_s:.0f} s in {wall:.0f} s ({sim_s / wall:.1f}x real time);"
            f" {pressure_between(*self.pressure, wall)}; processor query runs: {len(self.runs)}"
        ]
        for n, run in enumerate(self.runs[:-1], 1):
            error = run.exception()
            lines.append(f"run {n} ended: {str(error).splitlines()[0] if error else 'stopped'}")
        return "\n".join(lines)


def stamped_steps(timeline: Timeline, settings: Settings, since: OffsetMap) -> None:
    """Each case's infraction as the processor stamped it (wall clock): detected, published."""
    names = {case.vehicle_id: case.name for case in CASES}
    for message in read_topic(settings, topics.INFRACTIONS, since):
        name = names.get(message["vehicle_id"])
        if name is None:
            continue
        detected = message["detected_ts"] / 1000
        timeline.reach(f"{name}'s infraction detected by the processor", at=detected)
        if "published_ts" in message:
            timeline.reach(f"{name}'s infraction published", at=message["published_ts"] / 1000)


def closed_loop(
    settings: Settings,
    dispatch: str,
    infraction: dict[str, Any],
    assignments: list[tuple[Any, ...]],
    telemetry: list[dict[str, Any]],
) -> tuple[str, int]:
    """Check that ``infraction``'s unit was booked, drove to where the offence was seen and
    stayed there for the handling time; the unit, and when it was on scene."""
    (assignment,) = [r for r in assignments if r[0] == infraction["infraction_id"]]
    infraction_id, status, unit, created_ms, assigned_ms, arrived_ms, closed_ms, response_s = (
        assignment
    )
    assert status == "closed"
    # One clock: the offence, the order, the arrival and the close, in that order.
    assert created_ms <= assigned_ms <= arrived_ms <= closed_ms
    events = [e for e in read(settings, dispatch) if e["infraction_id"] == infraction_id]
    assert [e["status"] for e in events] == ["assigned", "en_route", "on_scene", "closed"]
    assigned, en_route, on_scene, _ = events
    assert all(e["unit_id"] == unit for e in events)
    # The response time is recorded and published, and it is what the clock says.
    assert on_scene["response_s"] == pytest.approx(response_s)
    assert response_s == pytest.approx((arrived_ms - created_ms) / 1000, abs=0.2)
    assert closed_ms - arrived_ms >= HANDLING_S * 1000
    # The unit's telemetry left its station and followed the route to the scene: where the
    # offence was seen (a red light's stop line, the parked car).
    fixes = [
        m for m in telemetry
        if m["vehicle_id"] == unit and en_route["ts"] - 1000 <= m["ts"] <= on_scene["ts"]
    ]  # fmt: skip
    assert len(fixes) >= 10
    scene = (infraction["lat"], infraction["lon"])
    to_scene = [float(haversine_m(f["lat"], f["lon"], *scene)) for f in fixes]
    assert to_scene[-1] < min(0.2 * to_scene[0], 60.0)
    route_nodes = assigned["route"]
    assert all(min(float(haversine_m(f["lat"], f["lon"], *n)) for n in route_nodes) < 320
               for f in fixes)  # fmt: skip
    assert (fixes[0]["lat"], fixes[0]["lon"]) != (fixes[-1]["lat"], fixes[-1]["lon"])
    return unit, on_scene["ts"]


def test_a_red_light_runner_and_a_dangerous_parker_each_get_a_unit_that_comes_free(
    spark, mariadb, broker, mongo, tmp_path, artifacts_dir
):
    timeline = Timeline()  # its zero moves to the simulation's start: the set-up is negative
    # The grid of grid_city(), the processor's city; its no-parking zone a dangerous place.
    pack = load.from_dict(synthetic.grid(parking_kind="dangerous"))
    ledger = scratch_database(mariadb, f"casatwin_dispatch_e2e_{uuid.uuid4().hex[:6]}")
    loader.load(
        ledger,
        FLEET_SIZE,
        seed=52,
        as_of=dt.date.fromisoformat(REGISTRY_AS_OF),
        police_units=loader.police_units_of(pack),
    )
    suspend_licence_of_driver(ledger, RUNNER)
    timeline.reach("registry loaded (set-up)")
    settings = Settings().replace(
        general={"data_dir": tmp_path / "state"},
        city=grid_city(tmp_path, parking_kind="dangerous"),
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb=ledger.__dict__,
        simulator={"metrics_port": 0},
        dispatcher={
            "consumer_group": f"dispatch-{uuid.uuid4().hex[:6]}",
            "handling_red_light_s": HANDLING_S,
            "handling_illegal_parking_s": HANDLING_S,
            "queue_check_s": 0.5,
        },
    )
    generate_secrets(settings)
    ensure_topics(settings.kafka)
    (dispatch,) = create_topics(settings, 1, 1)
    since = topic_ends(settings, topics.INFRACTIONS)
    dead_since = topic_ends(settings, topics.DLQ)
    starting = orjson.dumps(topic_ends(settings, topics.TELEMETRY)).decode()
    settings = settings.replace(processor={"starting_offsets": starting})

    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    sim = Simulation(pack, settings.simulator, START_MS, scenarios.load(path))
    service = SimulatorService(settings, sim, realtime=False, seconds=0)
    bridge = DispatchBridge(service, topic=dispatch, group_id=f"sim-{uuid.uuid4().hex[:6]}")
    # The dispatcher's clock is the simulation's: the order's time is on the loop's clock.
    dispatcher = Dispatcher(settings, pack, dispatch_topic=dispatch, clock=lambda: sim.t_ms / 1000)
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
        "SELECT infraction_id, status, unit_id, created_ms, assigned_ms, arrived_ms, closed_ms,"
        " response_s FROM dispatch_assignments"
    )
    watch = LoopWatch(ledger, sim, processor, timeline)

    def story() -> str:
        try:
            stamped_steps(timeline, settings, since)
            return f"{timeline.report()}\n{watch.summary()}"
        except Exception as exc:  # the report must not hide the failure it explains
            return f"{timeline.report()}\n(the rest of the report failed: {exc!r})"

    started = time.monotonic()
    try:
        processor.__enter__()
        timeline.reach("processor's query started (set-up)")
        service.start()
        dispatcher.start()
        bridge.start()
        timeline.reach("simulator, dispatcher and bridge started (set-up)")
        # Both consumer groups have joined before the simulation starts.
        threads[0].start()
        assert wait_until(dispatcher.consumer.assignment, 20)
        timeline.reach("the dispatcher's group joined (set-up)")
        assert wait_until(bridge.assigned.is_set, 20)
        timeline.reach("the bridge's group joined (set-up)")
        watch.begin()
        threads[1].start()
        assert wait_until(watch, CLOSED_WITHIN_S), (
            f"the dispatches were not all closed within {CLOSED_WITHIN_S:.0f} s:\n{story()}\n"
            f"{query(ledger, row)}\ndead letters: {read_topic(settings, topics.DLQ, dead_since)}"
        )
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        processor.stop()
        bridge.stop()
        dispatcher.stop()
        service.drain()
        # Kept for a person (a passing test's output is not shown): where the time went.
        report = f"{story()}\n{time.monotonic() - started:.0f} s wall from the processor's start"
        (artifacts_dir / "dispatch-loop-timeline.txt").write_text(report + "\n")
    print(report)

    # Nothing was set aside: no infraction the dispatcher could not place, no bad record.
    assert read_topic(settings, topics.DLQ, dead_since) == []
    published = read_topic(settings, topics.INFRACTIONS, since)
    assignments = query(ledger, row)
    telemetry = read(settings, topics.TELEMETRY)
    # The processor detected the runner, and its decision called for a unit.
    (runner,) = [m for m in published if m["vehicle_id"] == RUNNER]
    assert runner["type"] == "red_light"
    assert runner["decision"]["court"] and runner["dispatch_required"]
    runner_id = runner["infraction_id"]
    assert ledger_rows(settings.mariadb, [runner_id])[runner_id]["court"]
    # The parker: a dangerous place asks for a unit, sent to the road the car stands on.
    (parker,) = [m for m in published if m["vehicle_id"] == PARKER]
    assert (parker["type"], parker["zone_id"], parker["parking_kind"]) == (
        "illegal_parking", "z-row0", "dangerous"
    )  # fmt: skip
    assert parker["decision"]["class"] == 1 and parker["dispatch_required"]
    road = pack.segment_index[parker["segment_id"]]
    assert pack.seg_road[road] == "Row 0"
    (runner_unit, _), (parker_unit, parker_on_scene_ts) = [
        closed_loop(settings, dispatch, infraction, assignments, telemetry)
        for infraction in (runner, parker)
    ]
    # The unit found the car where it was parked.
    parked = [m for m in telemetry if m["vehicle_id"] == PARKER and m["ts"] <= parker_on_scene_ts]
    last = max(parked, key=lambda m: m["ts"])
    assert last["speed_kmh"] == 0 and parker_on_scene_ts - last["ts"] <= 2000
    assert float(haversine_m(last["lat"], last["lon"], parker["lat"], parker["lon"])) < 15
    # Available again: in MariaDB (free for the next incident) and heading home.
    conn = db.open_connection(ledger)
    try:
        states = {u.unit_id: u.status for u in store.units(conn)}
    finally:
        conn.close()
    for unit in (runner_unit, parker_unit):
        assert states[unit] == "available"
        assert sim.fleet.unit_status(unit).task in ("returning", "available")
