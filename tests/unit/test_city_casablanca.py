"""The bundled Casablanca pack: counts, names, geometry, districts, and its reproducible build."""

import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from casatwin.city import load, sketch
from casatwin.city.geometry import haversine_m, points_in_polygon
from casatwin.city.routing import Router
from casatwin.city.signals import GREEN, SignalTable

CITY = Path(load.__file__).parent
SKETCH = CITY / "sources" / "casablanca.yaml"

REQUIRED_ROADS = [
    "Boulevard Zerktouni",
    "Boulevard d'Anfa",
    "Avenue Hassan II",
    "Boulevard Mohammed V",
    "Avenue des FAR",
    "Boulevard de la Corniche",
    "Boulevard Ghandi",
    "Boulevard Abdelmoumen",
    "Boulevard Moulay Youssef",
    "Route d'El Jadida",
    "Boulevard Roudani",
    "Boulevard Brahim Roudani",
    "Boulevard Al Massira Al Khadra",
    "Boulevard Bir Anzarane",
    "Boulevard Mohammed VI",
    "Boulevard Al Qods",
    "Autoroute urbaine",
    "Boulevard Ibn Tachfine",
    "Boulevard de Paris",
    "Rue Allal Ben Abdellah",
    "Boulevard Abdelkrim El Khattabi",
    "Boulevard Yacoub El Mansour",
    "Boulevard Omar Riffi",
]
NAMED_ZONES = ["Casa Port", "Casa Voyageurs", "Twin Center", "Place Mohammed V", "Hassan II Mosque"]


@pytest.fixture(scope="module")
def casa():
    return load.load("casablanca")


def test_counts_meet_the_issue(casa):
    stats = casa.stats()
    assert stats["directed_segments"] >= 1500
    assert stats["signalised_intersections"] >= 40
    assert stats["no_parking_zones"] >= 20
    assert stats["police_stations"] >= 10
    assert stats["police_units"] >= 40
    assert stats["highway_stations"] >= 6
    assert stats["districts"] >= 10
    assert "OpenStreetMap" in casa.attribution  # says where the exact network comes from


def test_one_strongly_connected_graph(casa):
    n = casa.n_nodes
    graph = csr_matrix((np.ones(casa.n_segments), (casa.seg_from, casa.seg_to)), shape=(n, n))
    count, _ = connected_components(graph, directed=True, connection="strong")
    assert count == 1
    assert load.problems(casa.raw) == []


@pytest.mark.parametrize("road", REQUIRED_ROADS)
def test_named_road_exists(casa, road):
    assert len(casa.road_segments(road)) >= 2, road


def test_urban_motorway_and_speed_limits(casa):
    classes = np.array(casa.seg_class)
    motorway = casa.road_segments("Autoroute urbaine")
    assert set(classes[motorway]) == {"motorway"}
    assert casa.seg_length_m[motorway].sum() > 2 * 15_000  # both carriageways, 15+ km
    assert (
        (casa.seg_limit_kmh[classes == "motorway"] >= 80)
        & (casa.seg_limit_kmh[classes == "motorway"] <= 100)
    ).all()
    assert set(casa.seg_limit_kmh[casa.road_segments("Boulevard Mohammed V")]) == {40.0}
    assert set(casa.seg_limit_kmh[casa.road_segments("Boulevard Zerktouni")]) == {60.0}


def test_centre_one_way_streets_run_one_way(casa):
    for road in ("Boulevard de Paris", "Rue Allal Ben Abdellah", "Rue Omar Riffi"):
        segs = casa.road_segments(road)
        assert casa.seg_oneway[segs].all()
        assert (casa.reverse_segment[segs] < 0).all(), road


def test_named_no_parking_zones_exist(casa):
    names = {z.name for z in casa.no_parking_zones}
    assert set(NAMED_ZONES) <= names


def _zone_contains(zone, lat, lon):
    poly = np.array(zone.polygon)
    return bool(points_in_polygon(lon, lat, poly[:, 1], poly[:, 0]))


def test_zones_surround_their_landmarks(casa):
    zones = {z.name: z for z in casa.no_parking_zones}
    for name in NAMED_ZONES:
        mark = casa.landmark(name)
        assert _zone_contains(zones[name], mark.lat, mark.lon), name


