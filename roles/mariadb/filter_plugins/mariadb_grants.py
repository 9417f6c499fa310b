"""From an account's grants in ``mariadb_service_grants`` to community.mysql.mysql_user's
``priv`` dict.

A grant is either a string, privileges on the whole database (``"SELECT,INSERT"``), or a
dict of privileges by table, ``"*"`` standing for the whole database::

    {"schema_migrations": "SELECT", "infractions": "SELECT,INSERT"}

and ``{}`` grants nothing.

MariaDB grants on a table only once the table exists, and the tables come with the
migrations (``casatwin db migrate``, in the services tier, after the data tier created the
accounts): the grants on tables that do not exist yet are left for the run of the grants
after the migrations (playbooks/services.yml).

An account left with nothing to grant (``{}``, or only tables that do not exist yet) gets
``{"*.*": "USAGE"}``, MariaDB's "no privilege": mysql_user cannot take an empty ``priv``,
and with this one it revokes whatever the account held on the database before.

Each account is bound to the addresses of the nodes it connects from
(:func:`mariadb_account_hosts`): ``'casatwin_<service>'@'<address>'``, one per address.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def _firewall_filters() -> Any:
    """The firewall role's filters: the nodes' addresses are resolved one way for both roles
    (``getent ahosts`` on the node, loopback left out), so that an account and the
    firewall's rule for port 3306 name the same addresses."""
    path = Path(__file__).resolve().parents[2] / "firewall/filter_plugins/firewall.py"
    spec = importlib.util.spec_from_file_location("casatwin_firewall_filters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A service beside MariaDB reaches it by the node's name: over loopback where the name
# resolves to one (Debian's 127.0.1.1 line: the client's address is then 127.0.0.1), or
# from the node's own address otherwise.
LOOPBACK_HOSTS = ("127.0.0.1", "::1")


def mariadb_privileges(
    grant: str | dict[str, str], database: str, tables: list[str] | None = None
) -> dict[str, str]:
    """``{"db.*": privs, "db.table": privs}`` for the whole database and for those of the
    tables that exist (``tables``; None: all of them); ``{"*.*": "USAGE"}`` when that is
    nothing."""
    by_table: dict[str, Any] = grant if isinstance(grant, dict) else {"*": grant}
    granted = {
        f"{database}.{table}": str(privileges)
        for table, privileges in by_table.items()
        if table == "*" or tables is None or table in tables
    }
    return granted or {"*.*": "USAGE"}


def mariadb_missing_tables(grant: str | dict[str, str], tables: list[str]) -> list[str]:
    """The tables a grant names that do not exist."""
    if not isinstance(grant, dict):
        return []
    return sorted(t for t in grant if t != "*" and t not in tables)


def mariadb_account_nodes(
    accounts: list[str], account_groups: dict[str, list[str]], groups: dict[str, list[str]]
) -> dict[str, list[str]]:
    """{account: the inventory's nodes it connects from}: the nodes of its groups."""
    missing = [a for a in accounts if a not in account_groups]
    if missing:
        raise ValueError(f"mariadb_account_groups has no entry for {missing}")
    return {
        account: sorted({node for g in account_groups[account] for node in groups.get(g) or []})
        for account in accounts
    }


def mariadb_account_hosts(
    account_nodes: dict[str, list[str]], addresses: dict[str, list[str]], here: str
) -> list[dict[str, str]]:
    """``[{account, user, host}]``: each account bound to the addresses of the nodes it connects
    from, as MariaDB (skip-name-resolve) matches a client: by its address. ``here`` (the
    MariaDB node) adds loopback. A node without an address is an error, never a wider host."""
    out = []
    for account, nodes in sorted(account_nodes.items()):
        hosts: list[str] = []
        for node in nodes:
            found = list(addresses.get(node) or [])
            if node == here:
                found = [*LOOPBACK_HOSTS, *found]
            if not found:
                raise ValueError(f"MariaDB account {account}: no address for {node}")
            hosts += found
        user = f"casatwin_{account.replace('-', '_')}"
        out += [{"account": account, "user": user, "host": h} for h in dict.fromkeys(hosts)]
    return out


def mariadb_stale_accounts(
    existing: list[str], wanted: list[dict[str, str]], names: list[str]
) -> list[dict[str, str]]:
    """The accounts to drop: those of ``names`` (``user<TAB>host`` lines of mysql.user) that
    ``wanted`` does not list — the former ``'%'`` ones, a node no longer the service's."""
    keep = {(w["user"], w["host"]) for w in wanted}
    stale = []
    for line in existing:
        user, _, host = line.partition("\t")
        if user in names and (user, host) not in keep:
            stale.append({"user": user, "host": host})
    return stale


class FilterModule:
    def filters(self):
        return {
            "mariadb_privileges": mariadb_privileges,
            "mariadb_missing_tables": mariadb_missing_tables,
            "mariadb_account_nodes": mariadb_account_nodes,
            "mariadb_account_hosts": mariadb_account_hosts,
            "mariadb_stale_accounts": mariadb_stale_accounts,
            "mariadb_resolved_addresses": _firewall_filters().resolved_addresses,
        }
