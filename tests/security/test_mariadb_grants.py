"""Each service's MariaDB account may do what its code does, and nothing else.

The accounts are made as the appliance makes them: the ``mariadb`` role's own filter
(``roles/mariadb/filter_plugins/mariadb_grants.py``) applied to the role's own
``mariadb_service_grants`` (``roles/mariadb/defaults/main.yml``), first before the tables
exist (the data tier), then on the database the migrator has migrated and loaded (the
services tier). Against that real server:

- ``SHOW GRANTS`` of every account is the table of docs/security.md, "Accounts and
  privileges", row for row;
- each service's database code runs as its own account: the processor's ``RegistryDecider``
  deciding detections into the ledger, the dispatcher booking, queueing, following and
  closing a unit, the dashboard's ``OperatorStore`` (login, session check, audit, identity);
- every other table privilege is refused with error 1142, and so is DDL.

The simulator and the gateway run no SQL (checked on their imports): the simulator's account
holds nothing, the gateway has none.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import MySQLdb
import pytest
import yaml

from casatwin.city.load import from_dict
from casatwin.city.synthetic import grid
from casatwin.config import MariaDBSettings, Settings
from casatwin.devstack.servers import MariaDBServer, free_port
from casatwin.devstack.vault import generate_secrets
from casatwin.registry import db, loader, schema
from tests.appliance import ansible
from tests.conftest import query

pytestmark = [pytest.mark.integration, pytest.mark.security]

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/mariadb"


def _role_filter() -> Any:
    spec = importlib.util.spec_from_file_location(
        "mariadb_grants", ROLE / "filter_plugins/mariadb_grants.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRANTS = _role_filter()
_DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
SERVICE_GRANTS: dict[str, Any] = _DEFAULTS["mariadb_service_grants"]
# The host part the role gives a service running beside MariaDB (the filter's first: these
# tests connect over loopback). On the appliance each account is bound so to the addresses
# of its service's nodes, never '%'.
HOST: str = GRANTS.mariadb_account_hosts({"migrator": ["here"]}, {}, "here")[0]["host"]
ER_ACCESS_DENIED = 1045  # "Access denied for user ... (using password: YES)"

DATABASE = "casatwin_t_grants"
AS_OF = dt.date(2025, 6, 1)
ER_TABLEACCESS_DENIED = 1142  # "<COMMAND> command denied to user ... for table ..."
ER_DBACCESS_DENIED = 1044  # "Access denied for user ... to database ..."
DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
CITY = from_dict(grid())  # the registry's police units, the dispatcher's map


def account(service: str) -> str:
    """The role's name for a service's account (roles/mariadb/tasks/accounts.yml)."""
    return f"casatwin_{service.replace('-', '_')}"


# -- what the role grants, what the server shows, what the docs say -----------------------


def tables(server: MariaDBServer) -> list[str]:
    """The database's tables, read as the role reads them (tasks/accounts.yml)."""
    out = server.sql(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{DATABASE}'"
    ).stdout
    return out.split()


def _target(key: str) -> str:
    """mysql_user's ``db.table`` key as a GRANT names it."""
    if key == "*.*":
        return key
    database, table = key.split(".", 1)
    return f"`{database}`." + ("*" if table == "*" else f"`{table}`")


def grant_as_the_role(server: MariaDBServer, service: str) -> dict[str, str]:
    """Give ``service``'s account exactly what the role's filter computes for the tables
    there are now (what mysql_user does: the account ends with these privileges and no
    others); the filter's result."""
    privileges = GRANTS.mariadb_privileges(SERVICE_GRANTS[service], DATABASE, tables(server))
    user = f"'{account(service)}'@'{HOST}'"
    statements = [f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {user}"]
    statements += [f"GRANT {p} ON {_target(k)} TO {user}" for k, p in privileges.items()]
    server.sql(";".join(statements))
    return privileges


_GRANT_LINE = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<on>\S+) TO ")


def shown_grants(
    server: MariaDBServer, service: str, host: str = HOST, database: str = DATABASE
) -> dict[str, frozenset[str]]:
    """SHOW GRANTS of a service's account: {table or "*": privileges} on the database;
    anything granted beyond it fails the test."""
    out = server.sql(f"SHOW GRANTS FOR '{account(service)}'@'{host}'").stdout
    found: dict[str, frozenset[str]] = {}
    for line in out.splitlines():
        match = _GRANT_LINE.match(line)
        assert match, f"not a grant: {line}"
        privileges = frozenset(
            "ALL" if p.strip() == "ALL PRIVILEGES" else p.strip()
            for p in match["privileges"].split(",")
        )
        on = match["on"]
        if on == "*.*" and privileges == {"USAGE"}:
            continue  # every account's line: no privilege
        schema_name, _, table = on.partition(".")
        assert schema_name.strip("`") == database, f"granted beyond the database: {line}"
        found[table.strip("`")] = privileges
    return found


