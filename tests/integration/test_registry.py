"""The registry in a real MariaDB: migrations, the loader, the lookups and the CLI."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter

import orjson
import pytest

from casatwin import fleet
from casatwin.city.load import from_dict
from casatwin.city.synthetic import grid
from casatwin.cli import main
from casatwin.config import MariaDBSettings
from casatwin.devstack.servers import MariaDBServer, free_port
from casatwin.errors import UserError
from casatwin.registry import db, identities, loader, lookup, schema, shifts
from casatwin.registry.lookup import lookup_plates, lookup_vehicles
from casatwin.registry.pseudonyms import driver_ref
from tests.conftest import REGISTRY_AS_OF, scratch_database
from tests.conftest import query as rows

pytestmark = pytest.mark.integration

AS_OF = dt.date.fromisoformat(REGISTRY_AS_OF)
GRID_UNITS = loader.police_units_of(from_dict(grid()))


# ---------------------------------------------------------------------------------------
# Migrations and the guards around them


def test_migrate_is_idempotent(mariadb: MariaDBServer):
    settings = scratch_database(mariadb, "casatwin_t_migrate", migrate=False)
    conn = db.open_connection(settings)
    try:
        assert [m.version for m in schema.migrate(conn)] == [1, 2, 3, 4, 5, 6]
        assert schema.migrate(conn) == []
        assert set(schema.applied_versions(conn)) == {1, 2, 3, 4, 5, 6}
        # Interrupted half way, a migration is run again from its first statement.
        for migration in schema.migrations():
            for statement in migration.statements:
                conn.cursor().execute(statement)
    finally:
        conn.close()


def test_a_missing_migration_stops_everything_and_writes_nothing(mariadb: MariaDBServer):
    settings = scratch_database(mariadb, "casatwin_t_old", migrate=False)
    conn = db.open_connection(settings)
    schema.migrate(conn, target=1)
    conn.close()
    with pytest.raises(UserError) as raised:
        loader.load(settings, 13_000, seed=52, as_of=AS_OF)
    assert "schema version 1, this casatwin needs 6" in raised.value.message
    assert "0002_ledger" in raised.value.message
    assert raised.value.hint == "run `casatwin db migrate`"
    assert rows(settings, "SELECT COUNT(*) FROM drivers") == [(0,)]
    assert rows(settings, "SELECT COUNT(*) FROM registry_meta") == [(0,)]
    with pytest.raises(UserError, match="schema version 1"):
        db.connect(settings)


def test_an_empty_database_and_an_unreachable_server_say_what_to_do(mariadb: MariaDBServer):
    settings = scratch_database(mariadb, "casatwin_t_empty", migrate=False)
    with pytest.raises(UserError, match="has no CasaTwin schema") as raised:
        db.connect(settings)
    assert "casatwin db migrate" in raised.value.hint
    closed = MariaDBSettings(port=free_port(), connect_timeout_s=1)
    with pytest.raises(UserError, match=r"cannot reach MariaDB at 127\.0\.0\.1") as raised:
        db.connect(closed)
    assert "CASATWIN_MARIADB_PORT" in raised.value.hint


# ---------------------------------------------------------------------------------------
# The loader


@pytest.fixture(scope="module")
def loaded(mariadb: MariaDBServer) -> MariaDBSettings:
    settings = scratch_database(mariadb, "casatwin_t_loader")
    report = loader.load(settings, 20_000, seed=52, as_of=AS_OF, police_units=GRID_UNITS)
    assert report.rows == 25_000 and report.police_units == 4
    return settings


CONTENT = {
    "drivers": "cin, first_name, last_name, birth_date, licence_no, licence_category, issue_date,"
    " probation_end, points, status",
    "vehicles": "vehicle_id, plate, kind, owner_cin, owner_name",
    "taxi_shifts": "vehicle_id, cin, started_ms, ended_ms",
    "police_units": "unit_id, station_id, station_name, home_lat, home_lon, home_node, active",
}


def checksums(settings: MariaDBSettings) -> list[tuple]:
    """(rows, content hash) of each registry table (CHECKSUM TABLE also hashes storage)."""
    return [
        rows(settings, f"SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', {cols}))) FROM {table}")[0]
        for table, cols in CONTENT.items()
    ]


def test_loading_again_changes_nothing(loaded: MariaDBSettings):
    before = checksums(loaded)
    report = loader.load(loaded, 20_000, seed=52, police_units=GRID_UNITS)
    assert report.rows == 0
    assert checksums(loaded) == before


def test_the_load_is_deterministic(mariadb: MariaDBServer, loaded: MariaDBSettings):
    again = scratch_database(mariadb, "casatwin_t_loader_again")
    loader.load(again, 20_000, seed=52, as_of=AS_OF, police_units=GRID_UNITS)
    assert checksums(again) == checksums(loaded)


def test_every_taxi_has_a_valid_current_driver(loaded: MariaDBSettings):
    found = rows(
        loaded,
        "SELECT v.vehicle_id, v.kind, d.cin, d.status FROM vehicles v"
        " JOIN taxi_shifts s ON s.open_vehicle = v.vehicle_id JOIN drivers d ON d.cin = s.cin"
        " WHERE v.kind IN ('taxi_petit', 'taxi_grand')",
    )
    assert len(found) == fleet.FLEET_SIZE
    assert {r[3] for r in found} == {"valid"}
    by_id = {r[0]: r for r in found}
    assert by_id["TX-00042"][1:3] == (fleet.taxi_kind(41), identities.cin(41))


def test_the_stored_formats_and_counts(loaded: MariaDBSettings):
    cins = rows(loaded, "SELECT cin, licence_no FROM drivers")
    assert len(cins) == 20_000
    assert all(
        re.match(r"^B[A-Z]?\d{6}$", c) and re.match(r"^\d{2}/\d{8}$", lic) for c, lic in cins
    )
    plates = rows(loaded, "SELECT kind, plate FROM vehicles")
    assert Counter(k for k, _ in plates) == {
        "private": 5_000, "taxi_petit": 9_100, "taxi_grand": 3_900, "police": 4,
    }  # fmt: skip
    civil = re.compile(r"^[1-9]\d{0,4}-[أبدهوط]-(6|7|8|9|1[0-6])$")
    assert all(civil.match(p) for k, p in plates if k != "police")
    units = rows(loaded, "SELECT unit_id, station_id, active FROM police_units ORDER BY unit_id")
    assert units[0] == ("PU-NE-1", "ps-ne", 1)


def test_growing_the_registry_keeps_the_first_drivers(
    mariadb: MariaDBServer, loaded: MariaDBSettings
):
    settings = scratch_database(mariadb, "casatwin_t_grow")
    loader.load(settings, 14_000, seed=52, as_of=AS_OF)
    report = loader.load(settings, 20_000, seed=52, police_units=GRID_UNITS)
    assert (report.added_drivers, report.added_private_vehicles) == (6_000, 1_500)
    assert checksums(settings) == checksums(loaded)


def test_a_registry_never_shrinks_nor_mixes_seeds(loaded: MariaDBSettings):
    with pytest.raises(UserError, match="already holds 20,000 drivers, more than 13,000"):
        loader.load(loaded, 13_000, seed=52)
    with pytest.raises(UserError, match="generated with seed 52") as raised:
        loader.load(loaded, 20_000, seed=7)
    assert "--replace" in raised.value.hint
    with pytest.raises(UserError, match="one per taxi"):
        loader.load(loaded, 100, seed=52)


def test_make_run_and_the_benchmarks_keep_a_larger_registry(loaded: MariaDBSettings):
    """``make run`` and ``make bench`` need a registry of at least N drivers: after the 10M
    load benchmark, the processor's benchmarks asking for 13,000 must not be refused."""
    before = checksums(loaded)
    report = loader.load(loaded, 13_000, seed=52, police_units=GRID_UNITS, at_least=True)
    assert (report.drivers, report.rows) == (20_000, 0)
    assert checksums(loaded) == before


