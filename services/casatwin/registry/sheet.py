"""``casatwin registry driver KEY``: one driver's file, formatted for a person.

:func:`find` resolves the key (a CIN, a licence number, a plate or a vehicle id) and reads
what the registry and the ledgers know; :func:`render` formats it. Unknown keys get a
:class:`UserError` that says what was searched and what keys look like.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from casatwin.errors import UserError
from casatwin.registry import db
from casatwin.registry.identities import CIN_NUMBERS, normalise_plate
from casatwin.registry.lookup import DriverRecord, VehicleRecord, lookup_plates, lookup_vehicles

HISTORY_ROWS = 20
CIN_RE = re.compile(r"^([A-Z]{1,2})(\d{1,6})$")
LICENCE_RE = re.compile(r"^\d{2}/\d{1,8}$")
VEHICLE_ID_RE = re.compile(r"^(TX|PV|PU)-[A-Z0-9-]+$")
EXAMPLES = (
    "a CIN (BE123456), a licence number (06/00012345), a plate (12345-B-6) "
    "or a vehicle id (TX-00042)"
)


@dataclass
class Sheet:
    key: str
    driver: DriverRecord | None
    vehicle: VehicleRecord | None = None  # the vehicle the key named, if it named one
    birth_date: str = ""
    drives: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # (vehicle_id, kind, plate, since_ms)
    owns: list[tuple[Any, ...]] = field(default_factory=list)  # (vehicle_id, kind, plate)
    points: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # (ts, delta, balance, status, reason, infraction_id)
    infractions: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # (event_ts, type, measured, limit, class, fine, points, court, plate, id)


def find(conn: db.Connection, key: str) -> Sheet:
    text = key.strip()
    upper = text.upper().replace(" ", "")
    vehicle: VehicleRecord | None = None
    if CIN_RE.match(upper):
        driver = _driver_where(conn, "cin IN %s", (_cin_forms(upper),))
        if driver is None:
            raise UserError(f"no driver with CIN {upper!r}", hint=f"look up {EXAMPLES}")
    elif LICENCE_RE.match(upper):
        driver = _driver_where(conn, "licence_no = %s", (upper,))
        if driver is None:
            raise UserError(f"no driver with licence number {upper!r}", hint=f"look up {EXAMPLES}")
    else:
        if VEHICLE_ID_RE.match(upper):
            vehicle = lookup_vehicles(conn, [upper]).get(upper)
        if vehicle is None:
            plate = normalise_plate(text)
            vehicle = lookup_plates(conn, [plate]).get(plate)
        if vehicle is None:
            raise UserError(
                f"no driver, licence, plate or vehicle matches {text!r}",
                hint=f"look up {EXAMPLES}",
            )
        driver = vehicle.driver
    sheet = Sheet(key=text, driver=driver, vehicle=vehicle)
    if driver is not None:
        _fill(conn, sheet, driver.cin)
    return sheet


def _cin_forms(cin: str) -> list[str]:
    """The CIN as typed and zero-padded to six digits (the registry's form)."""
    m = CIN_RE.match(cin)
    assert m is not None
    forms = [cin]
    if int(m.group(2)) <= CIN_NUMBERS:
        forms.append(f"{m.group(1)}{int(m.group(2)):06d}")
    return forms


def _driver_where(conn: db.Connection, where: str, args: tuple[Any, ...]) -> DriverRecord | None:
    cursor = conn.cursor()
    cursor.execute(
        "SELECT cin, first_name, last_name, licence_no, licence_category,"
        f" issue_date, probation_end, points, status FROM drivers WHERE {where} LIMIT 1",
        args,
    )
    row = cursor.fetchone()
    return None if row is None else DriverRecord(*row)


def _fill(conn: db.Connection, sheet: Sheet, cin: str) -> None:
    cursor = conn.cursor()
    sheet.birth_date = db.scalar(cursor, "SELECT birth_date FROM drivers WHERE cin = %s", (cin,))
    cursor.execute(
        "SELECT s.vehicle_id, v.kind, v.plate, s.started_ms FROM taxi_shifts s"
        " JOIN vehicles v ON v.vehicle_id = s.vehicle_id WHERE s.open_driver = %s",
        (cin,),
    )
    sheet.drives = list(cursor.fetchall())
    cursor.execute(
        "SELECT vehicle_id, kind, plate FROM vehicles WHERE owner_cin = %s ORDER BY vehicle_id",
        (cin,),
    )
    sheet.owns = list(cursor.fetchall())
    cursor.execute(
        "SELECT ts, delta, balance_after, status_after, reason, infraction_id FROM points_ledger"
        " WHERE cin = %s ORDER BY entry_id DESC LIMIT %s",
        (cin, HISTORY_ROWS),
    )
    sheet.points = list(cursor.fetchall())
    cursor.execute(
        "SELECT event_ts, type, measured, limit_value, offence_class, fine_mad, points, court,"
        " plate, infraction_id FROM infractions WHERE cin = %s ORDER BY event_ts DESC LIMIT %s",
        (cin, HISTORY_ROWS),
    )
    sheet.infractions = list(cursor.fetchall())


def render(sheet: Sheet, today: dt.date) -> str:
    lines: list[str] = []
    if sheet.vehicle is not None:
        v = sheet.vehicle
        lines.append(f"Vehicle     {v.vehicle_id} ({v.kind}), plate {v.plate}, owner {v.owner}")
        if sheet.driver is None:
            lines.append("Driver      nobody known drives it now")
            return "\n".join(lines)
    d = sheet.driver
    assert d is not None
    probation = dt.date.fromisoformat(d.probation_end)
    lines += [
        f"Driver      {d.name} — CIN {d.cin}, born {sheet.birth_date}",
        f"Licence     {d.licence_no}, category {d.licence_category}, issued {d.issue_date}"
        f" (probation {'until' if probation > today else 'ended'}"
        f" {d.probation_end})",
        f"Points      {d.points} — licence {d.status}",
    ]
    for vehicle_id, kind, plate, since in sheet.drives:
        lines.append(f"Drives      {vehicle_id} ({kind}, plate {plate}) since {_when(since)}")
    for vehicle_id, kind, plate in sheet.owns:
        lines.append(f"Owns        {vehicle_id} ({kind}, plate {plate})")
    lines.append("")
    lines.append(f"Points history ({_count(sheet.points)})")
    for ts, delta, balance, status, reason, infraction_id in sheet.points:
        lines.append(
            f"  {_when(ts)}  {delta:+d} → {balance:>2}  {status:<9} {reason}  [{infraction_id}]"
        )
    lines.append("")
    lines.append(f"Infractions ({_count(sheet.infractions)})")
    for (
        ts,
        kind,
        measured,
        limit,
        cls,
        fine,
        points,
        court,
        plate,
        infraction_id,
    ) in sheet.infractions:
        what = f"{kind} {measured:.0f}/{limit:.0f} km/h" if kind == "speeding" else kind
        outcome = "court" if court else f"{fine} MAD"
        lines.append(
            f"  {_when(ts)}  {what:<24} class {cls}  {outcome:<8} -{points} pts  {plate or ''}"
            f"  [{infraction_id}]"
        )
    return "\n".join(lines)


def _count(rows: list[Any]) -> str:
    if not rows:
        return "none"
    return f"latest {len(rows)}" if len(rows) == HISTORY_ROWS else str(len(rows))


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
