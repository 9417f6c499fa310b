"""The fleet's kinematics and signal logic on a small synthetic grid (pure, no servers)."""

import numpy as np
import pytest

from casatwin.city import load, synthetic
from casatwin.city.routing import Router
from casatwin.city.signals import GREEN, RED
from casatwin.dispatch import nearest
from casatwin.simulator.kinematics import DriverModel
from casatwin.simulator.traffic import (
    DRIVING,
    ILLEGAL_PARKER,
    LAW_ABIDING,
    RED_LIGHT_RUNNER,
    SPEEDER,
    Fleet,
    FleetConfig,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z; signal phases are absolute
DT = 0.5


@pytest.fixture(scope="module")
def grid():
    return load.from_dict(synthetic.grid(5, 5))


def scripted_fleet(pack, n=8):
    """A fleet with no free traffic and ``n`` taxis held back for the test to place."""
    return Fleet.create(pack, FleetConfig(taxis=0, police=True, reserved=tuple(range(n))))


def red_start(fleet, segment, t_from=T0, min_red_s=20.0):
    """A time at or after ``t_from`` when ``segment`` turns red for at least ``min_red_s``."""
    table = fleet.net.signals
    t = t_from + np.arange(0, 400, 0.5)
    colour = table.colour(np.full(len(t), segment), t)
    for k in np.flatnonzero((colour[1:] == RED) & (colour[:-1] != RED)) + 1:
        if table.seconds_until_green(segment, t[k]) >= min_red_s:
            return float(t[k])
    raise AssertionError("no long red found")


def approach_of_first_intersection(fleet):
    return int(np.flatnonzero(fleet.net.approach_of == 0)[0])


# -- car-following --------------------------------------------------------------------------


def test_free_vehicle_approaches_its_desired_speed_without_exceeding_it():
    model = DriverModel()
    v, v0 = np.array([0.0]), np.array([15.0])
    for _ in range(200):
        accel = model.acceleration(v, v0, np.array([np.inf]), np.array([0.0]))
        _, v = model.advance(v, accel, np.array([np.inf]), DT)
        assert v[0] <= v0[0] + 1e-9
    assert v[0] == pytest.approx(15.0, abs=0.3)


def test_a_vehicle_stops_before_a_standing_obstacle():
    model = DriverModel()
    v, gap = np.array([14.0]), np.array([80.0])
    for _ in range(200):
        accel = model.acceleration(v, np.array([16.0]), gap, v)
        distance, v = model.advance(v, accel, gap - model.safety_margin_m, DT)
        gap = gap - distance
        assert gap[0] >= model.safety_margin_m - 1e-9
    assert v[0] < 0.05
    assert gap[0] < model.min_gap_m + 1.0


def test_advance_never_covers_more_than_the_room():
    model = DriverModel()
    v = np.array([20.0, 20.0, 0.0])
    distance, v_new = model.advance(v, np.array([1.0, -9.0, 1.0]), np.array([3.0, 0.0, 10.0]), DT)
    assert distance[0] == pytest.approx(3.0) and v_new[0] <= 3.0 / DT
    assert distance[1] == 0.0 and v_new[1] == 0.0
    assert distance[2] == pytest.approx(0.125)


# -- signals --------------------------------------------------------------------------------


def test_a_vehicle_stops_at_a_red_stop_line_and_goes_on_green(grid):
    fleet = scripted_fleet(grid)
    approach = approach_of_first_intersection(fleet)
    stop_m = fleet.net.stop_m[approach]
    t = red_start(fleet, approach) - 5.0  # yellow now: too far away to cross before red
    fleet.place(0, approach, 0.0, 12.0)
    crossed_at = None
    for _ in range(400):
        before = fleet.pos[0] if fleet.seg[0] == approach else np.inf
        fleet.step(t, DT)
        t += DT
        if crossed_at is None and (fleet.seg[0] != approach or fleet.pos[0] >= stop_m):
            crossed_at = t - DT * (1 - (stop_m - before) / max(fleet.pos[0] - before, 1e-9))
            break
        if fleet.net.signals.colour(approach, t) == RED and t > red_start(fleet, approach, t - 60):
            assert fleet.pos[0] < stop_m
    assert crossed_at is not None
    assert fleet.net.signals.colour(approach, crossed_at) == GREEN


def test_vehicles_queue_behind_each_other_at_red(grid):
    fleet = scripted_fleet(grid)
    approach = approach_of_first_intersection(fleet)
    t = red_start(fleet, approach, min_red_s=30.0)
    for k in range(6):
        fleet.place(k, approach, 120.0 - 22.0 * k, 10.0)
    for _ in range(50):  # 25 s of red
        fleet.step(t, DT)
        t += DT
    assert (fleet.seg[:6] == approach).all()
    for lane in np.unique(fleet.lane[:6]):  # held-up drivers may have used the other lane
        positions = np.sort(fleet.pos[:6][fleet.lane[:6] == lane])[::-1]
        assert positions[0] < fleet.net.stop_m[approach]
        gaps = -np.diff(positions) - fleet.model.vehicle_length_m
        assert (gaps > 0.5).all() and (gaps < 6.0).all()  # a tight, orderly queue
    assert (fleet.v[:6] < 0.5).all()
    assert (fleet.wait_s[:6] > 5).all()


def test_no_vehicle_passes_through_its_leader(grid):
    fleet = Fleet.create(grid, FleetConfig(taxis=400, seed=3))
    t = T0
    for _ in range(300):
        driving = np.flatnonzero(fleet.state == DRIVING)
        key = fleet.seg[driving] * 10 + fleet.lane[driving]
        order = driving[np.lexsort((fleet.pos[driving], key))]
        same = np.diff(fleet.seg[order] * 10 + fleet.lane[order]) == 0
        followers, leaders = order[:-1][same], order[1:][same]
        seg_before, lane_before = fleet.seg.copy(), fleet.lane.copy()
        fleet.step(t, DT)
        t += DT
        # pairs still in the lane they shared (no junction, no lane change in between)
        still = (fleet.seg[followers] == seg_before[followers]) & (
            fleet.seg[leaders] == seg_before[leaders]
        )
        still &= (fleet.lane[followers] == lane_before[followers]) & (
            fleet.lane[leaders] == lane_before[leaders]
        )
        assert still.sum() > 100
        assert (fleet.pos[followers[still]] < fleet.pos[leaders[still]]).all()


def test_law_abiding_drivers_never_cross_on_red_and_runners_do(grid):
    fleet = Fleet.create(
        grid, FleetConfig(taxis=300, seed=5, red_light_runner_share=0.15, speeder_share=0.1)
    )
    t = T0
    for _ in range(600):
        fleet.step(t, DT)
        t += DT
    crossings = [e for e in fleet.take_events() if e.kind == "red_crossing"]
    assert crossings
    assert {int(fleet.behaviour[e.vehicle]) for e in crossings} == {RED_LIGHT_RUNNER}
    for event in crossings:
        assert fleet.net.signals.colour(event.segment, event.t_s) == RED


# -- speeds and behaviours ------------------------------------------------------------------


def test_speeders_exceed_the_limit_and_law_abiding_drivers_do_not(grid):
    fleet = Fleet.create(grid, FleetConfig(taxis=300, seed=7, speeder_share=0.2))
    t = T0
    worst = np.zeros(len(fleet))
    for _ in range(400):
        fleet.step(t, DT)
        t += DT
        ratio = fleet.v / fleet.net.limit_ms[fleet.seg]
        worst = np.maximum(worst, np.where(fleet.state == DRIVING, ratio, 0))
    lawful = fleet.behaviour == LAW_ABIDING
    speeders = fleet.behaviour == SPEEDER
    assert lawful.sum() > 100 and speeders.sum() > 30
    assert worst[lawful].max() <= 1.0
    assert np.mean(worst[speeders] > 1.15) > 0.8
    # speeds vary around the limits, not one value for everyone
    moving = (fleet.state == DRIVING) & (fleet.v > 3)
    assert np.std(fleet.v[moving & lawful]) > 1.0


def test_illegal_parkers_stop_inside_no_parking_zones(grid):
    fleet = Fleet.create(grid, FleetConfig(taxis=200, seed=11, illegal_parker_share=0.3))
    spots = {(s.segment, round(s.offset_m)) for s in fleet.net.parking_spots}
    assert spots
    t = T0
    parked = []
    for _ in range(1200):
        fleet.step(t, DT)
        t += DT
        parked += [e for e in fleet.take_events() if e.kind == "parked"]
    assert parked
    for event in parked:
        assert fleet.behaviour[event.vehicle] == ILLEGAL_PARKER
        assert any(event.segment == s and abs(event.offset_m - o) <= 2.0 for s, o in spots), event


def test_same_seed_same_traffic_other_seed_other_traffic(grid):
    def run(seed):
        fleet = Fleet.create(grid, FleetConfig(taxis=150, seed=seed, speeder_share=0.1))
        t = T0
        for _ in range(200):
            fleet.step(t, DT)
            t += DT
        return fleet

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a.seg, b.seg) and np.array_equal(a.pos, b.pos)
    assert np.array_equal(a.v, b.v)
    assert not np.array_equal(a.pos, c.pos)


