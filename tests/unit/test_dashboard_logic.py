"""Pure pieces of the dashboard: frames, the live reducer, masking, API parameters, login."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from casatwin_dashboard.browser import decode_png
from casatwin_dashboard.history import (
    ApiError,
    congestion_query,
    decode_cursor,
    encode_cursor,
    in_lifecycle_order,
    infraction_query,
)
from casatwin_dashboard.live import LiveState
from casatwin_dashboard.operators import (
    LoginLimiter,
    SessionStore,
    credential_stamp,
    hash_password,
    verify_password,
)
from casatwin_dashboard.positions import (
    FLAG_SPEEDING,
    PositionTable,
    TelemetryBatch,
    decode_frame,
)
from casatwin_dashboard.privacy import driver_reference, operator_infraction, public_infraction
from tests.dashboard_support import sample_infraction


def batch(ids, lat, speed=50.0):
    n = len(ids)
    return TelemetryBatch(
        list(ids),
        ["taxi_petit"] * n,
        np.array(lat, float),
        np.full(n, -7.6),
        np.full(n, speed),
        np.full(n, 90.0),
    )


def test_frames_carry_changes_since_a_tick_latest_position_wins():
    table = PositionTable(ttl_s=60, capacity=2)  # small: forces the arrays to grow
    table.apply(batch(["a", "b", "c"], [33.1, 33.2, 33.3]), now_s=100)
    new, gone = table.advance(100)
    assert new == [[0, "a", 0], [1, "b", 0], [2, "c", 0]] and gone == []
    table.apply(batch(["b", "b"], [33.25, 33.26]), now_s=101)  # two fixes: the last one wins
    table.flag("b", speeding=True, until_s=200)
    table.advance(101)
    latest = decode_frame(table.frame(since=1, frame_ts_ms=101_000))
    assert latest.index.tolist() == [1]
    assert latest.lat[0] == pytest.approx(33.26, abs=1e-5)
    assert latest.flags[0] == FLAG_SPEEDING and latest.frame_ts_ms == 101_000
    everything = decode_frame(table.frame(since=-1, frame_ts_ms=101_000))
    assert everything.index.tolist() == [0, 1, 2]
    assert table.frame(since=1, frame_ts_ms=0) is table.frame(since=1, frame_ts_ms=0)  # once
    _, gone = table.advance(200)  # nobody heard from for 60 s
    assert gone == [0, 1, 2] and table.count_alive() == 0


def test_live_state_dedupes_tracks_units_and_congestion():
    state = LiveState.with_units({"PU-1": "Anfa"}, recent_max=2, history_minutes=5)
    first = sample_infraction(event_ts=600_000)
    assert len(state.add_infractions([first, first])) == 1  # a replayed copy is ignored
    state.add_infractions([sample_infraction(n, event_ts=660_000) for n in range(2)])
    assert len(state.recent_infractions()) == 2
    dispatch = {"dispatch_id": "d", "infraction_id": "i", "unit_id": "PU-1", "ts": 10}
    state.add_dispatch([{**dispatch, "status": "en_route", "route": [[1, 2]]}])
    assert state.units_available() == 0 and state.units["PU-1"]["route"] == [[1, 2]]
    state.add_dispatch([{**dispatch, "status": "assigned", "ts": 5}])  # late, older step
    assert state.units["PU-1"]["status"] == "en_route"
    state.add_dispatch([{**dispatch, "status": "closed", "ts": 20}])
    assert state.units_available() == 1 and state.units["PU-1"]["route"] == []
    window = {"key": "s1", "scope": "segment", "window_start": 540_000, "window_end": 600_000,
              "count": 3, "avg_speed_kmh": 12.0, "min_speed_kmh": 1.0, "max_speed_kmh": 30.0,
              "level": "severe", "anomaly": True}  # fmt: skip
    state.add_congestion([window, {**window, "window_end": 500_000, "level": "clear"}])
    assert state.congested_count() == 1
    history = state.history(now_ms=780_000)
    assert history["infractions"] == [0, 1, 2, 0, 0]  # minutes 9..13
    assert history["congested"] == [0, 1, 1, 1, 1]  # a level carries forward


def test_public_views_identify_nobody_by_allow_list():
    message = sample_infraction(vehicle={"vehicle_id": "PV-0000042", "plate": "12345-A-6",
                                         "kind": "private", "colour": "red"})  # fmt: skip
    message["owner_phone"] = "0661234567"  # a field nobody declared public
    message["decision"]["court_reasons"] = ["licence annulled: no points left"]
    public = public_infraction(message)
    assert public["driver"] == {"on_record": True}  # not even the pseudonym
    assert public["vehicle"] == {"kind": "private", "plate": "12•••"}
    assert "vehicle_id" not in public and "owner_phone" not in public
    assert public["decision"]["fine_mad"] == 700 and public["decision"]["points"] == 4
    for private in ("points_before", "points_after", "licence_status_after", "court_reasons"):
        assert private not in public["decision"]
    assert public["identity"] == "masked" and public["district"] == "Maârif"
    assert message["vehicle"]["plate"] == "12345-A-6"  # the original is untouched
    unit = {"vehicle_id": "PU-SW-1", "plate": "1-ش-6", "kind": "police"}
    police = public_infraction(sample_infraction(vehicle=unit))
    assert police["vehicle"] == {"kind": "police", "vehicle_id": "PU-SW-1", "plate": "1-ش-6"}
    unknown = public_infraction(sample_infraction(driver={}))
    assert unknown["driver"] == {"on_record": False}


def test_operator_view_adds_the_ledger_identity():
    message = sample_infraction()
    shown = operator_infraction(message, {"cin": "BE123456", "name": "Karim Bennani"}, "Karim B")
    assert shown["driver"] == {"ref": message["driver"]["ref"], "cin": "BE123456",
                               "name": "Karim Bennani"}  # fmt: skip
    assert shown["vehicle"]["owner"] == "Karim B" and shown["identity"] == "shown"
    assert shown["decision"]["points_after"] == 26
    assert driver_reference(message) == message["driver"]["ref"]


def test_infraction_query_and_cursor():
    query = infraction_query({"type": "speeding", "class": "1,2", "limit": "10"}, now_ms=0)
    assert query.limit == 10
    assert {"type": {"$in": ["speeding"]}} in query.filter["$and"]
    assert decode_cursor(encode_cursor(123, "inf-é")) == (123, "inf-é")
    with pytest.raises(ApiError) as error:
        infraction_query({"to": "2026-13-01"}, now_ms=0)
    assert error.value.status == 400 and "to='2026-13-01' is not a time" in error.value.message


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "²"},  # a digit to str.isdigit, not to int()
        {"limit": "0"},
        {"limit": "-5"},
        {"limit": "1e3"},
        {"limit": ""},
        {"cursor": "NQ"},  # base64 of the JSON number 5: decodes, but is no cursor
        {"cursor": "WzEsMiwzXQ"},  # [1,2,3]
        {"cursor": "WzFlMzAwLCJ4Il0"},  # [1e300,"x"]
        {"cursor": "Wzk5OTk5OTk5OTk5OTk5OTk5OTk5OSwieCJd"},  # [99999999999999999999,"x"]
        {"cursor": "%%%"},
        {"cursor": "١٢"},
        {"from": "999999999999999"},  # 15 digits: after the year 3000
        {"from": "9999-12-31T23:59:59-23:59"},
        {"from": "0001-01-01T00:00:00+14:00"},
        {"to": "2026-13-01"},
        {"from": "2020-01-01", "to": "2026-01-01"},  # longer than the cap
        {"from": "2026-02-01", "to": "2026-01-01"},
    ],
)
def test_malformed_history_parameters_get_a_400_with_a_hint(params):
    with pytest.raises(ApiError) as error:
        infraction_query(params, now_ms=1_767_225_600_000)
    assert error.value.status == 400 and error.value.message and error.value.hint


def test_time_ranges_are_capped():
    now = 1_767_225_600_000
    day = 86_400_000
    assert infraction_query({"from": str(now - 366 * day)}, now).filter["event_ts"]
    with pytest.raises(ApiError, match="longer than 366 days"):
        infraction_query({"from": str(now - 367 * day)}, now)
    assert congestion_query("s1", {"from": str(now - 31 * day)}, now).filter
    with pytest.raises(ApiError, match="longer than 31 days"):
        congestion_query("s1", {"from": str(now - 40 * day), "to": str(now)}, now)


def test_timeline_follows_the_lifecycle_whatever_the_clocks_say():
    # The dispatcher's clock 300 ms ahead of the simulator's: the unit's en-route report
    # carries an earlier ts than the order it answers.
    events = [
        {"status": "closed", "ts": 9_000},
        {"status": "en_route", "ts": 1_700},
        {"status": "assigned", "ts": 2_000},
        {"status": "on_scene", "ts": 5_000},
        {"status": "queued", "ts": 1_000},
    ]
    statuses = [e["status"] for e in in_lifecycle_order(events)]
    assert statuses == ["queued", "assigned", "en_route", "on_scene", "closed"]


def test_login_limiter_and_sessions():
    limiter = LoginLimiter(max_failures=2, window_s=60)
    keys = ["address:1.2.3.4", "name:amina"]
    assert limiter.reserve(keys, 0) == 0
    assert limiter.retry_after(keys, 1) == 0
    # Attempts in flight count: the third is refused before the first two are judged.
    assert limiter.reserve(keys, 1) == 0
    assert limiter.reserve(keys, 1.5) == pytest.approx(58.5)
    assert limiter.retry_after(["name:amina"], 2) == pytest.approx(58)
    # One that was never judged is given back; a success forgives them all.
    limiter.release(keys, 1)
    assert limiter.retry_after(keys, 2) == 0 and limiter.reserve(keys, 2) == 0
    assert limiter.retry_after(keys, 3) > 0
    limiter.succeeded(keys)
    assert limiter.retry_after(keys, 3) == 0
    limiter.reserve(keys, 4)
    limiter.reserve(keys, 5)
    assert limiter.retry_after(keys, 6) > 0
    assert limiter.retry_after(keys, 65) == 0  # the window slid past both failures
    sessions = SessionStore(ttl_s=10, idle_s=4)
    token = sessions.create("amina", "stamp", now=0)
    for now in (3, 6, 9):  # used every 3 s: never idle for 4
        assert sessions.session(token, now).operator == "amina"
    assert sessions.session(token, 10) is None  # the lifetime is over, however busy
    assert sessions.session("forged", 5) is None


def test_a_session_left_idle_ends_and_stays_ended():
    sessions = SessionStore(ttl_s=100, idle_s=4)
    token = sessions.create("amina", "stamp", now=0)
    assert sessions.session(token, 3.9) is not None
    assert sessions.session(token, 7.9) is None  # 4 s after its last use
    assert sessions.session(token, 8) is None  # forgotten, not revived


def test_a_new_password_gives_a_new_credential_stamp():
    first, second = (
        hash_password("a long password", n=2**10),
        hash_password("a long password", n=2**10),
    )
    assert credential_stamp(first) != credential_stamp(second)
    assert credential_stamp(first) == credential_stamp(first) and first not in credential_stamp(
        first
    )


def test_password_hashes_are_salted_scrypt():
    first, second = (
        hash_password("a long password", n=2**10),
        hash_password("a long password", n=2**10),
    )
    assert first != second and first.startswith("scrypt$1024$")
    assert verify_password("a long password", first)
    assert not verify_password("a long passworD", first)
    assert not verify_password("a long password", "md5$whatever")


def png(pixels: np.ndarray, filters: list[int]) -> bytes:
    """A PNG with the given filter type per row (to check the decoder's unfiltering)."""
    h, w, c = pixels.shape
    rows = []
    prev = np.zeros(w * c, int)
    for y in range(h):
        line = pixels[y].reshape(-1).astype(int)
        left = np.concatenate([np.zeros(c, int), line[:-c]])
        up_left = np.concatenate([np.zeros(c, int), prev[:-c]])
        if filters[y] == 1:
            encoded = line - left
        elif filters[y] == 2:
            encoded = line - prev
        elif filters[y] == 3:
            encoded = line - (left + prev) // 2
        elif filters[y] == 4:
            p = left + prev - up_left
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
            encoded = line - np.where(
                (pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left)
            )
        else:
            encoded = line
        rows.append(bytes([filters[y]]) + bytes((encoded & 0xFF).astype(np.uint8)))
        prev = line

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))  # fmt: skip


def test_png_decoder_undoes_every_filter():
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    assert (decode_png(png(pixels, [0, 1, 2, 3, 4])) == pixels).all()


def test_districts_are_matched_as_people_type_them():
    from casatwin.city.load import load
    from casatwin_dashboard.app import canonical_district

    casablanca = load("casablanca")
    assert canonical_district({"district": "maarif"}, casablanca) == {"district": "Maârif"}
    assert canonical_district({"type": "speeding"}, casablanca) == {"type": "speeding"}
    with pytest.raises(ApiError) as error:
        canonical_district({"district": "Gotham"}, casablanca)
    assert "is not a district of" in error.value.message and "Anfa" in error.value.hint


def test_make_run_prints_the_dashboard_urls():
    from casatwin.config import Settings
    from casatwin.devstack.runner import banner

    text = banner(Settings(), {"dashboard": "casatwin dashboard"})
    assert "http://127.0.0.1:8080/" in text and "http://127.0.0.1:8080/kiosk" in text
