import orjson
import pytest

from casatwin.bus import messages, topics
from casatwin.bus.dlq import dead_letter, payload

GOOD_FIX = {
    "vehicle_id": "TX-00001",
    "kind": "taxi_petit",
    "ts": 1_790_000_000_000,
    "lat": 33.59,
    "lon": -7.62,
    "speed_kmh": 42.5,
    "heading_deg": 180.0,
    "source": "sim",
}


def test_good_telemetry_decodes():
    assert messages.decode(topics.TELEMETRY, orjson.dumps(GOOD_FIX)) == GOOD_FIX


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lat": None}, "missing field 'lat'"),
        ({"lat": "33.5"}, "field 'lat' should be an integer or a number, got a string"),
        ({"speed_kmh": -3}, "field 'speed_kmh'=-3 is below 0"),
        ({"heading_deg": 400}, "field 'heading_deg'=400 is above 360"),
        ({"kind": "bus"}, "field 'kind'='bus' is not one of"),
        ({"ts": 1.5}, "field 'ts' should be an integer"),
        ({"ts": True}, "field 'ts' should be an integer, got true/false"),
        ({"speed_kmh": float("nan")}, "not a finite number"),
    ],
)
def test_bad_telemetry_names_the_field(change, reason):
    fix = {**GOOD_FIX, **change}
    if change.get("lat", 0) is None:
        del fix["lat"]
    with pytest.raises(messages.InvalidMessage) as error:
        messages.check(topics.TELEMETRY, fix)
    assert reason in str(error.value)


BAD_FIXES = [
    {**GOOD_FIX, "lat": "33.5"},
    {**GOOD_FIX, "lon": "−7.6"},
    {**GOOD_FIX, "speed_kmh": -3},
    {**GOOD_FIX, "heading_deg": 400},
    {**GOOD_FIX, "kind": "bus"},
    {**GOOD_FIX, "ts": 1.5},
    {**GOOD_FIX, "ts": True},
    {**GOOD_FIX, "ts": 10**400},
    {**GOOD_FIX, "speed_kmh": True},
    {**GOOD_FIX, "source": None},
    {k: v for k, v in GOOD_FIX.items() if k != "lat"},
    [GOOD_FIX],
]


@pytest.mark.parametrize("bad", BAD_FIXES, ids=range(len(BAD_FIXES)))
def test_check_all_refuses_a_batch_exactly_when_check_refuses_one(bad):
    good = [GOOD_FIX, {**GOOD_FIX, "lat": 33, "source": "device"}]
    assert messages.check_all(topics.TELEMETRY, good)["lat"] == [33.59, 33]
    with pytest.raises(messages.InvalidMessage):
        messages.check(topics.TELEMETRY, bad)
    assert messages.check_all(topics.TELEMETRY, [*good, bad]) is None


def test_check_all_allows_absent_optional_fields_and_checks_present_ones():
    window = {"scope": "segment", "key": "S1", "window_start": 0, "window_end": 300_000,
              "count": 3, "avg_speed_kmh": 13.0, "min_speed_kmh": 6, "max_speed_kmh": 18,
              "level": "severe", "anomaly": False}  # fmt: skip
    columns = messages.check_all(topics.CONGESTION, [window, {**window, "hour": 7}])
    assert columns is not None and columns["hour"] == [None, 7]
    assert messages.check_all(topics.CONGESTION, [window, {**window, "hour": 24}]) is None


def test_decode_many_gives_columns_and_the_reason_for_each_refused_value():
    raws = [orjson.dumps(GOOD_FIX), b"{oops", None, orjson.dumps({**GOOD_FIX, "ts": 1.5}),
            orjson.dumps({**GOOD_FIX, "vehicle_id": "TX-00002"})]  # fmt: skip
    decoded = messages.decode_many(topics.TELEMETRY, raws)
    assert decoded.positions == [0, 4] and len(decoded) == 2
    assert decoded.columns["vehicle_id"] == ["TX-00001", "TX-00002"]
    assert sorted(decoded.reasons) == [1, 2, 3]
    assert decoded.reasons[1].startswith("not valid JSON")
    assert decoded.reasons[2] == "empty message (no value)"
    assert "'ts' should be an integer" in decoded.reasons[3]
    everything_good = messages.decode_many(topics.TELEMETRY, [raws[0], raws[4]])
    assert everything_good.positions == [0, 1] and not everything_good.reasons


def test_not_json_and_not_object():
    with pytest.raises(messages.InvalidMessage, match="not valid JSON"):
        messages.decode(topics.TELEMETRY, b"{oops")
    with pytest.raises(messages.InvalidMessage, match="expected a JSON object, got list"):
        messages.decode(topics.TELEMETRY, b"[1, 2]")


def test_every_topic_with_a_contract_exists():
    names = {t.name for t in topics.TOPICS}
    assert set(messages.CONTRACTS) <= names


def test_dead_letter_keeps_the_raw_bytes_and_the_reason():
    raw = b"\x00\xffnot json"
    letter = dead_letter(
        raw,
        "not valid JSON",
        "parse",
        topic=topics.TELEMETRY,
        partition=2,
        offset=17,
        key="TX-1",
        now_ms=5,
    )
    assert payload(letter) == raw
    assert letter == {
        **letter,
        "error": "not valid JSON",
        "stage": "parse",
        "partition": 2,
        "offset": 17,
        "ts": 5,
    }
