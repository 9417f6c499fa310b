"""The detectors as pure functions of the fixes (no Spark): speeding, red light, parking."""

import numpy as np
import pytest

from casatwin.city.load import from_dict
from casatwin.city.signals import GREEN, RED, YELLOW
from casatwin.city.synthetic import grid
from casatwin.processor.detectors import DetectorConfig, Detectors, VehicleState
from casatwin.processor.network import RoadNetwork
from tests.drive import T0, Drive, matched, path_along


@pytest.fixture(scope="module")
def net():
    return RoadNetwork(from_dict(grid()))


@pytest.fixture(scope="module")
def detectors(net):
    return Detectors(net, DetectorConfig())


def run(detectors, net, drive, chunks=1):
    """Feed a drive's fixes in ``chunks`` pieces (micro-batches), as Spark would."""
    state = VehicleState()
    fixes = matched(net, drive.fixes())
    found = []
    for piece in np.array_split(np.arange(len(fixes)), chunks):
        batch = [fixes[i] for i in piece]
        found += detectors.on_fixes(drive.vehicle_id, drive.kind, state, batch)
    return found, state, fixes


def test_speeding_episode_is_one_infraction_with_its_maximum(net, detectors):
    drive = Drive(net, "TX-1", path_along(net, "Row 0"), speeds_kmh=[50, 50, 80, 85, 82, 50],
                  duration_s=12)  # fmt: skip
    found, _, fixes = run(detectors, net, drive)
    assert len(found) == 1
    d = found[0]
    assert d.type == "speeding"
    assert (d.measured, d.limit) == (85.0, 60.0)
    assert d.event_ts == T0 + 3000  # the fastest fix
    assert d.evidence_ts == T0 + 5000  # the first fix back under the limit
    assert d.infraction_id == f"SPD-TX-1-{T0 + 2000}"  # named after the episode's start
    assert d.segment_id == net.segment_ids[fixes[3].segment]
    assert net.pack.seg_bearing_deg[fixes[3].segment] == pytest.approx(90, abs=1)


def test_one_fast_fix_is_a_gps_spike_not_an_infraction(net, detectors):
    drive = Drive(net, "TX-2", path_along(net, "Row 0"), speeds_kmh=[50, 95, 50], duration_s=8)
    assert run(detectors, net, drive)[0] == []


def test_a_law_abiding_drive_at_the_limit_is_nothing(net, detectors):
    drive = Drive(net, "TX-3", path_along(net, "Row 0"), speeds_kmh=[60], duration_s=40)
    assert run(detectors, net, drive)[0] == []


def test_two_way_street_speeding_westbound_is_on_the_westbound_segment(net, detectors):
    path = path_along(net, "Row 0", direction=-1)
    drive = Drive(net, "TX-4", path, speeds_kmh=[50, 90, 90, 50], duration_s=8)
    found, _, _ = run(detectors, net, drive)
    assert len(found) == 1
    assert net.pack.seg_bearing_deg[net.pack.segment_index[found[0].segment_id]] == pytest.approx(
        270, abs=1
    )


def test_a_silent_speeder_is_reported_by_the_timer(net, detectors):
    drive = Drive(net, "TX-5", path_along(net, "Row 0"), speeds_kmh=[50, 80, 85], duration_s=3)
    found, state, _ = run(detectors, net, drive)
    assert found == []
    due = T0 + 2000 + 10_000
    assert detectors.deadline(state) == due
    assert detectors.on_time("TX-5", state, due - 1) == []
    late = detectors.on_time("TX-5", state, due + 5000)
    assert [(d.type, d.measured, d.evidence_ts) for d in late] == [("speeding", 85.0, due)]
    assert state.episode is None


def test_police_vehicles_are_exempt(net, detectors):
    drive = Drive(net, "PU-1", path_along(net, "Row 0"), kind="police", speeds_kmh=[90],
                  duration_s=10)  # fmt: skip
    assert run(detectors, net, drive)[0] == []


def crossing_start(net, approach, colour, seconds_into=2.0, speed_kmh=50.0):
    """A start time at which a drive from the approach's start crosses its stop line
    ``seconds_into`` the wanted colour."""
    table = net.signals
    to_line_s = net.stop_along_m[approach] / (speed_kmh / 3.6)
    for k in range(0, 200_000, 100):
        t = T0 / 1000 + k / 1000
        if (
            int(table.colour(approach, t + to_line_s)) == colour
            and int(table.colour(approach, t + to_line_s - seconds_into)) == colour
        ):
            return T0 + k
    raise AssertionError("no such phase")


@pytest.fixture(scope="module")
def row2(net):
    return path_along(net, "Row 2")


