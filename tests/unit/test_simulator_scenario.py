"""Scenario files (format and city checks), telemetry, sensors and the ground truth."""

import itertools
import textwrap
from pathlib import Path

import numpy as np
import pytest

from casatwin.bus import messages, topics
from casatwin.city import load, synthetic
from casatwin.city.geometry import points_in_polygon
from casatwin.city.signals import RED
from casatwin.config import SimulatorSettings
from casatwin.simulator import scenario as scenarios
from casatwin.simulator.simulation import Simulation
from casatwin.simulator.telemetry import Schedule, TelemetryEncoder, take_fixes

START_MS = 1_767_225_600_000

GRID_SCENARIO = """\
name: grid-e2e
city: grid
seed: 4
traffic:
  taxis: 120
  speeder_share: 0
  red_light_runner_share: 0
  illegal_parker_share: 0
duration_s: 240
events:
  - type: speeding
    vehicle: TX-00101
    at: 30
    road: Row 2
    from: Row 2 x Column 1
    towards: Grid centre
    speed_kmh: 95
    duration_s: 15
  - type: red_light
    vehicle: TX-00102
    at: 40
    intersection: Row 2 x Column 2
  - type: illegal_parking
    at: 20
    zone: Row 0 block 2
    duration_s: 150
"""


@pytest.fixture(scope="module")
def grid():
    return load.from_dict(synthetic.grid(5, 5))


def write(tmp_path, text):
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# -- the format -------------------------------------------------------------------------


def test_a_valid_scenario_is_read_with_defaults(tmp_path):
    scenario = scenarios.load(write(tmp_path, GRID_SCENARIO))
    assert scenario.name == "grid-e2e" and scenario.duration_s == 240
    assert scenario.traffic["taxis"] == 120
    assert [e.type for e in scenario.events] == ["speeding", "red_light", "illegal_parking"]
    # an event without a vehicle gets a taxi from the top of the fleet
    assert scenario.vehicle_ids == ["TX-00101", "TX-00102", "TX-13000"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("events: [\n  {type: speeding\n", r"scenario.yaml:\d+: not valid YAML"),
        ("- just a list\n", "a scenario is a mapping"),
        ("events: []\n", "scenario.yaml:1: events: should be a non-empty list"),
        ("name: x\nevnts: []\n", r"scenario.yaml:2: evnts: unknown field .*did you mean `events`"),
        (
            "events:\n  - type: speedng\n    at: 3\n",
            "scenario.yaml:2: type: 'speedng' is not one of speeding, red_light",
        ),
        (
            "events:\n  - type: speeding\n    at: 3\n    road: R\n    duration_s: 5\n",
            "scenario.yaml:2: speed_kmh: a speeding event needs `speed_kmh`",
        ),
        (
            "events:\n  - type: illegal_parking\n    at: -3\n    zone: Z\n    duration_s: 5\n",
            r"scenario.yaml:3: at: -3 is outside >= 0",
        ),
        (
            "events:\n  - type: illegal_parking\n    at: 1\n    zone: Z\n    duration_s: soon\n",
            "scenario.yaml:5: duration_s: should be a number, got 'soon'",
        ),
        (
            "events:\n  - type: red_light\n    vehicle: TX-99999\n    at: 1\n    intersection: I\n",
            "scenario.yaml:3: vehicle: 'TX-99999' is not a fleet taxi",
        ),
        (
            "traffic:\n  taxis: 20000\nevents:\n  - {type: red_light, at: 1, intersection: I}\n",
            "scenario.yaml:2: taxis: 20000 is outside 0..13000",
        ),
        (
            "events:\n  - {type: red_light, at: 1, intersection: I, vehicle: TX-00001}\n"
            "  - {type: red_light, at: 9, intersection: I, vehicle: TX-00001}\n",
            r"scenario.yaml:3: vehicle: TX-00001 already has an event \(line 2\)",
        ),
    ],
)
def test_format_errors_name_the_line_and_the_field(tmp_path, text, expected):
    with pytest.raises(scenarios.ScenarioError, match=expected):
        scenarios.load(write(tmp_path, text))


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(scenarios.ScenarioError, match="cannot read scenario"):
        scenarios.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (
            ("road: Row 2", "road: Row 22"),
            r":14: road: no road named 'Row 22'.*did you mean 'Row 2'",
        ),
        (("Row 2 x Column 2", "Row 9 x Column 9"), r":22: intersection: no signalised"),
        (("zone: Row 0 block 2", "zone: Casa Port"), r":25: zone: no no-parking zone named"),
        (("towards: Grid centre", "towards: Nowhere"), r":16: towards: no place"),
        (("city: grid", "city: casablanca"), "written for city 'casablanca'"),
    ],
)
def test_names_are_checked_against_the_city(tmp_path, grid, replace, expected):
    scenario = scenarios.load(write(tmp_path, GRID_SCENARIO.replace(*replace)))
    with pytest.raises(scenarios.ScenarioError, match=expected):
        Simulation(grid, SimulatorSettings(), START_MS, scenario)


