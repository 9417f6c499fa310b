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
"""

from __future__ import annotations

from typing import Any


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


class FilterModule:
    def filters(self):
        return {
            "mariadb_privileges": mariadb_privileges,
            "mariadb_missing_tables": mariadb_missing_tables,
        }
