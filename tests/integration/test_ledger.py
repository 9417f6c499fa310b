"""The fines and points ledger in a real MariaDB: idempotence, replays, concurrency."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from casatwin.config import MariaDBSettings
from casatwin.devstack.servers import MariaDBServer
from casatwin.registry import db, loader, sheet
from casatwin.registry.ledger import InvalidInfraction, record, record_many
from casatwin.registry.lookup import lookup_vehicles
from casatwin.rules.engine import DAY_MS, OffenceFacts, decide, load_rule_book
from tests.conftest import query, scratch_database

pytestmark = pytest.mark.integration

BOOK = load_rule_book()
T0 = 1_780_000_000_000
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def ledger_db(mariadb: MariaDBServer) -> MariaDBSettings:
    settings = scratch_database(mariadb, "casatwin_t_ledger")
    loader.load(settings, 13_000, seed=52, as_of=dt.date(2025, 6, 1))
    return settings


@pytest.fixture
def conn(ledger_db: MariaDBSettings):
    c = db.connect(ledger_db)
    yield c
    c.close()


_taken: set[str] = set()


def fresh_driver(settings: MariaDBSettings, points: int) -> tuple[str, str]:
    """(taxi id, CIN) of a taxi driver of this test alone, with ``points`` points."""
    c = db.open_connection(settings)
    try:
        cursor = c.cursor()
        cursor.execute(
            "SELECT s.vehicle_id, s.cin FROM taxi_shifts s JOIN drivers d ON d.cin = s.cin"
            " WHERE d.status = 'valid' AND d.probation_end < '2025-01-01' ORDER BY s.cin"
        )
        for vehicle_id, cin in cursor.fetchall():
            if cin not in _taken:
                _taken.add(cin)
                cursor.execute("UPDATE drivers SET points = %s WHERE cin = %s", (points, cin))
                return vehicle_id, cin
    finally:
        c.close()
    raise AssertionError("no free driver left")


def infraction(vehicle_id: str, cin: str | None, kind: str = "red_light", **extra: Any) -> dict:
    n = next(_ids)
    return {
        "infraction_id": f"TEST-{kind}-{vehicle_id}-{n}",
        "type": kind,
        "event_ts": extra.pop("event_ts", T0 + n * 1000),
        "detected_ts": T0 + n * 1000 + 500,
        "lat": 33.59,
        "lon": -7.62,
        "intersection_id": "x1",
        "measured": extra.pop("measured", 0),
        "limit": extra.pop("limit", 0),
        "vehicle": {"vehicle_id": vehicle_id, "plate": "1-ب-6", "kind": "taxi_petit"},
        "driver": {"cin": cin} if cin else {},
        **extra,
    }


def decided(conn: db.Connection, inf: dict):
    """What the processor does: look the vehicle up, decide against its driver's history."""
    vehicle = lookup_vehicles(conn, [inf["vehicle"]["vehicle_id"]]).get(
        inf["vehicle"]["vehicle_id"]
    )
    history = vehicle.history() if vehicle else None
    return decide(OffenceFacts.from_infraction(inf), history, BOOK)


def test_record_writes_the_infraction_the_points_and_the_balance(ledger_db, conn):
    vehicle_id, cin = fresh_driver(ledger_db, 30)
    inf = infraction(vehicle_id, cin)
    outcome = record(conn, inf, decided(conn, inf))
    assert outcome.inserted and outcome.cin == cin
    assert (outcome.points_before, outcome.points_after, outcome.licence_status_after) == (
        30,
        26,
        "valid",
    )
    assert outcome.decision["class"] == 1 and outcome.decision["fine_mad"] == 700
    assert query(ledger_db, "SELECT points, status FROM drivers WHERE cin = %s", (cin,)) == [
        (26, "valid")
    ]
    assert query(
        ledger_db,
        "SELECT delta, balance_after, infraction_id FROM points_ledger WHERE cin = %s",
        (cin,),
    ) == [(-4, 26, inf["infraction_id"])]
    stored = query(
        ledger_db,
        "SELECT cin, offence_class, court FROM infractions WHERE infraction_id = %s",
        (inf["infraction_id"],),
    )
    assert stored == [(cin, 1, 0)]
    # The next lookup sees the offence: the repeat rule has what it needs.
    history = lookup_vehicles(conn, [vehicle_id])[vehicle_id].history()
    assert history.points == 26 and [o.event_ts for o in history.offences] == [inf["event_ts"]]
    # And so does the driver's file.
    text = sheet.render(sheet.find(conn, cin), today=dt.date(2026, 1, 1))
    assert "-4 → 26  valid     Franchissement d'un feu rouge" in text
    assert "red_light                class 1  700 MAD  -4 pts  1-ب-6" in text