# -- police units ---------------------------------------------------------------------------


def test_a_unit_follows_its_route_arrives_and_returns(grid):
    fleet = scripted_fleet(grid, n=0)
    status = fleet.unit_status("PU-SW-1")
    assert status.task == "available"
    far = grid.segment_index[grid.intersections[-1].plan.phases[0].approaches[0]]
    router = Router(grid)
    route = [
        status.segment,
        *router.path(int(grid.seg_to[status.segment]), int(grid.seg_from[far])),
        far,
    ]
    fleet.dispatch("PU-SW-1", route, target_offset_m=50.0, tag="d-1")
    assert fleet.unit_status("PU-SW-1").task == "en_route"
    visited, arrived = [], None
    t = T0
    for _ in range(1200):
        fleet.step(t, DT)
        t += DT
        here = fleet.unit_status("PU-SW-1").segment
        if not visited or visited[-1] != here:
            visited.append(here)
        arrived = next((e for e in fleet.take_events() if e.kind == "arrived"), None)
        if arrived:
            break
    assert arrived is not None and arrived.tag == "d-1"
    assert visited == [int(s) for s in route]
    status = fleet.unit_status("PU-SW-1")
    assert status.task == "on_scene" and status.segment == far
    assert status.offset_m == pytest.approx(50.0, abs=2.0)

    fleet.return_to_station("PU-SW-1")
    for _ in range(1200):
        fleet.step(t, DT)
        t += DT
        if any(e.kind == "arrived" for e in fleet.take_events()):
            break
    assert fleet.unit_status("PU-SW-1").task == "available"


