"""Who an infraction charged: the one way from an infraction back to a person.

Topics, the DLQ and the read model name a driver only by a pseudonymous reference
(:mod:`casatwin.registry.pseudonyms`); the ledger keeps the CIN of the driver it charged.
:func:`charged_identity` reads that driver and the vehicle's owner for the dashboard's operator
view, which writes its audit row before it calls this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SELECT = (
    "SELECT i.cin, d.first_name, d.last_name, d.licence_no, d.licence_category, d.points,"
    " d.status, v.owner_name, o.first_name, o.last_name"
    " FROM infractions i"
    " LEFT JOIN drivers d ON d.cin = i.cin"
    " LEFT JOIN vehicles v ON v.vehicle_id = i.vehicle_id"
    " LEFT JOIN drivers o ON o.cin = v.owner_cin"
    " WHERE i.infraction_id = %s"
)


@dataclass(frozen=True)
class ChargedIdentity:
    driver: dict[str, Any]  # the driver charged, as the registry knows them now; {} if unknown
    owner: str  # the vehicle's owner: a person, a taxi licence holder or the police; "" unknown


def charged_identity(cursor: Any, infraction_id: str) -> ChargedIdentity | None:
    """The identity behind a recorded infraction; None if the ledger has no such infraction."""
    cursor.execute(_SELECT, (infraction_id,))
    row = cursor.fetchone()
    if row is None:
        return None
    cin, first, last, licence_no, category, points, status, owner_name, o_first, o_last = row
    driver = (
        {}
        if cin is None
        else {
            "cin": cin,
            "name": f"{first} {last}",
            "licence_no": licence_no,
            "licence_category": category,
            "points": int(points),
            "licence_status": status,
        }
    )
    owner = owner_name or (f"{o_first} {o_last}" if o_first else "")
    return ChargedIdentity(driver, owner)
