"""The mariadb role's grants: from mariadb_service_grants to mysql_user's privileges."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from casatwin.appliance import REPO, inventory_groups, role_plugin

pytestmark = pytest.mark.appliance

ROLE = REPO / "roles/mariadb"
_spec = importlib.util.spec_from_file_location(
    "mariadb_grants", ROLE / "filter_plugins/mariadb_grants.py"
)
grants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grants)

DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())["mariadb_service_grants"]


def _migrated_tables() -> set[str]:
    """The tables the registry's migrations create (and ``schema_migrations``, which
    ``casatwin db migrate`` creates itself: registry/schema.py)."""
    registry = REPO / "services/casatwin/registry"
    sql = "".join(
        p.read_text() for p in [*registry.glob("migrations/*.sql"), registry / "schema.py"]
    )
    return set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?`?(\w+)`?", sql, re.I))


def test_whole_database_grants_need_no_table():
    assert grants.mariadb_privileges("SELECT,INSERT", "casatwin", []) == {
        "casatwin.*": "SELECT,INSERT"
    }


def test_table_grants_wait_for_their_tables():
    dashboard = {"*": "SELECT", "identity_views": "INSERT"}
    assert grants.mariadb_privileges(dashboard, "casatwin", []) == {"casatwin.*": "SELECT"}
    assert grants.mariadb_privileges(dashboard, "casatwin", ["identity_views", "drivers"]) == {
        "casatwin.*": "SELECT", "casatwin.identity_views": "INSERT",
    }  # fmt: skip
    assert grants.mariadb_missing_tables(dashboard, ["drivers"]) == ["identity_views"]
    assert grants.mariadb_missing_tables(dashboard, ["identity_views"]) == []
    assert grants.mariadb_missing_tables("ALL", []) == []


def test_an_account_with_nothing_to_grant_gets_no_privilege():
    """mysql_user cannot take an empty ``priv``: before its tables exist (or with ``{}``) an
    account gets USAGE, which also takes back what it held on the database before."""
    assert grants.mariadb_privileges({}, "casatwin", []) == {"*.*": "USAGE"}
    assert grants.mariadb_privileges({"drivers": "SELECT"}, "casatwin", []) == {"*.*": "USAGE"}
    assert grants.mariadb_privileges({"drivers": "SELECT"}, "casatwin", ["drivers"]) == {
        "casatwin.drivers": "SELECT"
    }


def test_the_dashboard_writes_only_the_audit_of_identity_views():
    """Least privilege: the dashboard reads what it shows; its one write is the audit row it
    must insert before it shows an identity (operators.py record_view). Operators are added
    as the migrator (playbooks/add-operator.yml), never as the dashboard. (Every account,
    table by table, against a real server: tests/security/test_mariadb_grants.py.)"""
    dashboard = DEFAULTS["dashboard"]
    assert "*" not in dashboard and dashboard["identity_views"] == "INSERT"
    assert all(p == "SELECT" for t, p in dashboard.items() if t != "identity_views"), dashboard
    assert DEFAULTS["migrator"] == "ALL"


def test_every_table_granted_on_is_made_by_the_migrations():
    tables = _migrated_tables()
    assert {"identity_views", "dashboard_operators", "infractions"} <= tables, tables
    for account, grant in DEFAULTS.items():
        assert grants.mariadb_missing_tables(grant, sorted(tables)) == [], account


# -- each account bound to the addresses of the nodes it connects from ----------------------

ADDRESSES = {
    "lenovo": ["10.0.0.10"],
    "optiplex": ["10.0.0.11"],
    "prodesk": ["10.0.0.12", "fd00::12"],
}


def _garage_groups() -> dict[str, list[str]]:
    """The groups of the converge test's inventory (the garage, Kafka on three nodes)."""
    return inventory_groups("inventory/garage", "tests/appliance/garage-test-inventory.yml")