def test_geography(casa):
    port = casa.landmark("Casa Port")
    diab, sebaa = casa.landmark("Aïn Diab"), casa.landmark("Aïn Sebaâ")
    maarouf, mosque = casa.landmark("Sidi Maarouf"), casa.landmark("Hassan II Mosque")
    for mark in (port, diab, sebaa, maarouf, mosque):
        assert casa.contains(mark.lat, mark.lon), mark.name
    assert diab.lon < port.lon < sebaa.lon  # Aïn Diab west, Aïn Sebaâ east of the port
    assert maarouf.lat < port.lat - 0.05  # Sidi Maarouf 6+ km south
    # The Corniche runs along the coast west of the port, from El Hank to Aïn Diab.
    corniche = casa.road_segments("Boulevard de la Corniche")
    nodes = np.unique(np.concatenate([casa.seg_from[corniche], casa.seg_to[corniche]]))
    assert (casa.node_lon[nodes] < port.lon - 0.03).all()
    assert (casa.node_lat[nodes] > 33.585).all()
    hank = casa.landmark("Phare d'El Hank")
    ends = [(casa.node_lat[n], casa.node_lon[n]) for n in nodes[[0, -1]]]
    assert min(haversine_m(*e, hank.lat, hank.lon) for e in ends) < 300
    # Twin Center stands at the Zerktouni × Massira junction.
    twin = casa.landmark("Twin Center")
    x = casa.intersection("Twin Center (Zerktouni × Massira)")
    node = casa.node_index[x.node]
    assert haversine_m(casa.node_lat[node], casa.node_lon[node], twin.lat, twin.lon) < 60


def test_lookups_forgive_accents_and_case(casa):
    assert casa.landmark("Ain Diab").name == "Aïn Diab"
    assert casa.landmark("stade mohammed v").id == "stade-mohammed-v"
    assert casa.road_name("boulevard roudani") == "Boulevard Brahim Roudani"
    assert casa.district("Maarif").name == "Maârif"
    with pytest.raises(KeyError):
        casa.landmark("Eiffel Tower")


def test_police_and_highway_stations(casa):
    units = [u for s in casa.police_stations for u in s.units]
    assert len(units) == len(set(units))
    assert "PU-ANFA-1" in units
    classes = np.array(casa.seg_class)
    for station in casa.police_stations:
        node = casa.node_index[station.node]
        near = np.concatenate([casa.segments_from(node), casa.segments_into(node)])
        assert (classes[near] != "motorway").any(), station.id  # units can leave the station
        assert haversine_m(station.lat, station.lon, casa.node_lat[node], casa.node_lon[node]) < 400
    for h in casa.highway_stations:
        assert casa.seg_class[casa.segment_index[h.segment]] == "motorway"


def test_districts_cover_the_city(casa):
    districts = casa.district_of(casa.node_lat, casa.node_lon)
    assert (districts != "").all()
    assert casa.district_of(33.5868, -7.6327) == "Maârif"  # Twin Center
    assert casa.district_of(33.5927, -7.6187) == "Sidi Belyout"  # Place Mohammed V
    assert casa.district_of(33.6050, -7.5420) == "Aïn Sebaâ"
    assert casa.district_of(40.0, 0.0) == ""
    names = {d.name for d in casa.districts}
    assert {"Anfa", "Maârif", "Sidi Belyout", "Aïn Sebaâ", "Hay Mohammadi"} <= names


def test_route_between_far_apart_landmarks(casa):
    router = Router(casa)
    mall, sebaa = casa.landmark("Morocco Mall"), casa.landmark("Aïn Sebaâ")
    src, dst = casa.nearest_node(mall.lat, mall.lon), casa.nearest_node(sebaa.lat, sebaa.lon)
    path = router.path(src, dst)
    assert casa.seg_from[path[0]] == src and casa.seg_to[path[-1]] == dst
    assert all(casa.seg_to[a] == casa.seg_from[b] for a, b in itertools.pairwise(path))
    assert casa.seg_length_m[path].sum() > 15_000
    back = router.path(dst, src)
    assert len(back) > 0


def test_signal_plans_never_give_two_phases_green(casa):
    table = SignalTable.from_pack(casa)
    for x in casa.intersections:
        phases = [[casa.segment_index[s] for s in p.approaches] for p in x.plan.phases]
        for t in np.arange(0, x.plan.cycle_s, 1.0):
            green = [(table.colour(p, t) == GREEN).any() for p in phases]
            assert sum(green) <= 1, x.name


def test_rebuilding_the_sketch_gives_the_committed_pack():
    committed = gzip.decompress(load.bundled_path("casablanca").read_bytes())
    rebuilt = load.encode(sketch.compile_file(SKETCH), compact=True)
    assert rebuilt == committed, (
        "the bundled pack is stale: casatwin city build "
        "services/casatwin/city/sources/casablanca.yaml "
        "-o services/casatwin/city/packs/casablanca.json.gz"
    )