# -- playing it -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def played(grid, tmp_path_factory):
    path = tmp_path_factory.mktemp("scenario") / "grid.yaml"
    path.write_text(GRID_SCENARIO)
    sim = Simulation(grid, SimulatorSettings(), START_MS, scenarios.load(path))
    ticks = []
    while sim.elapsed_s < 240:
        ticks.append(sim.tick())
    return sim, ticks


def fixes_of(sim, ticks, vehicle_id):
    v = sim.fleet.index[vehicle_id]
    out = []
    for tick in ticks:
        k = np.flatnonzero(tick.fix.vehicles == v)
        if len(k):
            f, k = tick.fix, k[0]
            out.append((f.ts_ms, f.lat[k], f.lon[k], f.speed_kmh[k], int(f.segment[k])))
    return out


def test_scripted_taxis_appear_only_when_their_event_starts(played):
    sim, ticks = played
    first = {vid: fixes_of(sim, ticks, vid)[0][0] for vid in ("TX-00101", "TX-13000")}
    assert first["TX-00101"] >= START_MS + 30_000
    assert first["TX-13000"] >= START_MS + 20_000


def test_the_speeder_drives_its_road_over_the_limit(played, grid):
    sim, ticks = played
    during = [f for f in fixes_of(sim, ticks, "TX-00101") if f[0] <= START_MS + 45_000]
    assert len(during) >= 14
    assert {grid.seg_road[f[4]] for f in during} == {"Row 2"}
    assert max(f[3] for f in during) == pytest.approx(95.0, abs=0.5)
    speeding = [r for r in sim.ground_truth() if r["type"] == "speeding"]
    assert len(speeding) >= 1
    assert speeding[0]["vehicle_id"] == "TX-00101" and speeding[0]["road"] == "Row 2"
    assert speeding[0]["measured"] > speeding[0]["limit"] == 60.0


def test_the_runner_crosses_its_stop_line_on_red(played, grid):
    sim, _ = played
    [record] = [r for r in sim.ground_truth() if r["type"] == "red_light"]
    assert record["vehicle_id"] == "TX-00102"
    assert record["intersection"] == "Row 2 x Column 2"
    approach = grid.segment_index[record["segment_id"]]
    assert sim.fleet.net.signals.colour(approach, record["event_ts"] / 1000) == RED
    assert record["event_ts"] >= START_MS + 40_000


def test_the_parker_stands_still_inside_its_zone(played, grid):
    sim, ticks = played
    zone = grid.no_parking_zones[0]
    zx, zy = grid.projection.to_xy([p[0] for p in zone.polygon], [p[1] for p in zone.polygon])
    parked = [f for f in fixes_of(sim, ticks, "TX-13000") if f[0] < START_MS + 170_000]
    assert len(parked) >= 140
    x, y = grid.projection.to_xy([f[1] for f in parked], [f[2] for f in parked])
    assert points_in_polygon(x, y, zx, zy).all()
    assert all(f[3] == 0 for f in parked)
    later = fixes_of(sim, ticks, "TX-13000")[-1]
    assert later[3] > 0 or later[0] > START_MS + 170_000  # it drove off afterwards
    [record] = [r for r in sim.ground_truth() if r["type"] == "illegal_parking"]
    assert record["zone_id"] == zone.id and record["measured"] == 150.0


