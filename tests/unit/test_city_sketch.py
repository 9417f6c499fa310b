"""The sketch compiler: junctions where roads cross or touch, bridges, features, clear errors."""

import copy

import numpy as np
import pytest
import yaml

from casatwin import cli
from casatwin.city import load, sketch
from casatwin.city.geometry import LocalProjection

PROJ = LocalProjection(33.58, -7.62)


def at(x: float, y: float) -> list[float]:
    """[lat, lon] of a point x metres east and y metres north of the sketch's origin."""
    lat, lon = PROJ.to_latlon(x, y)
    return [round(float(lat), 6), round(float(lon), 6)]


def small_sketch() -> dict:
    """Two avenues crossing with no shared waypoint, a street stopping 20 m short of one of
    them, a one-way street, and a motorway that bridges the avenues, joined by a ramp."""
    return {
        "name": "small",
        "bounds": [33.56, -7.645, 33.60, -7.595],
        "max_segment_m": 200,
        "points": {"ramp_top": at(900, -600)},
        "roads": [
            {
                "name": "Avenue Est-Ouest",
                "class": "arterial",
                "path": [at(-800, 0), at(800, 0)],
                "dead_end": True,
            },
            {
                "name": "Avenue Nord-Sud",
                "class": "arterial",
                "path": [at(0, -800), at(0, 800)],
                "dead_end": True,
            },
            {
                "name": "Rue Courte",
                "class": "street",
                "path": [at(400, 600), at(400, 20)],
                "dead_end": True,
            },
            {
                "name": "Rue Sens Unique",
                "class": "centre",
                "oneway": True,
                "path": [at(-400, -800), at(-400, 0), at(0, 400)],
            },
            {
                "name": "Autoroute Test",
                "class": "motorway",
                "path": [at(-1200, -600), "ramp_top", at(1200, 1200)],
                "dead_end": True,
            },
            {"name": "Bretelle", "class": "arterial", "path": ["ramp_top", at(800, 0)]},
            {
                "name": "Avenue Sud",
                "class": "arterial",
                "path": [at(-800, -800), at(800, -800)],
                "aliases": ["Av. Sud"],
                "dead_end": True,
            },
        ],
        "intersections": [
            {"name": "Centre", "roads": ["Avenue Est-Ouest", "Avenue Nord-Sud"]},
            {"name": "Courte", "at": at(400, 0)},
        ],
        "no_parking_zones": [
            {"name": "Centre", "parking_kind": "dangerous", "around": at(0, 0), "radius_m": 50},
        ],
        "police_stations": [{"name": "Commissariat", "code": "TEST", "at": at(30, 30), "units": 3}],
        "highway_stations": [{"name": "Pont", "at": at(-300, -580)}],
        "landmarks": [{"name": "Le Carrefour", "at": at(5, 5)}],
        "districts": [
            {"name": "Ouest", "seed": at(-500, 0)},
            {"name": "Est", "seed": at(500, 0)},
        ],
    }


@pytest.fixture(scope="module")
def small():
    return load.from_dict(sketch.compile_sketch(small_sketch()))


def _nodes_of(pack, road):
    segs = pack.road_segments(road)
    return set(pack.seg_from[segs]) | set(pack.seg_to[segs])


def test_crossing_roads_share_a_junction(small):
    common = _nodes_of(small, "Avenue Est-Ouest") & _nodes_of(small, "Avenue Nord-Sud")
    assert len(common) == 1
    (node,) = common
    assert np.hypot(*PROJ.to_xy(small.node_lat[node], small.node_lon[node])) < 1.0


def test_a_road_stopping_short_is_snapped_onto_the_other(small):
    common = _nodes_of(small, "Rue Courte") & _nodes_of(small, "Avenue Est-Ouest")
    assert len(common) == 1
    x = small.intersection("Courte")
    assert small.node_index[x.node] in common


def test_the_motorway_bridges_the_avenues_and_meets_the_ramp(small):
    motorway = _nodes_of(small, "Autoroute Test")
    for road in ("Avenue Est-Ouest", "Avenue Nord-Sud", "Avenue Sud", "Rue Sens Unique"):
        assert not motorway & _nodes_of(small, road), road
    assert motorway & _nodes_of(small, "Bretelle")
    assert small.seg_limit_kmh[small.road_segments("Autoroute Test")].max() == 100


def test_one_way_segments_and_densification(small):
    segs = small.road_segments("Rue Sens Unique")
    assert small.seg_oneway[segs].all() and (small.reverse_segment[segs] < 0).all()
    assert small.seg_length_m.max() <= 200 * 1.06