def documented() -> dict[str, dict[str, frozenset[str]]]:
    """docs/security.md's "Accounts and privileges" table: {account: {table: privileges}}."""
    text = (REPO / "docs/security.md").read_text()
    section = text.split("\n## Accounts and privileges\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:3] == ["account", "table", "privileges"], header
    out: dict[str, dict[str, frozenset[str]]] = {}
    for line in rows[2:]:  # after the header and its rule
        name, table, privileges = (c.strip().strip("`") for c in line.strip("|").split("|")[:3])
        grants = out.setdefault(name, {})
        if privileges == "none":
            assert table == "—", line
            continue
        assert table not in grants, f"two rows for {name} on {table}"
        grants[table] = frozenset(p.strip() for p in privileges.split(","))
    return out


# -- the database and the accounts ---------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    settings: dict[str, MariaDBSettings]  # by service, each its own account
    before_migrations: dict[str, dict[str, frozenset[str]]]  # what each held then
    filter_before: dict[str, dict[str, str]]  # the role's filter then
    opening_before: dict[str, int | None]  # the error opening the database then, if any


@pytest.fixture(scope="module")
def accounts(mariadb: MariaDBServer) -> Iterator[Accounts]:
    """The appliance's order: the database and the accounts (data tier), the migrations and
    the registry made by the migrator, then the grants on the tables (services tier)."""
    mariadb.sql(
        f"DROP DATABASE IF EXISTS `{DATABASE}`; CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4"
    )
    settings = {}
    for service in SERVICE_GRANTS:
        password = secrets.token_hex(12)
        user = f"'{account(service)}'@'{HOST}'"
        mariadb.sql(f"DROP USER IF EXISTS {user}; CREATE USER {user} IDENTIFIED BY '{password}'")
        settings[service] = MariaDBSettings(
            host=mariadb.host, port=mariadb.port, user=account(service), password=password,
            database=DATABASE,
        )  # fmt: skip
    filter_before = {s: grant_as_the_role(mariadb, s) for s in SERVICE_GRANTS}
    before = {s: shown_grants(mariadb, s) for s in SERVICE_GRANTS}
    opening = {s: opening_error(settings[s]) for s in SERVICE_GRANTS}
    migrator = settings["migrator"]
    schema.migrate_database(migrator)
    loader.load(migrator, 13_000, seed=52, as_of=AS_OF, police_units=loader.police_units_of(CITY))
    for service in SERVICE_GRANTS:
        grant_as_the_role(mariadb, service)
    yield Accounts(settings, before, filter_before, opening)
    mariadb.sql(
        ";".join(f"DROP USER IF EXISTS '{account(s)}'@'{HOST}'" for s in SERVICE_GRANTS)
        + f"; DROP DATABASE IF EXISTS `{DATABASE}`"
    )


def opening_error(settings: MariaDBSettings) -> int | None:
    """The error number of opening the database as this account; None if it opens."""
    try:
        MySQLdb.connect(
            host=settings.host, port=settings.port, user=settings.user,
            password=settings.password, database=settings.database,
        ).close()  # fmt: skip
    except MySQLdb.Error as exc:
        return exc.args[0]
    return None


def as_migrator(accounts: Accounts, sql: str, args: Any = None) -> list[tuple]:
    return query(accounts.settings["migrator"], sql, args)


def service_settings(accounts: Accounts, service: str, data_dir: Path) -> Settings:
    settings = Settings().replace(
        general={"data_dir": data_dir}, mariadb=accounts.settings[service].__dict__
    )
    generate_secrets(settings)  # the processor's pseudonym key
    return settings


def refused(accounts: Accounts, service: str, sql: str) -> MySQLdb.Error:
    """The error ``sql`` gets from the server as ``service`` (a connection to no database,
    so that an account without any privilege there can try too); fails if it is allowed."""
    conn = db.open_connection(accounts.settings[service], database=None)
    try:
        with pytest.raises(MySQLdb.Error) as caught:
            conn.cursor().execute(sql)
        return caught.value
    finally:
        conn.rollback()
        conn.close()


# -- the role, the server and the docs agree -------------------------------------------------


def test_before_the_migrations_only_the_migrator_holds_anything(accounts):
    """The data tier's pass: no table yet. The migrator owns the database; every other
    account holds nothing (mysql_user gets "no privilege", never an empty ``priv``) and
    cannot even open the database until the services tier grants its tables."""
    for service, held in accounts.before_migrations.items():
        assert accounts.filter_before[service], service  # mysql_user refuses an empty priv
        if service == "migrator":
            assert held == {"*": {"ALL"}}
            assert accounts.opening_before[service] is None
        else:
            assert accounts.filter_before[service] == {"*.*": "USAGE"}, service
            assert held == {}, (service, held)
            assert accounts.opening_before[service] == ER_DBACCESS_DENIED, service


def test_the_grants_are_the_docs_table_and_name_only_migrated_tables(accounts, mariadb):
    migrated = tables(mariadb)
    for service, grant in SERVICE_GRANTS.items():
        assert GRANTS.mariadb_missing_tables(grant, migrated) == [], service  # the role's assert
    shown = {account(s): shown_grants(mariadb, s) for s in SERVICE_GRANTS}
    assert shown == documented()
    # The policy, in the role's data: who may touch the operators, the audit and identities.
    for name, grants in shown.items():
        everything = grants.get("*", frozenset())
        for table in ("dashboard_operators", "identity_views"):
            held = grants.get(table, frozenset()) | everything
            if name == "casatwin_dashboard" and table == "identity_views":
                assert held == {"INSERT"}, held  # the audit: written, never read or changed
            elif name == "casatwin_dashboard":
                assert held == {"SELECT"}, held
            elif name != "casatwin_migrator":
                assert not held, (name, table, held)
        if name in ("casatwin_simulator", "casatwin_dispatcher"):
            assert not (grants.get("drivers", frozenset()) | everything), name
        if name != "casatwin_migrator":
            assert "*" not in grants, name  # nobody else gets a table before it exists
            assert all(p <= set(DML) for p in grants.values()), name  # no DDL, no LOCK


def test_the_docs_table_would_catch_a_wider_grant(accounts, mariadb):
    """The comparison above can fail: a privilege the docs do not list shows up."""
    user = f"'{account('dispatcher')}'@'{HOST}'"
    mariadb.sql(f"GRANT SELECT ON `{DATABASE}`.`drivers` TO {user}")
    try:
        shown = shown_grants(mariadb, "dispatcher")
        assert shown["drivers"] == {"SELECT"}
        assert shown != documented()[account("dispatcher")]
    finally:
        mariadb.sql(f"REVOKE SELECT ON `{DATABASE}`.`drivers` FROM {user}")
    assert shown_grants(mariadb, "dispatcher") == documented()[account("dispatcher")]


# -- every privilege the docs list works, every other one is refused ----------------------


def _probe(privilege: str, table: str, columns: list[str]) -> str:
    """A statement that needs ``privilege`` on ``table`` (and no other privilege) and
    changes nothing. An INSERT names every column it may: strict mode refuses one that leaves
    out a column without a default even when it inserts no row."""
    name = f"`{DATABASE}`.`{table}`"
    listed = ", ".join(f"`{c}`" for c in columns)
    nulls = ", ".join("NULL" for _ in columns)
    return {
        "SELECT": f"SELECT COUNT(*) FROM {name}",
        "INSERT": f"INSERT INTO {name} ({listed}) SELECT {nulls} FROM DUAL WHERE FALSE",
        "UPDATE": f"UPDATE {name} SET `{columns[0]}` = NULL WHERE FALSE",
        "DELETE": f"DELETE FROM {name} WHERE FALSE",
    }[privilege]


def test_each_account_may_do_what_the_docs_say_and_nothing_else_on_any_table(accounts, mariadb):
    columns: dict[str, list[str]] = {}
    for table, column in as_migrator(
        accounts,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
        (DATABASE,),
    ):
        columns.setdefault(table, []).append(column)
    docs = documented()
    allowed, denied, wrong = 0, 0, []
    for service in SERVICE_GRANTS:
        if service == "migrator":
            continue
        grants = docs[account(service)]
        conn = db.open_connection(accounts.settings[service], database=None)
        try:
            cursor = conn.cursor()
            for table, names in sorted(columns.items()):
                for privilege in DML:
                    sql = _probe(privilege, table, names)
                    try:
                        cursor.execute(sql)
                        cursor.fetchall()
                        outcome = "allowed"
                    except MySQLdb.Error as exc:
                        outcome = f"{exc.args[0]} {exc.args[1]}"
                    conn.rollback()
                    if privilege in grants.get(table, ()):
                        allowed += 1
                        ok = outcome == "allowed"
                    else:
                        denied += 1
                        ok = outcome.startswith(
                            f"{ER_TABLEACCESS_DENIED} {privilege} command denied"
                        )
                    if not ok:
                        wrong.append(f"{account(service)} {sql}: {outcome}")
        finally:
            conn.close()
    assert not wrong, "\n".join(wrong)
    services = [n for n in docs if n != account("migrator")]
    assert allowed == sum(len(p) for n in services for p in docs[n].values())
    assert allowed + denied == len(services) * len(columns) * len(DML)
    assert set(columns) == set(tables(mariadb))  # every table of the database was tried


@pytest.mark.parametrize("service", ["processor", "dispatcher", "dashboard", "simulator"])
def test_no_service_but_the_migrator_can_change_the_schema(accounts, service):
    table = f"`{DATABASE}`.`infractions`"
    for sql in (
        f"CREATE TABLE `{DATABASE}`.intruder (id INT)",
        f"DROP TABLE {table}",
        f"ALTER TABLE {table} ADD COLUMN intruder INT",
        f"CREATE INDEX intruder ON {table} (fine_mad)",
        f"TRUNCATE TABLE {table}",
    ):
        exc = refused(accounts, service, sql)
        assert exc.args[0] == ER_TABLEACCESS_DENIED, (sql, exc.args)
    for sql in (
        f"CREATE TEMPORARY TABLE `{DATABASE}`.scratch (id INT)",
        f"LOCK TABLES {table} READ",
        f"CREATE PROCEDURE `{DATABASE}`.intruder() SELECT 1",
    ):
        exc = refused(accounts, service, sql)
        assert exc.args[0] == ER_DBACCESS_DENIED, (sql, exc.args)


# -- the processor ---------------------------------------------------------------------------

T0 = 1_780_000_000_000


def _detection(n: int, vehicle_id: str, kind: str, offence: str, **facts: Any) -> dict:
    return {
        "infraction_id": f"GRANTS-{offence}-{vehicle_id}-{n}",
        "type": offence, "vehicle_id": vehicle_id, "kind": kind,
        "event_ts": T0 + n * 60_000, "evidence_ts": T0 + n * 60_000 + 5_000,
        "detected_ts": T0 + n * 60_000 + 5_100, "lat": 33.59, "lon": -7.62, **facts,
    }  # fmt: skip


DETECTIONS = [
    _detection(1, "TX-00042", "taxi_petit", "speeding", measured=95.0, limit=60.0,
               segment_id="s0001"),
    _detection(2, "TX-00043", "taxi_petit", "red_light", measured=0.0, limit=0.0,
               intersection_id="x1"),
    _detection(3, "PV-9999999", "private", "speeding", measured=80.0, limit=60.0,
               segment_id="s0002"),  # a vehicle the registry does not know
]  # fmt: skip


@dataclass(frozen=True)
class Recorded:
    first: list[Any]  # Decided, per detection
    replayed: list[Any]
    drivers: dict[str, tuple[str, int]]  # vehicle id → (CIN, points before)


@pytest.fixture(scope="module")
def recorded(accounts, tmp_path_factory) -> Recorded:
    """The processor's decisions, as ``casatwin_processor``: lookup, rules, ledger; then
    the same batch again (a replay after a crash)."""
    from casatwin.processor.decisions import RegistryDecider

    drivers = {
        vehicle: (cin, points)
        for vehicle, cin, points in as_migrator(
            accounts,
            "SELECT v.vehicle_id, d.cin, d.points FROM vehicles v JOIN drivers d"
            " ON d.cin = v.driver_cin WHERE v.vehicle_id IN ('TX-00042', 'TX-00043')",
        )
    }
    settings = service_settings(accounts, "processor", tmp_path_factory.mktemp("processor"))
    decider = RegistryDecider(settings)
    decider.start()  # db.connect: the schema check, as the processor's account
    try:
        first = decider.decide(DETECTIONS)
        replayed = decider.decide(DETECTIONS)
    finally:
        decider.stop()
    return Recorded(first, replayed, drivers)


def test_the_processor_decides_and_records_in_the_ledger_as_its_own_account(accounts, recorded):
    speeding, red_light, unknown = recorded.first
    assert [d.rejected for d in recorded.first] == [None, None, None]
    assert speeding.driver["ref"].startswith("drv-") and red_light.driver["ref"].startswith("drv-")
    assert unknown.driver == {} and unknown.decision["points_removed"] == 0
    for decided, vehicle in ((speeding, "TX-00042"), (red_light, "TX-00043")):
        cin, points = recorded.drivers[vehicle]
        assert decided.decision["points_before"] == points
        assert decided.decision["points_removed"] > 0
        assert decided.decision["points_after"] == points - decided.decision["points_removed"]
        # What the ledger holds, read by the migrator: the infraction, the points, the balance.
        assert as_migrator(accounts, "SELECT points FROM drivers WHERE cin = %s", (cin,)) == [
            (decided.decision["points_after"],)
        ]
        assert as_migrator(
            accounts, "SELECT delta, balance_after FROM points_ledger WHERE cin = %s", (cin,)
        ) == [(-decided.decision["points_removed"], decided.decision["points_after"])]
    rows = as_migrator(
        accounts,
        "SELECT infraction_id, cin FROM infractions WHERE infraction_id LIKE 'GRANTS-%%'"
        " ORDER BY event_ts",
    )
    assert rows == [
        (DETECTIONS[0]["infraction_id"], recorded.drivers["TX-00042"][0]),
        (DETECTIONS[1]["infraction_id"], recorded.drivers["TX-00043"][0]),
        (DETECTIONS[2]["infraction_id"], None),
    ]
    # The replay wrote nothing and got the stored decisions back.
    assert [d.decision for d in recorded.replayed] == [d.decision for d in recorded.first]
    assert as_migrator(accounts, "SELECT COUNT(*) FROM points_ledger") == [(2,)]


# -- the dispatcher --------------------------------------------------------------------------


def _infraction(n: int, segment: int) -> dict[str, Any]:
    a = CITY.seg_from[segment]
    return {
        "infraction_id": f"GRANTS-DISPATCH-{n}", "type": "red_light",
        "event_ts": int(time.time() * 1000), "lat": float(CITY.node_lat[a]),
        "lon": float(CITY.node_lon[a]), "segment_id": CITY.segment_ids[segment],
        "decision": {"class": 1, "dispatch_required": True}, "dispatch_required": True,
    }  # fmt: skip


def test_the_dispatcher_books_queues_follows_and_closes_as_its_own_account(accounts, tmp_path):
    """The dispatcher's SQL (the broker left out: what it publishes is not MariaDB's):
    booking the nearest unit with its order, the order read back while unanswered, the
    units' reports, the queue served, its gauges and ``dispatch status``."""
    from casatwin.dispatch import store
    from casatwin.dispatch.service import Dispatcher, assigned_event, book

    settings = service_settings(accounts, "dispatcher", tmp_path)
    dispatcher = Dispatcher(settings, CITY)
    dispatcher.conn = conn = db.connect(settings.mariadb)  # as start() does
    try:
        planner, now = dispatcher.planner, int(time.time() * 1000)
        incident = planner.incident(_infraction(1, 0))
        dispatch_id = store.dispatch_id_of(incident.infraction_id)

        def event_of(choice):
            return assigned_event(planner, settings, dispatch_id, incident, choice, now)

        booked = book(conn, planner, incident, now, event_of)
        assert booked is not None
        _, choice, event = booked
        assert store.unanswered_order(conn, dispatch_id) == event
        with pytest.raises(store.AlreadyHandled):  # the infraction read again: no second unit
            book(conn, planner, incident, now, event_of)
        dispatcher.handle_report({"status": "en_route", "dispatch_id": dispatch_id, "ts": now})
        assert store.unanswered_order(conn, dispatch_id) is None
        dispatcher.handle_report(
            {"status": "on_scene", "dispatch_id": dispatch_id, "ts": now + 90_000}
        )
        closed = store.record_status(conn, dispatch_id, "closed", now + 300_000)
        assert closed is not None and (closed.status, closed.unit_id) == ("closed", choice.unit_id)
        assert closed.arrived_ms == now + 90_000

        queued = planner.incident(_infraction(2, 1))
        assert store.enqueue(conn, queued, planner.segment_id(queued))
        assert store.queue_length(conn) == 1
        served = store.assign_queued(conn, dispatcher._pick_for_queued, now)
        assert served is not None and not isinstance(served, store.PassedOver)
        assert store.queue_length(conn) == 0
        dispatcher._update_gauges()
        busy = [u for u in store.units(conn) if u.dispatch_id is not None]
        assert [u.dispatch_id for u in busy] == [store.dispatch_id_of(queued.infraction_id)]
        assert [i.status for i in store.open_incidents(conn)] == ["assigned"]
    finally:
        dispatcher.conn = None
        conn.close()
    rows = as_migrator(
        accounts, "SELECT dispatch_id, status FROM dispatch_assignments ORDER BY dispatch_id"
    )
    assert rows == [
        (dispatch_id, "closed"),
        (store.dispatch_id_of(queued.infraction_id), "assigned"),
    ]


def test_taking_units_off_duty_is_the_migrators(accounts):
    """``casatwin dispatch off-duty`` changes the registry's units: refused to the
    dispatcher's account (it only reads them), done as the migrator."""
    from casatwin.dispatch import store

    unit = CITY.police_stations[0].units[0]
    conn = db.connect(accounts.settings["dispatcher"])
    try:
        with pytest.raises(MySQLdb.Error) as caught:
            store.set_on_duty(conn, [unit], False)
        assert caught.value.args[0] == ER_TABLEACCESS_DENIED
        assert "UPDATE command denied" in caught.value.args[1]
    finally:
        conn.close()
    conn = db.connect(accounts.settings["migrator"])
    try:
        assert store.set_on_duty(conn, [unit], False) == [unit]
        assert store.set_on_duty(conn, [unit], True) == [unit]
    finally:
        conn.close()


# -- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_logs_in_audits_and_shows_an_identity_as_its_own_account(accounts, recorded):
    from casatwin_dashboard.operators import OperatorStore, hash_password

    password = secrets.token_urlsafe(16)
    owner = OperatorStore(accounts.settings["migrator"])  # add-operator, as on the appliance
    assert owner.set_operator("amina.b", hash_password(password, n=2**14), replace=False)
    dashboard = OperatorStore(accounts.settings["dashboard"])

    stamp = dashboard.authenticate("amina.b", password)
    assert stamp is not None and dashboard.credential("amina.b") == stamp
    assert dashboard.authenticate("amina.b", password + "x") is None
    infraction_id = DETECTIONS[0]["infraction_id"]
    dashboard.record_view("amina.b", infraction_id, recorded.first[0].driver["ref"],
                          "127.0.0.1", f"GET /api/infractions/{infraction_id}")  # fmt: skip
    shown = dashboard.identity(infraction_id)
    cin, _ = recorded.drivers["TX-00042"]
    assert shown is not None and shown.driver["cin"] == cin and shown.owner
    assert dashboard.identity(DETECTIONS[2]["infraction_id"]).driver == {}  # unknown driver
    assert dashboard.identity("no-such-infraction") is None

    # The audit: written by the dashboard, read by an auditor (the migrator), not by it.
    with pytest.raises(MySQLdb.Error) as caught:
        dashboard.views()
    assert caught.value.args[0] == ER_TABLEACCESS_DENIED
    views = owner.views()
    assert [(v["operator"], v["infraction_id"]) for v in views] == [("amina.b", infraction_id)]

    # remove-operator (the migrator's): the next request's session check sees it.
    assert owner.remove_operator("amina.b")
    assert dashboard.credential("amina.b") is None


# -- what each service is refused -----------------------------------------------------------

_AUDIT_ROW = (
    "(operator, infraction_id, driver_ref, client_address, request) VALUES ('x', 'y', '', '', '')"
)
MISDEEDS = {
    "read the operators' password hashes": "SELECT password_hash FROM {db}.dashboard_operators",
    "add an operator": "INSERT INTO {db}.dashboard_operators (name, password_hash)"
    " VALUES ('x', 'y')",
    "change a password": "UPDATE {db}.dashboard_operators SET password_hash = 'intruder'",
    "remove an operator": "DELETE FROM {db}.dashboard_operators",
    "read the audit": "SELECT * FROM {db}.identity_views",
    "write the audit": "INSERT INTO {db}.identity_views " + _AUDIT_ROW,
    "change the audit": "UPDATE {db}.identity_views SET operator = 'intruder'",
    "delete the audit": "DELETE FROM {db}.identity_views",
    "read a driver": "SELECT * FROM {db}.drivers",
    "change a driver's points": "UPDATE {db}.drivers SET points = 30",
    "change a vehicle's owner": "UPDATE {db}.vehicles SET owner_cin = NULL",
    "read the ledger": "SELECT cin FROM {db}.infractions",
    "write the ledger": "INSERT INTO {db}.infractions (infraction_id) VALUES ('intruder')",
    "rewrite a recorded decision": "UPDATE {db}.infractions SET fine_mad = 0",
    "erase a recorded infraction": "DELETE FROM {db}.infractions",
    "read the points history": "SELECT * FROM {db}.points_ledger",
    "erase the points history": "DELETE FROM {db}.points_ledger",
    "read the taxi shifts": "SELECT * FROM {db}.taxi_shifts",
    "retire a police unit": "UPDATE {db}.police_units SET active = FALSE",
    "book a unit": "UPDATE {db}.dispatch_assignments SET status = 'closed'",
    "erase the dispatch history": "DELETE FROM {db}.dispatch_assignments",
    "reload the registry": "DELETE FROM {db}.registry_meta",
    "forge the schema version": "INSERT INTO {db}.schema_migrations (version) VALUES (999)",
}
REFUSED = {
    "processor": [
        "read the operators' password hashes", "add an operator", "read the audit",
        "write the audit", "rewrite a recorded decision", "erase a recorded infraction",
        "erase the points history", "change a vehicle's owner", "book a unit",
        "forge the schema version",
    ],
    "dispatcher": [
        "read a driver", "read the ledger", "read the operators' password hashes",
        "add an operator", "write the audit", "retire a police unit",
        "erase the dispatch history", "forge the schema version",
    ],
    "dashboard": [
        "read the audit", "change the audit", "delete the audit", "add an operator",
        "change a password", "remove an operator", "write the ledger", "change a driver's points",
        "read the points history", "read the taxi shifts", "reload the registry",
    ],
    "simulator": ["read a driver", "read the taxi shifts", "book a unit"],
}  # fmt: skip


@pytest.mark.parametrize("service, misdeed", [(s, m) for s, ms in REFUSED.items() for m in ms])
def test_each_service_is_refused_what_is_not_its_job(accounts, service, misdeed):
    exc = refused(accounts, service, MISDEEDS[misdeed].format(db=DATABASE))
    assert exc.args[0] == ER_TABLEACCESS_DENIED, (misdeed, exc.args)


# -- the simulator and the gateway ---------------------------------------------------------

# Every SQL statement of the twin goes through one of these.
DATABASE_MODULES = {"MySQLdb", "pymysql", "casatwin.registry.db", "casatwin_dashboard.operators"}
SOURCES = {
    "casatwin": REPO / "services/casatwin",
    "casatwin_dashboard": REPO / "dashboard/casatwin_dashboard",
}


def _source(module: str) -> Path | None:
    """The file of one of the project's modules (None: not one, or not a module)."""
    top, *rest = module.split(".")
    if top not in SOURCES:
        return None
    path = SOURCES[top].joinpath(*rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str) -> set[str]:
    """What ``module``'s source imports, at any depth of its code (imports inside functions
    included), with the packages they are in. Read, not imported."""
    path = _source(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # maybe modules
    out = set()
    for name in found:
        parts = name.split(".")
        for prefix in (".".join(parts[: i + 1]) for i in range(len(parts))):
            if parts[0] not in SOURCES or _source(prefix) is not None:
                out.add(prefix)
    return out


def _reached(roots: list[str]) -> set[str]:
    """Every module the roots import, following the project's own modules."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if _source(module) is not None:
                todo.extend(_imports(module) - seen)
    return seen


def _package(name: str) -> list[str]:
    """A package of the project and all its modules."""
    root = _source(name).parent
    return [
        ".".join([name, *p.relative_to(root).with_suffix("").parts]).removesuffix(".__init__")
        for p in sorted(root.rglob("*.py"))
    ]


@pytest.mark.parametrize("service", ["simulator", "gateway"])
def test_the_simulator_and_the_gateway_run_no_sql(service):
    """Why the simulator's account holds nothing and the gateway has none: no module they
    can reach (``casatwin <service>``: its package, the fleet) talks to MariaDB."""
    roots = [*_package(f"casatwin.{service}"), "casatwin.fleet"]
    assert f"casatwin.{service}.cli" in roots
    reached = _reached(roots)
    assert "casatwin.config" in reached  # the walk does follow the project's imports
    assert not reached & DATABASE_MODULES, sorted(reached & DATABASE_MODULES)
    # The check can fail: the dispatcher, which does talk to MariaDB, is caught.
    assert _reached(["casatwin.dispatch.service"]) & DATABASE_MODULES == {
        "MySQLdb", "casatwin.registry.db",
    }  # fmt: skip


def test_the_simulators_account_can_open_nothing(accounts):
    assert opening_error(accounts.settings["simulator"]) == ER_DBACCESS_DENIED
    for table in ("drivers", "vehicles", "police_units", "taxi_shifts"):
        exc = refused(accounts, "simulator", f"SELECT * FROM `{DATABASE}`.`{table}`")
        assert exc.args[0] == ER_TABLEACCESS_DENIED, (table, exc.args)


# -- the role's own task file, run by Ansible against the server ----------------------------

ROLE_DATABASE = "casatwin_t_grants_role"
# The services' node of the role's inventory and its address, which its accounts are bound
# to (TEST-NET-1: nobody connects from there).
ROLE_NODE, ROLE_HOST = "svcnode", "192.0.2.1"
PLAYBOOK = f"""
- name: The mariadb role's accounts and grants, against the test server
  hosts: mariadb
  gather_facts: false
  vars_files:
    - {ROLE}/defaults/main.yml
    - {ROLE}/vars/main.yml
  tasks:
    - name: The role's tasks
      ansible.builtin.include_tasks: {ROLE}/tasks/accounts.yml
"""


@pytest.fixture
def own_mariadb(tmp_path: Path) -> Iterator[MariaDBServer]:
    """A server of its own: the role drops every casatwin_* account it does not make, those
    of the other tests' fixtures included."""
    server = MariaDBServer("127.0.0.1", free_port(), tmp_path / "own-mariadb")
    server.start()
    yield server
    server.stop()


def role_accounts(server: MariaDBServer) -> set[tuple[str, str]]:
    out = server.sql(r"SELECT user, host FROM mysql.user WHERE user LIKE 'casatwin\_%'").stdout
    return {tuple(line.split("\t")) for line in out.splitlines()}


def test_the_roles_own_tasks_grant_the_docs_table_in_both_passes_and_on_an_upgrade(
    own_mariadb, tmp_path
):
    """roles/mariadb/tasks/accounts.yml (mysql_user, the role's filter and data) on a fresh
    database: the data tier's pass (no table: nothing but the migrator's, and no empty
    ``priv`` for mysql_user to choke on), the services tier's once migrated (the docs
    table), the same again (nothing changed), and an appliance converged with the former
    database-wide grants on accounts of any host ('%'; taken back and dropped: the docs
    table again, each account bound to the services' node's address alone)."""
    mariadb = own_mariadb
    services = [s for s in SERVICE_GRANTS if s != "migrator"]
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "hosts": {"localhost": local, ROLE_NODE: {}},
            "children": {
                "mariadb": {"hosts": {"localhost": {}}},
                **{g: {"hosts": {ROLE_NODE: {}}} for g in services},
            },
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "accounts.yml").write_text(PLAYBOOK)
    env = ansible.environment()
    env["ANSIBLE_FILTER_PLUGINS"] = str(ROLE / "filter_plugins")
    users = [f"'{account(s)}'@'{ROLE_HOST}'" for s in SERVICE_GRANTS]
    passwords = {s: secrets.token_hex(12) for s in SERVICE_GRANTS}
    mariadb.sql(
        ";".join(f"DROP USER IF EXISTS {u}" for u in users)
        + f"; DROP DATABASE IF EXISTS `{ROLE_DATABASE}`"
        + f"; CREATE DATABASE `{ROLE_DATABASE}` CHARACTER SET utf8mb4"
    )

    def converge(after_migrations: bool, log: str) -> dict[str, int]:
        extra = {
            "mariadb_socket": str(mariadb.socket),
            "mariadb_database": ROLE_DATABASE,
            "mariadb_node_addresses": {ROLE_NODE: [ROLE_HOST]},
            "mariadb_passwords": passwords,
            "mariadb_grants_after_migrations": after_migrations,
        }
        (tmp_path / "extra.json").write_text(json.dumps(extra))
        out = tmp_path / log
        result = subprocess.run(
            [str(ansible.BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
             "-e", f"@{tmp_path / 'extra.json'}", str(tmp_path / "accounts.yml")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        out.write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        recap = ansible.Run(0, result.stdout, out, 0.0).recap()
        return recap["localhost"]

    def shown() -> dict[str, dict[str, frozenset[str]]]:
        return {
            account(s): shown_grants(mariadb, s, ROLE_HOST, ROLE_DATABASE) for s in SERVICE_GRANTS
        }

    try:
        # The data tier, before the migrations.
        converge(False, "data-tier.log")
        before = shown()
        assert before.pop(account("migrator")) == {"*": {"ALL"}}
        assert before == {account(s): {} for s in services}

        # The services tier: migrated by then.
        conn = db.open_connection(
            MariaDBSettings(
                host=mariadb.host, port=mariadb.port, user=mariadb.user, database=ROLE_DATABASE
            )
        )
        try:
            schema.migrate(conn)
        finally:
            conn.close()
        converge(True, "services-tier.log")
        assert shown() == documented()
        assert role_accounts(mariadb) == {(account(s), ROLE_HOST) for s in SERVICE_GRANTS}
        assert converge(True, "again.log")["changed"] == 0

        # An appliance converged before the grants were narrowed: the data tier's pass on it
        # takes the database-wide grants back.
        where = f"`{ROLE_DATABASE}`.*"
        mariadb.sql(
            f"GRANT SELECT, INSERT, UPDATE ON {where} TO '{account('processor')}'@'{ROLE_HOST}';"
            f"GRANT SELECT ON {where} TO '{account('simulator')}'@'{ROLE_HOST}';"
            f"GRANT SELECT ON {where} TO '{account('dashboard')}'@'{ROLE_HOST}';"
            f"CREATE USER '{account('processor')}'@'%' IDENTIFIED BY 'former';"
            f"GRANT SELECT, INSERT, UPDATE ON {where} TO '{account('processor')}'@'%'"
        )
        assert shown() != documented()
        converge(False, "upgrade.log")
        assert shown() == documented()
        assert role_accounts(mariadb) == {(account(s), ROLE_HOST) for s in SERVICE_GRANTS}
    finally:
        mariadb.sql(
            ";".join(f"DROP USER IF EXISTS {u}" for u in users)
            + f"; DROP DATABASE IF EXISTS `{ROLE_DATABASE}`"
        )


def test_an_account_bound_to_another_nodes_address_refuses_its_password_from_here(mariadb):
    """MariaDB matches the client's address (skip-name-resolve): the role binds a service's
    account to its nodes' addresses, and the right password from any other address is
    refused (1045) — here, an account bound as the role binds one on another node."""
    assert HOST == "127.0.0.1"
    elsewhere = GRANTS.mariadb_account_hosts(
        {"dispatcher": ["compute"]}, {"compute": ["192.0.2.12"]}, "broker"
    )
    assert [(r["user"], r["host"]) for r in elsewhere] == [("casatwin_dispatcher", "192.0.2.12")]
    user, password = "casatwin_t_bound", secrets.token_hex(12)
    mariadb.sql(
        f"DROP USER IF EXISTS '{user}'@'192.0.2.12';"
        f"CREATE USER '{user}'@'192.0.2.12' IDENTIFIED BY '{password}'"
    )
    try:
        with pytest.raises(MySQLdb.Error) as refused:
            MySQLdb.connect(
                host=mariadb.host, port=mariadb.port, user=user, password=password,
                connect_timeout=5,
            )  # fmt: skip
        assert refused.value.args[0] == ER_ACCESS_DENIED, refused.value
        # Bound to this client's address, the same password is let in.
        mariadb.sql(f"CREATE USER '{user}'@'{HOST}' IDENTIFIED BY '{password}'")
        MySQLdb.connect(
            host=mariadb.host, port=mariadb.port, user=user, password=password, connect_timeout=5
        ).close()
    finally:
        mariadb.sql(
            f"DROP USER IF EXISTS '{user}'@'192.0.2.12'; DROP USER IF EXISTS '{user}'@'{HOST}'"
        )
