"""`casatwin city import`: an OpenStreetMap extract (written here, no download) becomes a pack."""

import orjson
import pytest

from casatwin import cli
from casatwin.city import load, osm

LAT0, LON0, STEP = 33.590, -7.620, 0.0018  # a 3 × 3 grid of ~200 m blocks near the centre


def _node(r: int, c: int) -> int:
    return 100 + 10 * r + c


def _osm_xml() -> str:
    nodes, ways = [], []
    for r in range(3):
        for c in range(3):
            tags = '<tag k="highway" v="traffic_signals"/>' if (r, c) == (1, 1) else ""
            nodes.append(
                f'<node id="{_node(r, c)}" version="1" lat="{LAT0 + r * STEP:.6f}" '
                f'lon="{LON0 + c * STEP:.6f}">{tags}</node>'
            )
    extra = {
        900: (LAT0 - 0.01, LON0),  # an island road
        901: (LAT0 - 0.01, LON0 + 0.002),
        902: (LAT0 + 2 * STEP + 0.002, LON0 + 2 * STEP),  # a one-way way out of the grid
    }
    for node_id, (lat, lon) in extra.items():
        nodes.append(f'<node id="{node_id}" version="1" lat="{lat:.6f}" lon="{lon:.6f}"/>')
    nodes.append(
        f'<node id="950" version="1" lat="{LAT0 + STEP + 0.0003:.6f}" lon="{LON0 + 0.0002:.6f}">'
        '<tag k="amenity" v="police"/><tag k="name" v="Commissariat du Test"/></node>'
    )

    def way(way_id: int, refs: list[int], **tags: str) -> None:
        body = "".join(f'<nd ref="{n}"/>' for n in refs)
        body += "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        ways.append(f'<way id="{way_id}" version="1">{body}</way>')

    row = [[_node(r, c) for c in range(3)] for r in range(3)]
    col = [[_node(r, c) for r in range(3)] for c in range(3)]
    way(1, row[0], highway="residential", name="Rue Zéro")
    way(2, row[1], highway="primary", name="Boulevard Un", maxspeed="50", lanes="4")
    way(3, row[2], highway="residential", name="Rue Deux", oneway="yes")
    way(4, col[0], highway="secondary", name="Avenue A")
    way(5, col[1], highway="tertiary", name="Rue B", maxspeed="30 mph")
    way(6, col[2], highway="residential", name="Rue C")
    way(7, [900, 901], highway="residential", name="Île")
    way(8, [_node(2, 2), 902], highway="residential", name="Sortie", oneway="yes")
    way(9, [_node(0, 0), _node(1, 1)], highway="footway")  # not for cars
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="casatwin-test">\n'
        + "\n".join(nodes + ways)
        + "\n</osm>\n"
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("osm")
    source = tmp / "quartier.osm"
    source.write_text(_osm_xml(), encoding="utf-8")
    return source, osm.import_file(source, name="quartier", title="Quartier test")


def test_roads_classes_limits_and_one_ways(imported):
    _, result = imported
    pack = load.from_dict(result.raw)
    assert set(pack.roads()) == {
        "Rue Zéro",
        "Boulevard Un",
        "Rue Deux",
        "Avenue A",
        "Rue B",
        "Rue C",
    }
    by_road = {
        road: (pack.seg_class[s[0]], float(pack.seg_limit_kmh[s[0]]), int(pack.seg_lanes[s[0]]))
        for road in pack.roads()
        for s in [pack.road_segments(road)]
    }
    assert by_road["Boulevard Un"] == ("arterial", 50.0, 2)  # maxspeed tag; 4 lanes, 2 each way
    assert by_road["Rue B"] == ("street", 48.0, 1)  # 30 mph
    assert by_road["Avenue A"] == ("arterial", 60.0, 2)  # class defaults
    assert pack.seg_oneway[pack.road_segments("Rue Deux")].all()
    assert len(pack.road_segments("Rue Deux")) == 2
    assert len(pack.road_segments("Rue Zéro")) == 4


def test_largest_component_kept_and_drops_reported(imported):
    _, result = imported
    report = result.report()
    assert report["dropped_roads"] == ["Sortie", "Île"]
    assert report["dropped_nodes"] == 3
    assert report["kept_nodes"] == 9


def test_signals_police_and_attribution(imported):
    _, result = imported
    pack = load.from_dict(result.raw)
    (x,) = pack.intersections
    node = pack.node_index[x.node]
    assert (pack.node_lat[node], pack.node_lon[node]) == pytest.approx((LAT0 + STEP, LON0 + STEP))
    assert x.name == "Boulevard Un × Rue B"
    assert len(x.plan.phases) == 2
    (station,) = pack.police_stations
    assert station.name == "Commissariat du Test" and len(station.units) == 4
    assert "© OpenStreetMap contributors" in pack.attribution and "ODbL" in pack.attribution


def test_cli_import(imported, tmp_path, capsys):
    source, _ = imported
    out = tmp_path / "quartier.json.gz"
    assert cli.main(["city", "import", str(source), "-o", str(out)]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert stats["signalised_intersections"] == 1
    assert stats["import"]["dropped_roads"] == ["Sortie", "Île"]
    assert load.load(str(out)).name == "quartier"


def test_cli_import_of_a_missing_or_empty_file(tmp_path, capsys):
    assert cli.main(["city", "import", str(tmp_path / "none.osm")]) == 2
    assert "no OpenStreetMap file" in capsys.readouterr().err
    empty = tmp_path / "empty.osm"
    empty.write_text('<?xml version="1.0"?><osm version="0.6"></osm>')
    assert cli.main(["city", "import", str(empty), "-o", str(tmp_path / "e.json")]) == 2
    assert "no drivable roads" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tag", "kmh"),
    [
        ("50", 50.0),
        ("50 km/h", 50.0),
        ("30 mph", 48.0),
        ("MA:urban", 60.0),
        ("none", 60.0),
        (None, 60.0),
    ],
)
def test_maxspeed_parsing(tag, kmh):
    assert osm.parse_maxspeed(tag, 60.0) == kmh
