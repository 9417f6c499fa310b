"""Map matching: nearest road, right direction, nothing far from any road. Pure."""

import numpy as np
import pytest

from casatwin.city.load import from_dict
from casatwin.city.synthetic import grid
from casatwin.processor.mapmatch import NO_SEGMENT, MapMatcher
from casatwin.processor.network import RoadNetwork
from tests.drive import path_along, position


@pytest.fixture(scope="module")
def net():
    return RoadNetwork(from_dict(grid(oneway_rows=(3,))))


def test_heading_picks_the_direction_of_a_two_way_street(net):
    east = path_along(net, "Row 1")[1]
    west = int(net.pack.reverse_segment[east])
    lat, lon = position(net, east, 80.0)
    m = net.matcher.match([lat, lat], [lon, lon], [88.0, 271.0], [40.0, 40.0])
    assert list(m.segment) == [east, west]
    assert m.along_m[0] == pytest.approx(80.0, abs=0.5)
    assert m.along_m[1] == pytest.approx(net.length_m[west] - 80.0, abs=0.5)


def test_gps_offset_from_the_centre_line_still_matches(net):
    seg = path_along(net, "Column 2")[1]  # northbound
    lat, lon = position(net, seg, 120.0)
    x, y = net.pack.projection.to_xy(lat, lon)
    lat2, lon2 = net.pack.projection.to_latlon(x + 12.0, y)  # 12 m east of the line
    m = net.matcher.match([lat2], [lon2], [2.0], [30.0])
    assert m.segment[0] == seg
    assert m.distance_m[0] == pytest.approx(12.0, abs=0.2)


def test_at_a_junction_the_heading_chooses_the_street_driven_along(net):
    east = path_along(net, "Row 2")[1]
    lat, lon = position(net, east, net.length_m[east] - 3.0)  # 3 m before the junction
    m = net.matcher.match([lat], [lon], [90.0], [45.0])
    assert net.pack.seg_road[m.segment[0]] == "Row 2"
    north = net.matcher.match([lat], [lon], [0.0], [45.0])
    assert net.pack.seg_road[north.segment[0]] == "Column 2"


def test_a_one_way_street_matches_its_only_direction_even_against_the_heading(net):
    seg = path_along(net, "Row 3")[2]
    assert net.pack.seg_oneway[seg]
    lat, lon = position(net, seg, 50.0)
    m = net.matcher.match([lat], [lon], [270.0], [40.0])  # wrong-way driver
    assert m.segment[0] == seg


def test_far_from_every_road_is_no_segment(net):
    seg = path_along(net, "Row 1")[1]
    lat, lon = position(net, seg, 100.0)
    x, y = net.pack.projection.to_xy(lat, lon)
    lat2, lon2 = net.pack.projection.to_latlon(x, y + 90.0)  # mid-block between rows
    outside = net.pack.projection.to_latlon(x - 5000.0, y)
    m = net.matcher.match([lat2, outside[0]], [lon2, outside[1]], [90.0, 90.0], [30.0, 30.0])
    assert list(m.segment) == [NO_SEGMENT, NO_SEGMENT]


def test_vectorised_matches_equal_one_by_one_and_brute_force(net):
    rng = np.random.default_rng(7)
    south, west, north, east = net.pack.bounds
    lat = rng.uniform(south, north, 400)
    lon = rng.uniform(west, east, 400)
    heading = rng.uniform(0, 360, 400)
    speed = rng.uniform(0, 60, 400)
    m = net.matcher.match(lat, lon, heading, speed)
    one = [net.matcher.match(lat[i : i + 1], lon[i : i + 1], heading[i : i + 1], speed[i : i + 1])
           for i in range(0, 400, 37)]  # fmt: skip
    assert [int(o.segment[0]) for o in one] == [int(m.segment[i]) for i in range(0, 400, 37)]
    # brute force over every segment agrees with the grid index
    brute = MapMatcher(net.pack, sample_step_m=10.0)
    brute.candidates = lambda x, y: np.tile(np.arange(net.pack.n_segments), (len(x), 1))
    assert np.array_equal(brute.match(lat, lon, heading, speed).segment, m.segment)
    assert (m.segment >= 0).any() and (m.segment < 0).any()
