"""The mariadb role's grants: from mariadb_service_grants to mysql_user's privileges."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from tests.appliance.ansible import REPO

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