def test_a_replay_writes_nothing_and_returns_the_original_decision(ledger_db, conn):
    vehicle_id, cin = fresh_driver(ledger_db, 10)
    inf = infraction(vehicle_id, cin, "speeding", measured=95, limit=60)
    first = record(conn, inf, decided(conn, inf))
    assert first.inserted and first.points_after == 6
    # Later, the driver is down to 2 points; the processor replays the old infraction with a
    # decision computed from today's history (annulment): the stored decision wins.
    query(ledger_db, "UPDATE drivers SET points = 2 WHERE cin = %s", (cin,))
    again = record(conn, inf, decided(conn, inf))
    assert not again.inserted
    assert again.decision == first.decision and again.points_after == 6
    assert not again.decision["court"]
    assert query(ledger_db, "SELECT COUNT(*) FROM points_ledger WHERE cin = %s", (cin,)) == [(1,)]
    assert query(ledger_db, "SELECT points FROM drivers WHERE cin = %s", (cin,)) == [(2,)]
    # The same infraction twice in one batch: one row, the same outcome twice.
    inf2 = infraction(vehicle_id, cin, "illegal_parking", parking_kind="other")
    d2 = decided(conn, inf2)
    a, b = record_many(conn, [(inf2, d2), (inf2, d2)])
    assert a.inserted and not b.inserted and a.decision == b.decision


