"""Validation names every offending feature; the CLI exits non-zero with a clear message."""

import copy

import orjson
import pytest

from casatwin import cli
from casatwin.city import load, synthetic


@pytest.fixture
def grid():
    return synthetic.grid()


def _write(tmp_path, raw, name="pack.json"):
    path = tmp_path / name
    load.write(raw, path)
    return path


def test_the_synthetic_grid_is_valid(grid):
    assert load.problems(grid) == []


def test_a_one_way_street_leading_nowhere(grid):
    raw = copy.deepcopy(grid)
    raw["nodes"]["n09999"] = [33.5865, -7.6245]
    raw["segments"].append(
        {
            "id": "s09999",
            "from": "n00001",
            "to": "n09999",
            "road": "Impasse du Test",
            "class": "street",
            "limit_kmh": 30,
            "oneway": True,
            "lanes": 1,
        }
    )
    (problem,) = load.problems(raw)
    assert "not strongly connected" in problem
    assert "Impasse du Test" in problem and "n09999" in problem


def test_a_node_outside_the_bounds(grid):
    raw = copy.deepcopy(grid)
    raw["nodes"]["n00007"] = [34.5, -7.6]
    assert load.problems(raw) == ["node n00007: [34.5, -7.6] is outside the city's bounds"]


def test_a_bad_signal_plan(grid):
    raw = copy.deepcopy(grid)
    plan = raw["intersections"][0]["plan"]
    plan["cycle_s"] += 10
    plan["phases"][1]["green_s"] = 2.0
    plan["phases"][1]["approaches"].pop()
    found = load.problems(raw)
    assert any(p.startswith("intersection i001: cycle_s=") for p in found)
    assert any("i001: phase B has under 5 s of green" in p for p in found)
    assert any(
        p.startswith("intersection i001: approach(es)") and "in no phase" in p for p in found
    )


def test_a_zone_that_crosses_itself(grid):
    raw = copy.deepcopy(grid)
    poly = raw["no_parking_zones"][0]["polygon"]
    poly[1], poly[2] = poly[2], poly[1]  # a bow tie
    assert load.problems(raw) == ["no-parking zone z-row0: the polygon crosses itself"]


def test_districts_must_cover_without_overlap(grid):
    south, west, north, east = grid["bounds"]
    mid = (west + east) / 2
    raw = copy.deepcopy(grid)
    raw["districts"] = [
        {
            "id": "w",
            "name": "West",
            "polygon": [[south, west], [south, mid], [north, mid], [north, west]],
        },
    ]
    (problem,) = load.problems(raw)
    assert problem.startswith("districts:") and "lie in no district" in problem
    raw["districts"].append(
        {
            "id": "e",
            "name": "East",
            "polygon": [[south, west], [south, east], [north, east], [north, west]],
        }
    )
    (problem,) = load.problems(raw)
    assert problem.startswith("district e: overlaps district w")


def test_an_alias_of_no_road(grid):
    raw = copy.deepcopy(grid)
    raw["road_aliases"] = {"Row Zero": "Row 0", "Nowhere Street": "Row 99"}
    assert load.problems(raw) == [
        "road alias 'Nowhere Street': names road 'Row 99', which has no segment"
    ]


def test_from_dict_refuses_a_broken_pack(grid):
    raw = copy.deepcopy(grid)
    raw["nodes"]["n00007"] = [34.5, -7.6]
    with pytest.raises(load.PackError, match="node n00007"):
        load.from_dict(raw)


def test_cli_validate_lists_the_problems_and_exits_1(tmp_path, grid, capsys):
    raw = copy.deepcopy(grid)
    raw["nodes"]["n00007"] = [34.5, -7.6]
    path = _write(tmp_path, raw)
    assert cli.main(["city", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s)" in err and "node n00007" in err
    assert "Traceback" not in err


def test_cli_validate_accepts_a_good_pack(tmp_path, grid, capsys):
    path = _write(tmp_path, grid, "grid.json.gz")
    assert cli.main(["city", "validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "is not valid JSON"), (b"[1, 2]", "should hold a JSON object")],
)
def test_cli_unreadable_pack_is_one_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    assert cli.main(["city", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("casatwin: error:") and message in err[0]


def test_cli_missing_pack(capsys):
    assert cli.main(["city", "stats", "/nonexistent/pack.json"]) == 2
    assert "no city pack named" in capsys.readouterr().err


def test_cli_stats_prints_one_json_object(capsys):
    assert cli.main(["city", "stats", "casablanca"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    stats = orjson.loads(out)
    assert stats["name"] == "casablanca"
    assert stats["directed_segments"] >= 1500 and stats["districts"] >= 10


def test_cli_stats_of_a_broken_pack_is_one_clear_error(tmp_path, grid, capsys):
    raw = copy.deepcopy(grid)
    raw["intersections"][0]["plan"]["cycle_s"] = 500
    path = _write(tmp_path, raw, "broken.json")
    assert cli.main(["city", "stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"casatwin: error: {path} is not a valid city pack:")
    assert "intersection i001: cycle_s=500" in err
    assert "Traceback" not in err