def test_features(small):
    (station,) = small.police_stations
    assert station.units == ("PU-TEST-1", "PU-TEST-2", "PU-TEST-3")
    assert small.node_index[station.node] in _nodes_of(small, "Avenue Est-Ouest")
    (highway,) = small.highway_stations
    assert small.seg_road[small.segment_index[highway.segment]] == "Autoroute Test"
    assert small.road_segments("Av. Sud").tolist() == small.road_segments("Avenue Sud").tolist()
    assert small.landmark("le carrefour").id == "le-carrefour"
    assert len(small.no_parking_zones[0].polygon) == 8
    assert small.district_of(*at(-100, 0)) == "Ouest"
    assert small.district_of(*at(100, 0)) == "Est"
    assert (small.district_of(small.node_lat, small.node_lon) != "").all()


def test_compilation_is_deterministic():
    a = load.encode(sketch.compile_sketch(small_sketch()), compact=True)
    b = load.encode(sketch.compile_sketch(small_sketch()), compact=True)
    assert a == b


def _error(data) -> str:
    with pytest.raises(sketch.SketchError) as info:
        sketch.compile_sketch(data, source="bad.yaml")
    return str(info.value)


def test_errors_name_the_feature():
    data = small_sketch()
    data["roads"][1]["path"][0] = "nowhere"
    assert "road 'Avenue Nord-Sud', waypoint 1: unknown point 'nowhere'" in _error(data)

    data = small_sketch()
    data["roads"][0]["class"] = "highway"
    assert "road 'Avenue Est-Ouest': class 'highway' is not one of" in _error(data)

    data = small_sketch()
    data["roads"][0]["path"][1] = [35.0, -7.6]
    assert "outside the bounds" in _error(data)

    data = small_sketch()
    data["intersections"].append({"name": "Nulle part", "roads": ["Avenue Sud", "Rue Courte"]})
    assert "intersection 'Nulle part': Avenue Sud and Rue Courte do not meet" in _error(data)

    data = small_sketch()
    data["no_parking_zones"][0]["parking_kind"] = "forbidden"
    assert "no-parking zone 'Centre': parking_kind 'forbidden'" in _error(data)

    data = small_sketch()
    data["highway_stations"][0]["at"] = at(-700, 700)
    assert "highway station 'Pont': the nearest motorway is" in _error(data)


def test_a_one_way_street_leading_nowhere_is_named():
    data = small_sketch()
    data["roads"].append(
        {
            "name": "Impasse",
            "class": "street",
            "oneway": True,
            "path": [at(0, 700), at(-300, 700)],
            "dead_end": True,
        }
    )
    message = _error(data)
    assert "not joined to the rest: Impasse" in message


def test_a_loose_end_is_named():
    data = small_sketch()
    data["roads"].append(
        {"name": "Rue Perdue", "class": "street", "path": [at(200, 0), at(200, 300)]}
    )
    assert "road ends that join no other road: 'Rue Perdue'" in _error(data)


def test_cli_build_writes_a_pack_and_prints_stats(tmp_path, capsys):
    source = tmp_path / "small.yaml"
    source.write_text(yaml.safe_dump(small_sketch(), allow_unicode=True))
    out = tmp_path / "small.json.gz"
    assert cli.main(["city", "build", str(source), "-o", str(out)]) == 0
    assert '"directed_segments"' in capsys.readouterr().out
    assert load.load(str(out)).stats()["signalised_intersections"] == 2


def test_cli_build_of_a_bad_sketch_is_one_clear_error(tmp_path, capsys):
    data = copy.deepcopy(small_sketch())
    del data["roads"][0]["path"]
    source = tmp_path / "bad.yaml"
    source.write_text(yaml.safe_dump(data))
    assert cli.main(["city", "build", str(source), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("casatwin: error: bad.yaml: road 'Avenue Est-Ouest': path needs")
    assert "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(roads="Avenue"), "roads should be a list of mappings"),
        (lambda d: d.update(points=[1, 2]), "points should be a mapping"),
        (lambda d: d.update(intersections=["Centre"]), "intersections should be a list"),
        (lambda d: d.update(max_segment_m="far"), "max_segment_m='far' should be a number"),
        (lambda d: d.update(bounds=[1, 2]), "bounds [1, 2] should be [south, west, north, east]"),
        (lambda d: d["roads"][0].update(lanes=9), "lanes=9 should be 1..6"),
        (lambda d: d["roads"][0].update(limit_kmh="fast"), "limit_kmh='fast' should be 5..130"),
        (lambda d: d["intersections"][0].update(roads=[["x"], "y"]), "no road named ['x']"),
        (lambda d: d["no_parking_zones"][0].update(polygon=7), "polygon should list at least 3"),
        (lambda d: d["police_stations"][0].update(units="many"), "units='many' should be a count"),
        (lambda d: d["police_stations"][0].update(code="test"), "needs a name and a code"),
        (lambda d: d["landmarks"][0].pop("at"), "landmark 'Le Carrefour': None should be"),
        (lambda d: d["districts"][1].update(seed=d["districts"][0]["seed"]), "coincide"),
    ],
)
def test_malformed_sketches_are_user_errors(change, message):
    data = small_sketch()
    change(data)
    assert message in _error(data)