def test_dispatch_takes_the_route_of_the_nearest_unit_choice(grid):
    fleet = scripted_fleet(grid, n=0)
    router = Router(grid)
    incident_seg = grid.segment_index[grid.intersections[4].plan.phases[1].approaches[0]]
    incident = nearest.Place(incident_seg, 30.0)
    units = {u.unit_id: nearest.Place(u.segment, u.offset_m) for u in fleet.units()}
    latlon = {u.unit_id: (u.lat, u.lon) for u in fleet.units()}
    choice = nearest.choose(grid, router, incident, (33.59, -7.62), units, latlon)
    fleet.dispatch(choice.unit_id, choice.route, target_offset_m=incident.offset_m)
    t = T0
    for _ in range(1200):
        fleet.step(t, DT)
        t += DT
        if any(e.kind == "arrived" for e in fleet.take_events()):
            break
    status = fleet.unit_status(choice.unit_id)
    assert (status.task, status.segment) == ("on_scene", incident_seg)


def test_broken_routes_and_unknown_units_are_refused(grid):
    fleet = scripted_fleet(grid, n=0)
    here = fleet.unit_status("PU-NE-1").segment
    stray = int(np.flatnonzero(grid.seg_from != grid.seg_to[here])[5])
    with pytest.raises(ValueError, match=r"does not continue|broken"):
        fleet.dispatch("PU-NE-1", [here, stray])
    with pytest.raises(KeyError, match="no police unit"):
        fleet.dispatch("PU-XX-9", [here])
