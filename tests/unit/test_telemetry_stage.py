"""The stateless stage: parse + validate (bad records set aside with a reason), locate, and
the panes the congestion windows are aggregated from."""

import orjson
import pyarrow as pa
import pytest

from casatwin.city.load import from_dict
from casatwin.city.synthetic import grid
from casatwin.processor.network import RoadNetwork
from casatwin.processor.telemetry import FIX_SCHEMA, PANE_SCHEMA, locate, panes, parse
from tests.drive import T0, Drive, path_along
from tests.processor_support import kafka_batch


@pytest.fixture(scope="module")
def net():
    return RoadNetwork(from_dict(grid()))


def test_good_fixes_pass_and_bad_ones_are_set_aside_with_the_reason(net):
    good = Drive(net, "TX-1", path_along(net, "Row 1"), duration_s=3).fixes()
    outside = {**good[0], "lat": 34.2}
    values = [
        orjson.dumps(good[0]),
        b"{not json",
        orjson.dumps({k: v for k, v in good[1].items() if k != "speed_kmh"}),
        orjson.dumps({**good[1], "speed_kmh": -3}),
        orjson.dumps({**good[1], "kind": "bicycle"}),
        orjson.dumps(outside),
        None,
        orjson.dumps([1, 2]),
        orjson.dumps({**good[2], "ts": 1.5}),
        orjson.dumps(good[2]),
    ]
    parsed = parse(kafka_batch(values), net.pack.bounds)
    assert len(parsed) == 2
    assert parsed.columns["vehicle_id"] == ["TX-1", "TX-1"]
    assert parsed.columns["offset"] == [100, 109]
    reasons = [r.reason for r in parsed.rejected]
    assert [r.offset for r in parsed.rejected] == list(range(101, 109))
    assert reasons[0].startswith("not valid JSON")
    assert "missing field 'speed_kmh'" in reasons[1]
    assert "'speed_kmh'=-3 is below 0" in reasons[2]
    assert "'kind'='bicycle' is not one of" in reasons[3]
    assert "outside the city" in reasons[4]
    assert "empty message" in reasons[5]
    assert "expected a JSON object" in reasons[6]
    assert "'ts' should be an integer" in reasons[7]
    rejected = parsed.rejected[0]
    assert (rejected.raw, rejected.topic, rejected.partition, rejected.key) == (
        b"{not json",
        "casatwin.telemetry",
        1,
        "k1",
    )


def test_locate_adds_segment_zone_and_projection(net):
    fixes = Drive(net, "TX-2", path_along(net, "Row 0"), duration_s=30).fixes()
    parsed = parse(kafka_batch([orjson.dumps(f) for f in fixes]), net.pack.bounds)
    batch = locate(parsed, net)
    assert batch.schema == FIX_SCHEMA
    table = batch.to_pydict()
    assert all(s >= 0 for s in table["segment"])
    assert {net.pack.seg_road[s] for s in table["segment"]} == {"Row 0"}
    assert 0 in table["zone"] and -1 in table["zone"]  # drove through the no-parking zone


def test_panes_fold_a_vehicles_fixes_on_a_segment_within_a_pane(net):
    """Two vehicles along Row 0 for 90 s (50 then 20 km/h): each pane row sums exactly the
    fixes of its segment, vehicle and minute; fixes off the network have no pane."""
    row0 = path_along(net, "Row 0")
    drives = [
        Drive(net, "TX-1", row0, speeds_kmh=[50.0] * 45 + [20.0], duration_s=90),
        Drive(net, "TX-2", row0, start_ts=T0 + 500, duration_s=90),
    ]
    fixes = [f for d in drives for f in d.fixes()]
    batch = locate(parse(kafka_batch([orjson.dumps(f) for f in fixes]), net.pack.bounds), net)
    off_road = batch.to_pydict()
    off_road["segment"][0] = -1  # as if the first fix matched no road
    folded = panes(pa.RecordBatch.from_pydict(off_road, schema=FIX_SCHEMA), 60_000)
    assert folded.schema == PANE_SCHEMA
    expected: dict[tuple[int, str, int], list[tuple[int, float]]] = {}
    for seg, vehicle, ts, speed in zip(
        off_road["segment"], off_road["vehicle_id"], off_road["ts"], off_road["speed_kmh"]
    ):
        if seg >= 0:
            expected.setdefault((seg, vehicle, ts // 60_000), []).append((ts, speed))
    got = folded.to_pydict()
    assert len(got["segment"]) == len(expected) < len(fixes) // 5
    for seg, vehicle, ts, n, total, low, high in zip(*got.values()):
        pane = expected[(seg, vehicle, ts // 60_000)]
        assert ts == max(t for t, _ in pane) and n == len(pane)
        speeds = [v for _, v in pane]
        assert (total, low, high) == pytest.approx((sum(speeds), min(speeds), max(speeds)))
    assert sum(got["fixes"]) == len(fixes) - 1


def test_no_fix_on_the_network_gives_no_pane(net):
    fixes = Drive(net, "TX-3", path_along(net, "Row 0"), duration_s=3).fixes()
    batch = locate(parse(kafka_batch([orjson.dumps(f) for f in fixes]), net.pack.bounds), net)
    table = batch.to_pydict()
    table["segment"] = [-1] * len(table["segment"])
    assert panes(pa.RecordBatch.from_pydict(table, schema=FIX_SCHEMA), 60_000).num_rows == 0


def test_police_units_are_not_a_sample_of_the_traffic(net):
    """A unit waiting at its station (0 km/h) next to a taxi at 50 km/h: the segment's panes
    are the taxi's alone."""
    row0 = path_along(net, "Row 0")
    taxi = Drive(net, "TX-4", row0, speeds_kmh=[50.0], duration_s=20).fixes()
    unit = Drive(net, "PU-1", row0, speeds_kmh=[0.0], duration_s=20).fixes()
    for fix in unit:
        fix["kind"] = "police"
    batch = locate(parse(kafka_batch([orjson.dumps(f) for f in taxi + unit]), net.pack.bounds), net)
    folded = panes(batch, 60_000).to_pydict()
    assert set(folded["vehicle_id"]) == {"TX-4"}
    assert sum(folded["fixes"]) == len(taxi)
