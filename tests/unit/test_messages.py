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