def test_an_interrupted_load_is_refused_then_finished(mariadb: MariaDBServer):
    settings = scratch_database(mariadb, "casatwin_t_interrupted")
    conn = db.open_connection(settings)
    loader._defer_indexes(conn.cursor(), "drivers")  # as a load that died mid-way leaves it
    conn.close()
    with pytest.raises(UserError, match="stopped before rebuilding its indexes") as raised:
        db.connect(settings)
    assert "registry load" in raised.value.hint
    loader.load(settings, 13_000, seed=52, as_of=AS_OF)
    db.connect(settings).close()
    assert rows(settings, "SHOW INDEX FROM drivers WHERE Key_name = 'uq_drivers_licence'")


# ---------------------------------------------------------------------------------------
# Lookups


def test_lookup_vehicles_gives_the_current_driver_and_licence(registry: MariaDBSettings):
    conn = db.connect(registry)
    try:
        private = identities.private_vehicle_id(10)
        found = lookup_vehicles(conn, ["TX-00001", private, "PU-SW-1", "TX-99999", "nope"])
    finally:
        conn.close()
    assert set(found) == {"TX-00001", private, "PU-SW-1"}
    taxi = found["TX-00001"]
    assert (taxi.kind, taxi.driver.cin) == (fleet.taxi_kind(0), "B000001")
    assert taxi.owner.endswith("(agrément)")
    assert taxi.driver.status == "valid" and 1 <= taxi.driver.points <= 30
    assert taxi.history().points == taxi.driver.points
    car = found[private]
    assert car.owner == car.driver.name  # private cars are driven by their owner
    assert found["PU-SW-1"].driver is None and found["PU-SW-1"].history() is None
    message = taxi.to_message()
    assert message["vehicle_id"] == "TX-00001" and message["plate"] == taxi.plate
    assert "owner" not in message  # a person's name stays in the registry
    key = b"k" * 32
    assert taxi.driver.to_message(key) == {"ref": driver_ref(key, "B000001")}


