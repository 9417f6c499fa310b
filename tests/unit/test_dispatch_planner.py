"""The planner: infractions put on the map, queued incidents put back on it, severity, unit
homes, congestion in the routing."""

from dataclasses import asdict, replace

import pytest

from casatwin.bus import topics
from casatwin.bus.messages import check
from casatwin.city import load, synthetic
from casatwin.dispatch.nearest import Place
from casatwin.dispatch.planner import Planner, UnknownPlace, severity
from casatwin.dispatch.store import Assignment
from casatwin.processor.detectors import Detectors, VehicleState
from casatwin.processor.network import RoadNetwork
from casatwin.processor.sink import Decided, infraction_message
from tests.drive import Drive, matched, path_along


@pytest.fixture(scope="module")
def planner():
    return Planner(load.from_dict(synthetic.grid(oneway_rows=(0,))))


def at(planner, segment, offset_m):
    lat, lon = planner.latlon(Place(segment, offset_m))
    return {
        "infraction_id": "I-1",
        "type": "speeding",
        "event_ts": 1,
        "lat": lat,
        "lon": lon,
        "segment_id": planner.pack.segment_ids[segment],
        "decision": {"class": 2},
    }


def test_an_infraction_is_placed_on_its_segment_where_it_was_seen(planner):
    incident = planner.incident(at(planner, 7, 120.0))
    assert incident.place.segment == 7
    assert incident.place.offset_m == pytest.approx(120.0, abs=0.5)


def test_an_intersection_infraction_is_placed_at_the_junction(planner):
    pack = planner.pack
    crossing = pack.intersections[0]
    place = planner.locate({"intersection_id": crossing.id, "lat": 0, "lon": 0})
    assert pack.seg_to[place.segment] == pack.node_index[crossing.node]
    assert place.offset_m == pytest.approx(pack.seg_length_m[place.segment])


def test_a_parked_car_the_processor_reports_is_placed_where_it_stands(planner):
    """Illegal parking names a zone, and the road the car stands on: the unit goes there."""
    net = RoadNetwork(planner.pack)  # Row 0, where the no-parking zone is, is one-way here
    block = path_along(net, "Row 0")[1]
    parked = Drive(net, "TX-1", [block], start_along_m=100.0, speeds_kmh=[0.0], duration_s=125)
    (parking,) = Detectors(net).on_fixes(
        "TX-1", "taxi_petit", VehicleState(), matched(net, parked.fixes())
    )
    decision = {"class": 1, "fine_mad": 700, "court": False, "rule": "parking.dangerous"}
    message = infraction_message(
        asdict(parking) | {"detected_ts": parking.evidence_ts},
        Decided({"vehicle_id": "TX-1"}, {}, decision, dispatch_required=True),
        None,
    )
    check(topics.INFRACTIONS, message)
    assert (message["zone_id"], message["segment_id"]) == ("z-row0", net.segment_ids[block])
    incident = planner.incident(message)
    assert incident.place.segment == block
    assert incident.place.offset_m == pytest.approx(100.0, abs=0.5)
    assert incident.severity == 1


@pytest.mark.parametrize(
    ("infraction", "reason"),
    [
        ({"segment_id": "s-nowhere"}, "segment 's-nowhere' is not in city pack"),
        ({"intersection_id": "i-nowhere"}, "intersection 'i-nowhere' is not in city pack"),
        ({}, "names neither a segment nor an intersection"),
        # A parking infraction published before the processor named the segment.
        ({"zone_id": "z-row0"}, "names neither a segment nor an intersection"),
    ],
)
def test_an_infraction_off_the_map_is_refused_with_the_reason(planner, infraction, reason):
    with pytest.raises(UnknownPlace, match=reason):
        planner.locate({"lat": 0, "lon": 0} | infraction)


def test_a_queued_incident_is_put_back_where_it_was_unless_the_map_changed(planner):
    incident = planner.incident(at(planner, 7, 120.0))
    row = Assignment(
        dispatch_id="D-I-1", infraction_id="I-1", unit_id=None, status="queued", created_ms=1,
        assigned_ms=None, arrived_ms=None, closed_ms=None, eta_s=None, response_s=None,
        infraction_type="speeding", severity=2, segment_id=planner.pack.segment_ids[7],
        offset_m=incident.place.offset_m, lat=incident.lat, lon=incident.lon,
    )  # fmt: skip
    assert planner.queued_incident(row) == incident
    # Queued under another version of the pack: it cannot be placed, so no unit is chosen.
    with pytest.raises(UnknownPlace, match="segment 's-gone' is not in city pack 'grid'"):
        planner.queued_incident(replace(row, segment_id="s-gone"))
    with pytest.raises(UnknownPlace):
        planner.queued_incident(replace(row, segment_id=None))


def test_severity_puts_court_cases_first_then_the_class():
    assert severity({"class": 3, "court": True}) == 0
    assert severity({"class": 1, "delit": True}) == 0
    assert severity({"class": 1}) == 1 < severity({"class": 3}) == 3
    assert severity({}) == 9


def test_units_wait_at_their_station(planner):
    pack = planner.pack
    assert set(planner.home) == {u for s in pack.police_stations for u in s.units}
    for s, station in enumerate(pack.police_stations):
        for unit in station.units:
            assert planner.home[unit] == Place(*pack.station_place(s))
            assert planner.station_of[unit] == station.id
            assert pack.seg_from[planner.home[unit].segment] == pack.node_index[station.node]


def test_a_jam_on_the_way_sends_the_other_unit():
    planner = Planner(load.from_dict(synthetic.grid()), min_speed_kmh=5)
    pack = planner.pack
    free = list(planner.home)
    # An incident a few blocks from the nearest unit.
    incident, first = next(
        (i, c)
        for i in (planner.incident(at(planner, s, 100.0)) for s in range(pack.n_segments))
        if len((c := planner.choose_free(i, free)).route) >= 4
    )
    # Jam every segment of the first choice's route but the incident's own.
    for segment in first.route[:-1]:
        assert planner.observe_speed(pack.segment_ids[segment], 2.0)
    assert not planner.observe_speed("s-nowhere", 2.0)
    assert planner.refresh() and not planner.refresh()
    second = planner.choose_free(incident, free)
    assert second.eta_s > first.eta_s
    assert set(second.route[:-1]).isdisjoint(first.route[:-1]) or second.unit_id != first.unit_id
    route = planner.route_latlon(second.route)
    assert len(route) == len(second.route) + 1