def test_running_a_red_light_is_an_infraction_at_the_stop_line(net, detectors, row2):
    start = crossing_start(net, row2[0], RED)
    drive = Drive(net, "TX-6", row2, start_ts=start, runs_red=True, duration_s=20)
    found = [d for d in run(detectors, net, drive)[0] if d.type == "red_light"]
    assert len(found) >= 1
    d = found[0]
    assert d.segment_id == net.segment_ids[row2[0]]
    x = net.pack.intersections[net.pack.intersection_index[d.intersection_id]]
    assert (d.lat, d.lon) == pytest.approx(x.stop_lines[d.segment_id])
    assert int(net.signals.colour(row2[0], d.event_ts / 1000)) == RED
    assert d.measured >= 2.0  # seconds into red at the crossing
    assert d.infraction_id == f"RED-TX-6-{d.evidence_ts}"


def test_a_red_light_run_is_found_wherever_the_fixes_fall_around_the_line(net, detectors, row2):
    """The fixes (1 Hz, 13.9 m apart at 50 km/h) fall anywhere around the stop line: with the
    drive's start moved in 0.5 m steps, one fix lands within the line's tolerance, just past
    it — the crossing is still found, once."""
    start = crossing_start(net, row2[0], RED, seconds_into=3.0)
    found = {}
    for step in range(28):
        drive = Drive(net, "TX-10", row2, start_ts=start, start_along_m=step * 0.5, runs_red=True,
                      duration_s=20)  # fmt: skip
        found[step * 0.5] = [d for d in run(detectors, net, drive)[0] if d.type == "red_light"]
    assert {moved: len(ds) for moved, ds in found.items() if len(ds) != 1} == {}
    for ds in found.values():
        assert int(net.signals.colour(row2[0], ds[0].event_ts / 1000)) == RED


def test_waiting_just_past_the_line_through_the_red_and_leaving_on_green_is_nothing(
    net, detectors, row2
):
    """A car that stopped half a metre past the line (within its tolerance) waits out the
    red: its last fix there is on red, it passes the tolerance's end on green — not a
    red-light run, however close to its last red fix the crossing is dated."""
    approach, table = row2[0], net.signals
    t = T0 / 1000
    while not (
        int(table.colour(approach, t)) == RED and int(table.colour(approach, t + 0.02)) == GREEN
    ):
        t += 0.01
    wait_s = 20
    last_red_fix_ms = round((t - 0.01) * 1000)  # the last fix while stopped: red
    drive = Drive(net, "TX-11", row2, start_ts=last_red_fix_ms - wait_s * 1000,
                  start_along_m=net.stop_along_m[approach] + 0.5,
                  speeds_kmh=[0.0] * wait_s + [30.0], duration_s=wait_s + 5)  # fmt: skip
    fixes = matched(net, drive.fixes())
    assert int(table.colour(approach, fixes[wait_s].ts / 1000)) == RED
    assert [d for d in run(detectors, net, drive)[0] if d.type == "red_light"] == []


def test_stopping_at_the_red_light_and_going_on_green_is_nothing(net, detectors, row2):
    start = crossing_start(net, row2[0], RED)
    drive = Drive(net, "TX-7", row2, start_ts=start, runs_red=False, duration_s=150)
    found, _, fixes = run(detectors, net, drive)
    assert found == []
    # it did wait at the line, then crossed
    assert min(f.speed_kmh for f in fixes[5:60]) == 0.0
    assert fixes[-1].segment != row2[0]


def test_crossing_on_yellow_is_allowed(net, detectors, row2):
    start = crossing_start(net, row2[0], YELLOW, seconds_into=0.5)
    drive = Drive(net, "TX-8", row2, start_ts=start, runs_red=True, duration_s=20)
    assert [d for d in run(detectors, net, drive)[0] if d.type == "red_light"] == []


def test_crossing_on_green_is_nothing(net, detectors, row2):
    start = crossing_start(net, row2[0], GREEN)
    drive = Drive(net, "TX-9", row2, start_ts=start, runs_red=True, duration_s=20)
    assert run(detectors, net, drive)[0] == []


def zone_drive(net, vehicle, seconds, speed=0.0):
    """A taxi stopped in the middle of the grid's no-parking zone on Row 0."""
    path = path_along(net, "Row 0")
    return Drive(net, vehicle, path[1:], start_along_m=100.0, speeds_kmh=[speed],
                 duration_s=seconds)  # fmt: skip