def test_lookup_plates(registry: MariaDBSettings):
    conn = db.connect(registry)
    try:
        plate = identities.plate(fleet.FLEET_SIZE + 3)
        found = lookup_plates(conn, [plate, "1-ب-99"])
    finally:
        conn.close()
    assert list(found) == [plate]
    assert found[plate].vehicle_id == identities.private_vehicle_id(3)


def test_lookups_use_keys_only(registry: MariaDBSettings):
    for column, collation in (("vehicle_id", lookup.ASCII_KEY), ("plate", lookup.TEXT_KEY)):
        sql = lookup._SELECT.format(keys=lookup.keys_table(collation), column=column)
        plan = rows(registry, f"EXPLAIN {sql}", (lookup.json_keys(["TX-00001", "PV-0000001"]),))
        access = {row[2]: row[3] for row in plan}  # table → join type
        assert access == {"k": "ALL", "v": "eq_ref", "d": "eq_ref"}, plan


# ---------------------------------------------------------------------------------------
# The command line


@pytest.fixture(autouse=True)
def _restore_logging():
    """`main()` points logging at the captured stderr; put the handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, registry: MariaDBSettings) -> MariaDBSettings:
    monkeypatch.setenv("CASATWIN_MARIADB_PORT", str(registry.port))
    monkeypatch.setenv("CASATWIN_MARIADB_DATABASE", registry.database)
    return registry


def test_registry_driver_shows_a_person_their_file(cli_env, capsys: pytest.CaptureFixture):
    assert main(["registry", "driver", "B000001"]) == 0
    out = capsys.readouterr().out
    assert "CIN B000001" in out and "Drives      TX-00001" in out
    assert "Points history (none)" in out
    assert main(["registry", "driver", "tx-00001"]) == 0
    assert "Vehicle     TX-00001" in capsys.readouterr().out
    licence = rows(cli_env, "SELECT licence_no FROM drivers WHERE cin = 'B000002'")[0][0]
    assert main(["registry", "driver", licence]) == 0
    assert "CIN B000002" in capsys.readouterr().out
    plate = identities.plate(fleet.FLEET_SIZE + 3)
    number, _, code = plate.split("-")
    latin = identities.PLATE_LETTERS_LATIN[identities.PLATE_LETTERS.index(plate.split("-")[1])]
    assert main(["registry", "driver", f"{number} {latin.lower()} {code}"]) == 0
    assert "Owns        PV-0000004" in capsys.readouterr().out


@pytest.mark.parametrize(
    "key,message",
    [
        ("BX999999", "no driver with CIN 'BX999999'"),
        ("99/00000001", "no driver with licence number '99/00000001'"),
        ("99999-B-99", "no driver, licence, plate or vehicle matches '99999-B-99'"),
    ],
)
def test_registry_driver_unknown_keys(cli_env, capsys: pytest.CaptureFixture, key, message):
    assert main(["registry", "driver", key]) == 2
    err = capsys.readouterr().err
    assert f"casatwin: error: {message}" in err and "casatwin: hint: look up a CIN" in err


def test_db_status_and_load_output(cli_env, capsys: pytest.CaptureFixture):
    assert main(["db", "status"]) == 0
    assert "0003  applied  dispatch" in capsys.readouterr().out
    assert main(["registry", "load", "--drivers", "20000", "--city", "/nonexistent.json"]) == 2
    assert "no city pack named '/nonexistent.json'" in capsys.readouterr().err


def test_load_bench_and_bench_lookup_print_json(mariadb: MariaDBServer, monkeypatch, capsys):
    settings = scratch_database(mariadb, "casatwin_t_bench", migrate=False)
    monkeypatch.setenv("CASATWIN_MARIADB_PORT", str(settings.port))
    monkeypatch.setenv("CASATWIN_MARIADB_DATABASE", settings.database)
    assert main(["registry", "load", "--drivers", "13000", "--bench"]) == 0
    result = orjson.loads(capsys.readouterr().out)
    assert result["rows"] == 13_000 + 3_250 and result["seconds"] > 0
    assert result["rows_per_s"] > 0 and result["ratio_to_reference"] > 0
    assert main(["registry", "load", "--drivers", "13000", "--bench"]) == 2  # not empty now
    assert "--replace" in capsys.readouterr().err
    args = ["registry", "bench-lookup", "--drivers", "13000", "--batch", "50", "--batches", "5"]
    assert main(args) == 0
    result = orjson.loads(capsys.readouterr().out)
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["found_per_batch"] == 50 and result["reference_p95_ms"] > 0


def test_start_shift_moves_a_driver_and_keeps_lookups_right(mariadb: MariaDBServer):
    settings = scratch_database(mariadb, "casatwin_t_shifts")
    loader.load(settings, 13_000, seed=52, as_of=AS_OF)
    conn = db.connect(settings)
    try:
        at = 1_760_000_000_000
        shifts.start_shift(conn, "TX-00001", "B000002", at)  # B000002 leaves TX-00002
        found = lookup_vehicles(conn, ["TX-00001", "TX-00002"])
        assert found["TX-00001"].driver.cin == "B000002"
        assert found["TX-00002"].driver is None
        history = rows(
            settings,
            "SELECT vehicle_id, cin, ended_ms FROM taxi_shifts"
            " WHERE vehicle_id IN ('TX-00001', 'TX-00002') ORDER BY shift_id",
        )
        assert history == [
            ("TX-00001", "B000001", at), ("TX-00002", "B000002", at), ("TX-00001", "B000002", None),
        ]  # fmt: skip
        loader.load(settings, 13_000, seed=52)  # a reload keeps the shifts as they are now
        assert lookup_vehicles(conn, ["TX-00001"])["TX-00001"].driver.cin == "B000002"
        assert lookup_vehicles(conn, ["TX-00002"])["TX-00002"].driver is None
        with pytest.raises(UserError, match="not a taxi"):
            shifts.start_shift(conn, identities.private_vehicle_id(0), "B000003", at)
        with pytest.raises(UserError, match="shifts only move forward"):
            shifts.start_shift(conn, "TX-00001", "B000003", at - 1)
        rows(settings, "UPDATE drivers SET status = 'suspended' WHERE cin = 'B000004'")
        with pytest.raises(UserError, match="licence suspended"):
            shifts.start_shift(conn, "TX-00003", "B000004", at)
    finally:
        conn.close()
