import itertools

import numpy as np
import pytest

from casatwin.city import load, synthetic
from casatwin.city.routing import Router
from casatwin.dispatch.nearest import Place, choose, travel_times


@pytest.fixture(scope="module")
def one_way_grid():
    """Row 0 is one-way eastbound: a unit just east of an incident on it must go round."""
    return load.from_dict(synthetic.grid(oneway_rows=(0,)))


def seg(pack, a, b):
    return Router(pack).segment_between(pack.node_index[a], pack.node_index[b])


def latlon_at(pack, place):
    a, b = pack.seg_from[place.segment], pack.seg_to[place.segment]
    f = place.offset_m / pack.seg_length_m[place.segment]
    lat = pack.node_lat[a] + (pack.node_lat[b] - pack.node_lat[a]) * f
    lon = pack.node_lon[a] + (pack.node_lon[b] - pack.node_lon[a]) * f
    return float(lat), float(lon)


def test_nearer_by_road_beats_nearer_as_the_crow_flies(one_way_grid):
    pack = one_way_grid
    router = Router(pack)
    # Row 0 nodes are n00001..n00005 west to east, 200 m apart.
    incident = Place(seg(pack, "n00002", "n00003"), 150.0)  # 350 m from the west end
    ahead = Place(seg(pack, "n00003", "n00004"), 50.0)  # 100 m east: close, wrong way
    behind = Place(seg(pack, "n00001", "n00002"), 0.0)  # 350 m west: far, right way
    units = {"PU-AHEAD": ahead, "PU-BEHIND": behind}
    where = {k: latlon_at(pack, v) for k, v in units.items()}
    choice = choose(pack, router, incident, latlon_at(pack, incident), units, where)
    assert choice.unit_id == "PU-BEHIND"
    assert choice.crow_m > 300
    # 350 m at 60 km/h
    assert choice.eta_s == pytest.approx(350 / (60 / 3.6), rel=1e-3)
    assert list(choice.route) == [behind.segment, incident.segment]
    times, _ = travel_times(pack, router, incident, [ahead, behind])
    assert times[0] > 3 * times[1]


def test_route_is_a_connected_chain_from_unit_to_incident(one_way_grid):
    pack = one_way_grid
    router = Router(pack)
    incident = Place(seg(pack, "n00002", "n00003"), 150.0)
    far = Place(seg(pack, "n00025", "n00024"), 10.0)
    choice = choose(
        pack,
        router,
        incident,
        latlon_at(pack, incident),
        {"PU-1": far},
        {"PU-1": latlon_at(pack, far)},
    )
    route = choice.route
    assert route[0] == far.segment and route[-1] == incident.segment
    assert all(pack.seg_to[a] == pack.seg_from[b] for a, b in itertools.pairwise(route))
    # The ETA is the rest of the first segment, the whole middle ones and part of the last.
    pace = router.weights_s / pack.seg_length_m
    expected = (
        (pack.seg_length_m[far.segment] - far.offset_m) * pace[far.segment]
        + router.weights_s[route[1:-1]].sum()
        + incident.offset_m * pace[incident.segment]
    )
    assert choice.eta_s == pytest.approx(expected)


def test_ties_are_broken_by_straight_line_distance(one_way_grid):
    pack = one_way_grid
    router = Router(pack)
    incident = Place(seg(pack, "n00013", "n00014"), 100.0)
    a = Place(seg(pack, "n00008", "n00013"), 200.0)  # at the junction, coming from the south
    b = Place(seg(pack, "n00012", "n00013"), 200.0)  # at the junction, coming from the west
    units = {"PU-A": a, "PU-B": b}
    where = {"PU-A": latlon_at(pack, a), "PU-B": (where_b := latlon_at(pack, b))}
    # Same road time; make B look farther as the crow flies.
    where["PU-B"] = (where_b[0], where_b[1] - 0.01)
    choice = choose(pack, router, incident, latlon_at(pack, incident), units, where)
    assert choice.unit_id == "PU-A"


def test_no_units_or_unreachable_gives_none(one_way_grid):
    pack = one_way_grid
    router = Router(pack, weights_s=np.full(pack.n_segments, np.inf))
    incident = Place(0, 10.0)
    assert choose(pack, Router(pack), incident, (0, 0), {}, {}) is None
    unit = Place(5, 0.0)
    assert choose(pack, router, incident, (0, 0), {"PU": unit}, {"PU": (0, 0)}) is None