def concurrently(
    n: int, settings: MariaDBSettings, work: Callable[[db.Connection, int], Any]
) -> list:
    """Run ``work(conn, i)`` in ``n`` threads, each with its own connection, released at once."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        c = db.connect(settings)
        try:
            barrier.wait(timeout=30)
            results[i] = work(c, i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_two_writers_of_the_same_infraction_make_one_row(ledger_db, conn):
    for _ in range(5):  # several rounds: the race is real, not scheduled
        vehicle_id, cin = fresh_driver(ledger_db, 30)
        inf = infraction(vehicle_id, cin)
        decision = decided(conn, inf)
        outcomes = concurrently(4, ledger_db, lambda c, i, inf=inf, d=decision: record(c, inf, d))
        assert sorted(o.inserted for o in outcomes) == [False, False, False, True]
        assert len({str(o.decision) for o in outcomes}) == 1
        assert query(
            ledger_db,
            "SELECT COUNT(*) FROM infractions WHERE infraction_id = %s",
            (inf["infraction_id"],),
        ) == [(1,)]
        assert query(ledger_db, "SELECT points FROM drivers WHERE cin = %s", (cin,)) == [(26,)]


def test_infractions_of_one_driver_at_once_all_count_and_never_go_below_zero(ledger_db, conn):
    vehicle_id, cin = fresh_driver(ledger_db, 10)
    # Six red lights at once, each decided from the same snapshot (10 points, no history).
    items = [infraction(vehicle_id, cin, event_ts=T0 + 10 * DAY_MS + i) for i in range(6)]
    decisions = [decided(conn, inf) for inf in items]
    assert all(d.points_after == 6 and not d.court for d in decisions)
    outcomes = concurrently(6, ledger_db, lambda c, i: record(c, items[i], decisions[i]))
    assert all(o.inserted for o in outcomes)
    assert query(ledger_db, "SELECT points, status FROM drivers WHERE cin = %s", (cin,)) == [
        (0, "annulled")
    ]
    ledger = query(
        ledger_db,
        "SELECT delta, balance_after FROM points_ledger WHERE cin = %s ORDER BY entry_id",
        (cin,),
    )
    assert [b for _, b in ledger] == [6, 2, 0]  # 10 → 6 → 2 → 0, then nothing left to remove
    assert sum(-d for d, _ in ledger) == 10
    # Decided again under the lock, in the order they got it: the second is a repeat if the
    # first happened before it; the third annuls the licence and refers the case.
    by_balance = sorted(range(6), key=lambda i: -(outcomes[i].points_before or 0))
    first, second, third = (outcomes[i] for i in by_balance[:3])
    repeat = items[by_balance[0]]["event_ts"] < items[by_balance[1]]["event_ts"]
    assert ("repeat" in second.decision["court_reasons"]) is repeat
    assert first.decision["court_reasons"] == []
    third = third.decision
    assert (
        third["licence_status_after"] == "annulled" and "points_exhausted" in third["court_reasons"]
    )
    assert min(o.points_after for o in outcomes) == 0


def test_a_batch_decides_in_event_order(ledger_db, conn):
    vehicle_id, cin = fresh_driver(ledger_db, 30)
    later = infraction(
        vehicle_id, cin, "speeding", measured=100, limit=60, event_ts=T0 + 20 * DAY_MS
    )
    earlier = infraction(vehicle_id, cin, event_ts=T0 + 20 * DAY_MS - 60_000)
    outcomes = record_many(conn, [(later, decided(conn, later)), (earlier, decided(conn, earlier))])
    assert [o.inserted for o in outcomes] == [True, True]
    first, second = outcomes[1], outcomes[0]  # in event order: the red light, then speeding
    assert (first.points_after, first.decision["court"]) == (26, False)
    assert second.decision["court_reasons"] == ["repeat"] and second.points_after == 22


def test_an_unknown_vehicle_is_recorded_without_a_driver(ledger_db, conn):
    inf = infraction("DEVICE-42", None, "speeding", measured=100, limit=60)
    d = decided(conn, inf)
    outcome = record(conn, inf, d)
    assert outcome.inserted and outcome.cin is None and outcome.points_after is None
    assert (
        outcome.decision["points_removed"] == 0
        and "non identifié" in outcome.decision["legal_basis"]
    )
    # A driver the registry does not know is an unknown driver too.
    ghost = infraction("DEVICE-43", "ZZ999999", "speeding", measured=100, limit=60)
    assert record(conn, ghost, decided(conn, ghost)).cin is None
    assert query(
        ledger_db, "SELECT cin FROM infractions WHERE infraction_id = %s", (ghost["infraction_id"],)
    ) == [(None,)]


def test_a_bad_infraction_fails_the_whole_batch_and_writes_nothing(ledger_db, conn):
    vehicle_id, cin = fresh_driver(ledger_db, 30)
    good = infraction(vehicle_id, cin)
    bad = infraction(vehicle_id, cin)
    del bad["lat"]
    with pytest.raises(InvalidInfraction, match="'lat' is missing"):
        record_many(conn, [(good, decided(conn, good)), (bad, decided(conn, bad))])
    assert query(ledger_db, "SELECT COUNT(*) FROM infractions WHERE cin = %s", (cin,)) == [(0,)]
    assert query(ledger_db, "SELECT points FROM drivers WHERE cin = %s", (cin,)) == [(30,)]


def test_the_dispatch_table_allows_one_open_assignment_per_unit(mariadb: MariaDBServer):
    settings = scratch_database(mariadb, "casatwin_t_dispatch")
    loader.load(
        settings, 13_000, seed=52, as_of=dt.date(2025, 6, 1),
        police_units=[loader.PoliceUnit("PU-1", "ps-1", "Station 1", 33.59, -7.62, "n1")],
    )  # fmt: skip
    c = db.open_connection(settings)
    cursor = c.cursor()
    insert = (
        "INSERT INTO dispatch_assignments (dispatch_id, infraction_id, unit_id, status, created_ms)"
        " VALUES (%s, %s, %s, %s, 0)"
    )
    cursor.execute(insert, ("D1", "I1", "PU-1", "assigned"))
    with pytest.raises(db.Error) as raised:
        cursor.execute(insert, ("D2", "I2", "PU-1", "en_route"))
    assert db.error_code(raised.value) == db.ER_DUP_ENTRY
    cursor.execute(
        "UPDATE dispatch_assignments SET status = 'closed', closed_ms = 5 WHERE dispatch_id = 'D1'"
    )
    cursor.execute(insert, ("D2", "I2", "PU-1", "assigned"))  # free again
    cursor.execute(insert, ("D3", "I3", None, "queued"))  # waiting for a unit
    c.close()