def test_parking_in_a_no_parking_zone_for_the_dwell_time(net, detectors):
    found, _, fixes = run(detectors, net, zone_drive(net, "TX-10", 130))
    assert fixes[0].zone == 0
    assert [(d.type, d.event_ts, d.evidence_ts, d.zone_id) for d in found] == [
        ("illegal_parking", T0, T0 + 120_000, "z-row0")
    ]
    assert found[0].infraction_id == f"PRK-TX-10-{T0}"
    assert found[0].parking_kind == "other"


def test_a_parking_infraction_names_the_road_the_car_stands_on(net, detectors):
    found, _, fixes = run(detectors, net, zone_drive(net, "TX-14", 130))
    (parking,) = found
    # Parked at 100 m into Row 0's second block: that segment, or the other direction's
    # (a stationary fix has no heading to tell them apart); where a unit is sent.
    block = path_along(net, "Row 0")[1]
    here = {net.segment_ids[block], net.segment_ids[int(net.pack.reverse_segment[block])]}
    assert parking.segment_id in here
    assert parking.segment_id == net.segment_ids[fixes[0].segment]


def test_a_stop_whose_first_fix_is_off_the_road_takes_the_segment_of_a_later_one(net, detectors):
    fixes = matched(net, zone_drive(net, "TX-15", 130).fixes())
    fixes[0] = fixes[0]._replace(segment=-1)  # not matched (GPS off the road)
    state = VehicleState()
    (parking,) = detectors.on_fixes("TX-15", "taxi_petit", state, fixes)
    assert parking.event_ts == T0  # the stop still began with that fix
    assert parking.segment_id == net.segment_ids[fixes[1].segment]


def test_a_stop_remembered_before_segments_were_kept_still_fires_without_one(net, detectors):
    _, state, _ = run(detectors, net, zone_drive(net, "TX-16", 30))
    del state.parked["segment"]  # a state stored by the previous version of the detectors
    (parking,) = detectors.on_time("TX-16", state, T0 + 125_000)
    assert (parking.zone_id, parking.segment_id) == ("z-row0", None)


def test_parking_fires_on_the_timer_when_the_vehicle_stops_reporting(net, detectors):
    found, state, _ = run(detectors, net, zone_drive(net, "TX-11", 30))
    assert found == []
    assert detectors.deadline(state) == T0 + 120_000
    fired = detectors.on_time("TX-11", state, T0 + 125_000)
    assert [d.type for d in fired] == ["illegal_parking"]
    assert detectors.on_time("TX-11", state, T0 + 300_000) == []  # once per stop


def test_a_short_stop_in_the_zone_is_nothing(net, detectors):
    stop = zone_drive(net, "TX-12", 60).fixes()
    leave = Drive(net, "TX-12", path_along(net, "Row 0")[1:], start_ts=T0 + 60_000,
                  start_along_m=100.0, speeds_kmh=[30], duration_s=10).fixes()  # fmt: skip
    state = VehicleState()
    found = detectors.on_fixes("TX-12", "taxi_petit", state, matched(net, stop + leave))
    assert found == []
    assert detectors.on_time("TX-12", state, T0 + 200_000) == []


def test_stopping_outside_a_zone_is_nothing(net, detectors):
    path = path_along(net, "Row 2")
    drive = Drive(net, "TX-13", path, start_along_m=50.0, speeds_kmh=[0.0], duration_s=200)
    assert run(detectors, net, drive)[0] == []


@pytest.mark.parametrize("chunks", [2, 5, 17])
def test_micro_batch_boundaries_do_not_change_the_outcome(net, detectors, chunks, row2):
    start = crossing_start(net, row2[0], RED)
    drives = [
        Drive(net, "TX-20", path_along(net, "Row 0"), speeds_kmh=[50, 80, 85, 82, 50],
              duration_s=20),
        Drive(net, "TX-21", row2, start_ts=start, runs_red=True, duration_s=20),
        zone_drive(net, "TX-22", 130),
    ]  # fmt: skip
    for drive in drives:
        assert run(detectors, net, drive, chunks)[0] == run(detectors, net, drive, 1)[0]


def test_state_survives_serialisation(net, detectors):
    import orjson

    drive = Drive(net, "TX-30", path_along(net, "Row 0"), speeds_kmh=[50, 80, 85], duration_s=3)
    _, state, _ = run(detectors, net, drive)
    restored = VehicleState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored == state


def test_a_silent_vehicle_is_forgotten_once_nothing_is_pending(net, detectors):
    _, state, _ = run(detectors, net, zone_drive(net, "TX-31", 5, speed=30.0))
    last = state.last_seen_ts
    assert not detectors.forgettable(state, last + 1000)
    assert detectors.forgettable(state, last + 600_000)