def test_the_processor_finds_the_parker_on_the_road_it_stands_on(played, grid):
    """The parked taxi's telemetry, map-matched and detected as the processor does: the
    infraction names the road it stands on (where the dispatcher sends a unit)."""
    from casatwin.processor.detectors import Detectors, VehicleState
    from casatwin.processor.network import RoadNetwork
    from tests.drive import matched

    sim, ticks = played
    v = sim.fleet.index["TX-13000"]
    sent = []
    for tick in ticks:
        for k in np.flatnonzero(tick.fix.vehicles == v):
            f = tick.fix
            sent.append(
                {"ts": f.ts_ms, "lat": float(f.lat[k]), "lon": float(f.lon[k]),
                 "speed_kmh": float(f.speed_kmh[k]), "heading_deg": float(f.heading_deg[k]),
                 "segment": int(f.segment[k])}
            )  # fmt: skip
    net = RoadNetwork(grid)
    found = Detectors(net).on_fixes("TX-13000", "taxi_petit", VehicleState(), matched(net, sent))
    (parking,) = [d for d in found if d.type == "illegal_parking"]
    (parked_on,) = {m["segment"] for m in sent if m["ts"] == parking.event_ts}
    both_ways = {parked_on, int(grid.reverse_segment[parked_on])} - {-1}
    assert parking.segment_id in {grid.segment_ids[s] for s in both_ways}
    assert parking.zone_id == grid.no_parking_zones[0].id


def test_law_abiding_traffic_commits_no_infraction(played):
    sim, ticks = played
    scripted = {sim.fleet.index[v] for v in ("TX-00101", "TX-00102", "TX-13000")}
    limit = sim.fleet.net.pack.seg_limit_kmh
    for tick in ticks:
        others = ~np.isin(tick.fix.vehicles, list(scripted))
        assert (np.round(tick.fix.speed_kmh[others], 1) <= limit[tick.fix.segment[others]]).all()
        crossings = [e for e in tick.events if e.kind == "red_crossing"]
        assert all(e.vehicle in scripted for e in crossings)


def test_same_seed_and_start_give_the_same_telemetry(grid, tmp_path):
    path = write(tmp_path, GRID_SCENARIO)

    def run():
        sim = Simulation(grid, SimulatorSettings(), START_MS, scenarios.load(path))
        encoder = TelemetryEncoder(sim.fleet.ids, sim.fleet.kinds)
        return [b for _ in range(120) for b in encoder.encode(sim.tick().fix)]

    assert run() == run()


# -- telemetry and sensors ----------------------------------------------------------------


def test_every_vehicle_reports_once_per_period_spread_over_the_steps():
    schedule = Schedule(1000, telemetry_hz=1.0, step_s=0.5)
    first, second = schedule.due(0), schedule.due(1)
    assert len(first) == len(second) == 500
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(1000))
    with pytest.raises(Exception, match="faster than the time step"):
        Schedule(10, telemetry_hz=4.0, step_s=0.5)


def test_telemetry_and_sensor_messages_keep_their_contracts(played):
    sim, ticks = played
    encoder = TelemetryEncoder(sim.fleet.ids, sim.fleet.kinds)
    fix = take_fixes(sim.fleet, np.arange(len(sim.fleet)), START_MS)
    values = encoder.encode(fix)
    assert len(values) == int(sim.fleet.on_road().sum())
    kinds = set()
    for value in values:
        message = messages.decode(topics.TELEMETRY, value)
        kinds.add(message["kind"])
        assert message["source"] == "sim" and message["ts"] == START_MS
    assert kinds == {"taxi_petit", "taxi_grand", "police"}
    readings = [r for t in ticks for r in t.readings]
    assert len(readings) == 24 * len(sim.fleet.net.pack.intersections)  # every 10 s
    for reading in readings:
        messages.check(topics.SENSORS_INTERSECTION, dict(reading))
    assert sum(r["vehicles"] for r in readings) > 100
    assert max(r["queue_len"] for r in readings) >= 2
    assert {r["phase"] for r in readings} == {"A", "B"}