def _garage_hosts(here: str = "optiplex") -> dict[str, set[str]]:
    groups = _garage_groups()
    role_defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    nodes = grants.mariadb_account_nodes(
        list(DEFAULTS), role_defaults["mariadb_account_groups"], groups
    )
    found: dict[str, set[str]] = {}
    for row in grants.mariadb_account_hosts(nodes, ADDRESSES, here):
        assert row["user"] == f"casatwin_{row['account']}"
        found.setdefault(row["account"], set()).add(row["host"])
    return found


def test_each_account_is_bound_to_its_services_nodes_on_the_garage():
    """The garage: the processor and the dispatcher on prodesk, the dashboard and the
    simulator on lenovo; the migrator on every node of the services tier; nothing from the
    broker node (which runs MariaDB and no service) and never '%'."""
    assert _garage_hosts() == {
        "processor": {"10.0.0.12", "fd00::12"},
        "dispatcher": {"10.0.0.12", "fd00::12"},
        "dashboard": {"10.0.0.10"},
        "simulator": {"10.0.0.10"},
        "migrator": {"10.0.0.10", "10.0.0.12", "fd00::12"},
    }


def test_a_service_beside_mariadb_connects_over_loopback_or_the_nodes_own_address():
    """inventory/local: everything on one node, reached by its name (loopback, or its own
    address when the name resolves to one)."""
    nodes = {"processor": ["localhost"]}
    rows = grants.mariadb_account_hosts(nodes, {"localhost": ["192.0.2.5"]}, "localhost")
    assert [r["host"] for r in rows] == ["127.0.0.1", "::1", "192.0.2.5"]
    rows = grants.mariadb_account_hosts(nodes, {}, "localhost")
    assert [r["host"] for r in rows] == ["127.0.0.1", "::1"]


def test_a_node_without_an_address_is_an_error_never_a_wider_account():
    with pytest.raises(ValueError, match="no address for prodesk"):
        grants.mariadb_account_hosts({"processor": ["prodesk"]}, {}, "optiplex")
    with pytest.raises(ValueError, match="no entry for"):
        grants.mariadb_account_nodes(["newservice"], {}, {})


def test_the_former_any_host_accounts_and_moved_ones_are_dropped():
    wanted = grants.mariadb_account_hosts({"processor": ["prodesk"]}, ADDRESSES, "optiplex")
    existing = [
        "casatwin_processor\t%", "casatwin_processor\t10.0.0.12", "casatwin_processor\tfd00::12",
        "casatwin_processor\t10.0.0.99", "someone_else\t%",
    ]  # fmt: skip
    assert grants.mariadb_stale_accounts(existing, wanted, ["casatwin_processor"]) == [
        {"user": "casatwin_processor", "host": "%"},
        {"user": "casatwin_processor", "host": "10.0.0.99"},
    ]


def test_the_accounts_groups_are_the_casatwin_services_groups():
    """A service's account is bound to the group the casatwin role places it with; the
    migrator to every group of the services tier's play (playbooks/services.yml)."""
    groups = yaml.safe_load((ROLE / "defaults/main.yml").read_text())["mariadb_account_groups"]
    services = yaml.safe_load((REPO / "roles/casatwin/defaults/main.yml").read_text())[
        "casatwin_services"
    ]
    for account, account_groups in groups.items():
        if account != "migrator":
            assert account_groups == [services[account]["group"]], account
    play = yaml.safe_load((REPO / "playbooks/services.yml").read_text())[0]
    assert set(groups["migrator"]) == set(play["hosts"].split(":"))
    assert set(groups) == set(DEFAULTS)  # every account of the grants has its groups


def test_the_resolution_is_the_firewalls():
    firewall = role_plugin("firewall", "filter_plugins/firewall.py")
    results = [{"item": "a", "stdout": "10.1.2.3 STREAM a\n127.0.1.1 STREAM a\n"}]
    filters = grants.FilterModule().filters()
    assert filters["mariadb_resolved_addresses"](results) == firewall.resolved_addresses(results)
