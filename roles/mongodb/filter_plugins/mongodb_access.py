"""From ``mongodb_service_privileges`` to what files/casatwin-mongodb-access.js makes the
server hold: per service a role ``casatwin_<service>`` with exactly its actions on its
collections, and a user of the same name holding that role alone (both in the admin
database, where pymongo authenticates by default); the administrator who makes them.

Pure: tests/appliance/test_static.py runs it on the role's defaults.
"""

from __future__ import annotations

from typing import Any

PREFIX = "casatwin_"


def mongodb_user(service: str) -> str:
    """The MongoDB user (and role) of a service."""
    return PREFIX + service.replace("-", "_")


def mongodb_access(
    service_privileges: dict[str, dict[str, list[str]]],
    database: str,
    admin_user: str,
    passwords: dict[str, str],
    port: int | str,
) -> dict[str, Any]:
    """``{port, prefix, admin: {user, password}, roles: [...], users: [...]}``; roles and
    users in createRole's and createUser's shapes."""
    services = sorted(service_privileges)
    roles = [
        {
            "role": mongodb_user(service),
            "privileges": [
                {"resource": {"db": database, "collection": collection}, "actions": sorted(actions)}
                for collection, actions in sorted(service_privileges[service].items())
            ],
        }
        for service in services
    ]
    users = [
        {
            "user": mongodb_user(service),
            "password": passwords.get(service, ""),
            "roles": [{"role": mongodb_user(service), "db": "admin"}],
        }
        for service in services
    ]
    return {
        "port": int(port),
        "prefix": PREFIX,
        "admin": {"user": admin_user, "password": passwords.get(admin_user, "")},
        "roles": roles,
        "users": users,
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"mongodb_access": mongodb_access, "mongodb_user": mongodb_user}