REPOSITORY = Path(__file__).resolve().parents[2]
EXPECTED = {
    "e2e": {"speeding": {"TX-00101"}, "red_light": {"TX-00102"}, "illegal_parking": {"TX-00103"}},
    "classes": {
        "speeding": {f"TX-0020{i}" for i in range(1, 6)},
        "red_light": {"TX-00206"},
        "illegal_parking": {"TX-00207", "TX-00208", "TX-00209"},
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_repository_scenarios_play_on_casablanca(name):
    scenario = scenarios.load(REPOSITORY / "scenarios" / f"{name}.yaml")
    sim = Simulation(load.load("casablanca"), SimulatorSettings(), START_MS, scenario)
    while sim.elapsed_s < scenario.duration_s:
        sim.tick()
    found: dict[str, set[str]] = {}
    for record in sim.ground_truth():
        found.setdefault(record["type"], set()).add(record["vehicle_id"])
    assert found == EXPECTED[name]


def test_names_may_use_aliases_any_case_and_no_accents(tmp_path):
    text = """\
        city: casablanca
        events:
          - {type: speeding, at: 5, road: Bd Zerktouni, from: twin center, speed_kmh: 90,
             duration_s: 5}
          - {type: red_light, at: 5, intersection: place mohammed v, approach: avenue hassan ii}
          - {type: illegal_parking, at: 5, zone: ROND-POINT MERS SULTAN, duration_s: 60}
          - {type: speeding, at: 5, road: Boulevard Moulay Ismail, from: Ain Sebaa,
             speed_kmh: 90, duration_s: 5}
        """
    scenario = scenarios.load(write(tmp_path, text))
    sim = Simulation(load.load("casablanca"), SimulatorSettings(), START_MS, scenario)
    plans = scenarios.resolve(scenario, sim.fleet.net, sim.fleet)
    pack = sim.fleet.net.pack
    assert pack.seg_road[plans[0].route[0]] == "Boulevard Zerktouni"
    assert pack.intersections[plans[1].intersection].name == "Place Mohammed V"
    assert pack.seg_road[plans[1].approach] == "Avenue Hassan II"
    assert pack.no_parking_zones[plans[2].zone].name == "Rond-point Mers Sultan"
    assert pack.seg_road[plans[3].route[0]] == "Boulevard Moulay Ismaïl"


# -- surge --------------------------------------------------------------------------------

SURGE = """\
city: grid
seed: 3
traffic: {taxis: 20}
duration_s: 120
events:
  - type: surge
    at: 10
    place: Grid centre
    vehicles: 30
    from_m: 900
    spread_s: 20
    goals: 2
"""


def test_a_surge_takes_its_taxis_from_the_top_and_converges_on_the_place(tmp_path, grid):
    scenario = scenarios.load(write(tmp_path, SURGE))
    assert len(scenario.vehicle_ids) == 30 and scenario.vehicle_ids[0] == "TX-13000"
    sim = Simulation(grid, SimulatorSettings(), START_MS, scenario)
    crowd = {sim.fleet.index[v] for v in scenario.vehicle_ids}
    assert sim.player is not None and sim.player.vehicles == crowd
    (plan,) = scenarios.resolve(scenario, sim.fleet.net, sim.fleet)
    pack = grid
    for route in plan.routes:  # connected, through a goal, and back to its start
        assert all(pack.seg_to[a] == pack.seg_from[b] for a, b in itertools.pairwise(route))
        assert route[0] == route[-1]
    on_road = []
    while sim.elapsed_s < 40:
        sim.tick()
        on_road.append(int(sim.fleet.on_road()[list(crowd)].sum()))
    assert on_road[5] == 0 and on_road[-1] == 30  # none before `at`, all after the spread


def test_a_surge_needs_a_place_and_a_count(tmp_path):
    with pytest.raises(scenarios.ScenarioError, match="vehicles"):
        scenarios.load(write(tmp_path, SURGE.replace("    vehicles: 30\n", "")))
