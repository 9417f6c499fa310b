"""The TMDD document: rendering, hardened parsing, and normalisation into highway readings."""

import tracemalloc
from datetime import UTC, datetime

import pytest

from casatwin.bus import messages, topics
from casatwin.gateway import faults, tmdd
from casatwin.gateway.normalise import InvalidReport, normalise
from casatwin.gateway.tmdd import DocumentError, StationValues

TS = int(datetime(2026, 3, 9, 7, 45, 20, tzinfo=UTC).timestamp() * 1000)
STATIONS = {"hw-e1", "hw-w1"}
LIMIT = 1_000_000
SKEW_MS = 300_000


def doc(*values: StationValues) -> bytes:
    return tmdd.render(values or [StationValues("hw-e1", TS, 72.5, 31, 18.4, 60)])


def reading_of(raw: bytes, now_ms: int = TS) -> dict:
    (report,) = tmdd.parse(raw, LIMIT)
    return dict(normalise(report, STATIONS, now_ms, SKEW_MS))


def test_rendered_document_has_the_tmdd_shape():
    text = doc().decode()
    assert text.startswith("<?xml version='1.0' encoding='UTF-8'?>")
    assert '<tmdd:detectorDataMsg xmlns:tmdd="http://www.tmdd.org/3/messages">' in text
    for element in (
        "<detector-data-item>",
        "<organization-id>casablanca-tmc</organization-id>",
        "<detector-list>",
        "<detector-data-detail>",
        "<station-id>hw-e1</station-id>",
        "<date>20260309</date>",
        "<time>084520</time>",  # local time, one hour ahead of UTC
        "<offset>+0100</offset>",
        "<vehicle-count>31</vehicle-count>",
        "<vehicle-occupancy>18.4</vehicle-occupancy>",
        "<vehicle-speed>72.5</vehicle-speed>",
    ):
        assert element in text


def test_render_then_parse_round_trips_to_the_contract():
    reading = reading_of(doc())
    assert reading == {
        "station_id": "hw-e1",
        "ts": TS,
        "speed_kmh": 72.5,
        "volume": 31,
        "occupancy_pct": 18.4,
    }
    messages.check(topics.SENSORS_HIGHWAY, reading)


def test_every_station_of_a_document_is_read():
    raw = doc(
        StationValues("hw-e1", TS, 70.0, 30, 10.0),
        StationValues("hw-w1", TS, 40.0, 50, 35.0),
    )
    assert [r.station_id for r in tmdd.parse(raw, LIMIT)] == ["hw-e1", "hw-w1"]


@pytest.mark.parametrize(
    ("date", "time", "offset", "expected"),
    [
        ("20260309", "084520", "+0100", TS),
        ("20260309", "074520", None, TS),  # no offset: UTC
        ("20260309", "024520", "-0500", TS),
        ("20260309", "074520.250", "+0000", TS + 250),
    ],
)
def test_timestamps_honour_the_utc_offset(date, time, offset, expected):
    assert tmdd.parse_timestamp(date, time, offset) == expected


def test_a_document_with_namespaced_children_is_read_too():
    raw = doc().replace(b"<tmdd:detectorDataMsg xmlns:tmdd=", b"<detectorDataMsg xmlns=")
    raw = raw.replace(b"</tmdd:detectorDataMsg>", b"</detectorDataMsg>")
    assert reading_of(raw)["station_id"] == "hw-e1"


# -- documents that cannot be used --------------------------------------------------------


def test_malformed_xml_is_refused_with_the_parser_error():
    with pytest.raises(DocumentError, match=r"malformed XML: not well-formed \(invalid token\)"):
        tmdd.parse(faults.malformed(doc()), LIMIT)


def test_a_truncated_document_is_recognised_as_such():
    with pytest.raises(DocumentError, match="ends too early"):
        tmdd.parse(faults.truncated(doc()), LIMIT)


def test_billion_laughs_is_refused_without_expanding_anything():
    tracemalloc.start()
    try:
        with pytest.raises(DocumentError, match="declares a DTD"):
            tmdd.parse(faults.BILLION_LAUGHS, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # expanded, it would be ~3 GB


def test_external_entities_are_refused():
    raw = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<detectorDataMsg>&x;</detectorDataMsg>"
    )
    with pytest.raises(DocumentError, match="DTD"):
        tmdd.parse(raw, LIMIT)


def test_oversized_empty_and_foreign_documents_are_refused():
    with pytest.raises(DocumentError, match="over the 100-byte limit"):
        tmdd.parse(doc(), 100)
    with pytest.raises(DocumentError, match="empty document"):
        tmdd.parse(b"  \n", LIMIT)
    with pytest.raises(DocumentError, match=r"root element is <html>"):
        tmdd.parse(b"<html><body>maintenance</body></html>", LIMIT)


# -- reports that cannot become readings --------------------------------------------------


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (StationValues("hw-e1", TS, -12.0, 31, 18.4), "'speed_kmh'=-12.0 is below 0"),
        (StationValues("hw-e1", TS, 70.0, 31, 130.0), "'occupancy_pct'=130.0 is above 100"),
        (StationValues("hw-ghost", TS, 70.0, 31, 10.0), "unknown station 'hw-ghost'"),
        (StationValues("hw-e1", TS, 70.0, -3, 10.0), "'volume'=-3 is below 0"),
        (StationValues("hw-e1", TS, float("nan"), 3, 10.0), "not a finite number"),
    ],
)
def test_bad_values_are_refused_with_a_reason(values, reason):
    with pytest.raises(InvalidReport, match=reason.replace("(", r"\(").replace("[", r"\[")):
        reading_of(doc(values))


def test_missing_and_garbled_fields_are_refused_with_a_reason():
    good = doc()
    cases = {
        good.replace(b"<vehicle-speed>72.5</vehicle-speed>", b""): "<vehicle-speed> is missing",
        good.replace(b">31<", b">many<"): "<vehicle-count> 'many' is not a number",
        good.replace(b">31<", b">31.5<"): "<vehicle-count> '31.5' is not a whole number",
        good.replace(b"<station-id>hw-e1</station-id>", b""): "no <station-id>",
        good.replace(b"<date>20260309</date>", b""): "lacks <date> or <time>",
        good.replace(b"20260309", b"2026-03-09"): "is not YYYYMMDD HHMMSS",
        good.replace(b"+0100", b"CET"): "UTC offset 'CET' is not",
    }
    for raw, reason in cases.items():
        with pytest.raises(InvalidReport, match=reason.replace("(", r"\(")):
            reading_of(raw)


def test_readings_from_the_future_are_refused_but_late_ones_pass():
    with pytest.raises(InvalidReport, match="in the future"):
        reading_of(doc(), now_ms=TS - SKEW_MS - 1000)
    assert reading_of(doc(), now_ms=TS + 86_400_000)["ts"] == TS
