"""The fake traffic API's pure parts: detector values and the fault switch."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from casatwin.bus import messages, topics
from casatwin.city import load, synthetic
from casatwin.gateway import faults, tmdd, traffic
from casatwin.gateway.faults import FaultMode, FaultSwitch


@pytest.fixture(scope="module")
def stations():
    return traffic.profiles(load.from_dict(synthetic.grid(3, 3, motorway=True)), seed=7)


def at(hour: int, minute: int = 0, day: int = 14) -> float:
    """Epoch seconds of an April 2026 day in Casablanca (UTC+1); the 14th is a Tuesday."""
    return datetime(2026, 4, day, hour, minute, tzinfo=ZoneInfo("Africa/Casablanca")).timestamp()


def mean(values):
    return sum(values) / len(values)


def test_profiles_follow_the_pack(stations):
    assert [p.station_id for p in stations] == ["hw-e1", "hw-e2", "hw-w1", "hw-w2"]
    assert all(p.free_flow_kmh == 100.0 and p.lanes == 3 for p in stations)


def test_rush_hour_is_slower_busier_and_more_occupied_than_the_night(stations):
    rush = traffic.snapshot(stations, at(8, 15), 20.0, seed=7)
    night = traffic.snapshot(stations, at(3), 20.0, seed=7)
    assert mean([s.speed_kmh for s in rush]) < 0.6 * mean([s.speed_kmh for s in night])
    assert mean([s.occupancy_pct for s in rush]) > 3 * mean([s.occupancy_pct for s in night])
    assert mean([s.volume for s in rush]) > 2 * mean([s.volume for s in night])


def test_weekend_rush_is_lighter(stations):
    weekday = traffic.snapshot(stations, at(18, 15, day=14), 20.0, seed=7)
    sunday = traffic.snapshot(stations, at(18, 15, day=19), 20.0, seed=7)
    assert mean([s.speed_kmh for s in sunday]) > mean([s.speed_kmh for s in weekday])


def test_values_are_deterministic_under_a_seed_and_vary_with_it(stations):
    now = at(12, 0)
    assert traffic.snapshot(stations, now, 20.0, 7) == traffic.snapshot(stations, now, 20.0, 7)
    assert traffic.snapshot(stations, now, 20.0, 7) != traffic.snapshot(stations, now, 20.0, 8)


def test_readings_are_stamped_at_the_end_of_the_last_complete_period(stations):
    values = traffic.snapshot(stations, at(12, 0) + 47.3, 20.0, seed=7)
    assert {s.ts_ms for s in values} == {int((at(12, 0) + 40) * 1000)}
    assert {s.utc_offset_min for s in values} == {60}


def test_a_whole_day_of_values_fits_the_contract(stations):
    for minute in range(0, 24 * 60, 7):
        for s in traffic.snapshot(stations, at(0) + minute * 60, 20.0, seed=3):
            messages.check(
                topics.SENSORS_HIGHWAY,
                {
                    "station_id": s.station_id,
                    "ts": s.ts_ms,
                    "speed_kmh": s.speed_kmh,
                    "volume": s.volume,
                    "occupancy_pct": s.occupancy_pct,
                },
            )


def test_fault_with_a_count_recovers_after_that_many_requests():
    switch = FaultSwitch()
    switch.set(FaultMode.HTTP500, count=2)
    assert [switch.next_request() for _ in range(4)] == [
        FaultMode.HTTP500,
        FaultMode.HTTP500,
        FaultMode.NONE,
        FaultMode.NONE,
    ]


def test_fault_without_a_count_lasts_until_switched():
    switch = FaultSwitch()
    switch.set(FaultMode.TIMEOUT)
    assert {switch.next_request() for _ in range(50)} == {FaultMode.TIMEOUT}
    switch.set(FaultMode.NONE)
    assert switch.next_request() is FaultMode.NONE


def test_fault_modes_parse_forgivingly_and_refuse_unknown_names():
    assert faults.parse_mode("Billion-Laughs") is FaultMode.BILLION_LAUGHS
    with pytest.raises(ValueError, match="choose one of: none, slow, http500"):
        faults.parse_mode("explode")
    assert set(faults.DESCRIPTIONS) == set(FaultMode)


def test_bad_values_break_two_stations_and_add_an_unknown_one(stations):
    good = traffic.snapshot(stations, at(9), 20.0, seed=7)
    bad = faults.bad_values(good)
    assert bad[0].speed_kmh < 0
    assert bad[1].occupancy_pct > 100
    assert bad[2:-1] == good[2:]
    assert bad[-1].station_id == faults.UNKNOWN_STATION
    assert tmdd.parse(tmdd.render(bad), 10**6)[-1].station_id == faults.UNKNOWN_STATION


def test_the_default_city_feeds_its_motorway_stations():
    from casatwin.city.load import load_city
    from casatwin.config import Settings

    pack = load_city(Settings().city)  # what `casatwin gateway fake-api` serves by default
    served = traffic.snapshot(traffic.profiles(pack, seed=7), at(8, 15), 20.0, seed=7)
    assert [s.station_id for s in served] == [h.id for h in pack.highway_stations]
    assert len(served) >= 6
    parsed = tmdd.parse(tmdd.render(served), 10**6)
    assert {r.station_id for r in parsed} == {h.id for h in pack.highway_stations}
