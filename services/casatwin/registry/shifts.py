"""Taxi shifts: which driver drives which taxi now.

A shift is a row of ``taxi_shifts``; the open one's driver is copied to the taxi's
``vehicles.driver_cin`` in the same transaction, so that lookups reach the driver in one
step. :func:`start_shift` is the one way to change drivers: it ends the taxi's open shift
and the driver's open shift on another taxi, opens the new one and updates both vehicles.
"""

from __future__ import annotations

from casatwin.errors import UserError
from casatwin.registry import db

TAXI_KINDS = ("taxi_petit", "taxi_grand")


def start_shift(conn: db.Connection, vehicle_id: str, cin: str, at_ms: int) -> None:
    """From ``at_ms``, driver ``cin`` drives taxi ``vehicle_id``."""

    def work(cursor: db.Cursor) -> None:
        cursor.execute("SELECT kind FROM vehicles WHERE vehicle_id = %s FOR UPDATE", (vehicle_id,))
        row = cursor.fetchone()
        if row is None or row[0] not in TAXI_KINDS:
            raise UserError(f"{vehicle_id!r} is not a taxi of the registry")
        cursor.execute("SELECT status FROM drivers WHERE cin = %s FOR UPDATE", (cin,))
        driver = cursor.fetchone()
        if driver is None:
            raise UserError(f"no driver with CIN {cin!r}")
        if driver[0] != "valid":
            raise UserError(f"driver {cin} cannot drive: licence {driver[0]}")
        cursor.execute(
            "SELECT shift_id, vehicle_id, started_ms FROM taxi_shifts"
            " WHERE open_vehicle = %s OR open_driver = %s FOR UPDATE",
            (vehicle_id, cin),
        )
        ending = cursor.fetchall()
        if any(started > at_ms for _, _, started in ending):
            raise UserError(f"a shift to end started after {at_ms}; shifts only move forward")
        for shift_id, other_vehicle, _ in ending:
            cursor.execute(
                "UPDATE taxi_shifts SET ended_ms = %s WHERE shift_id = %s", (at_ms, shift_id)
            )
            cursor.execute(
                "UPDATE vehicles SET driver_cin = NULL WHERE vehicle_id = %s", (other_vehicle,)
            )
        cursor.execute(
            "INSERT INTO taxi_shifts (vehicle_id, cin, started_ms) VALUES (%s, %s, %s)",
            (vehicle_id, cin, at_ms),
        )
        cursor.execute(
            "UPDATE vehicles SET driver_cin = %s WHERE vehicle_id = %s", (cin, vehicle_id)
        )

    db.transaction(conn, work)


def sync_drivers(cursor: db.Cursor) -> None:
    """Point every taxi at its open shift's driver (idempotent; after bulk shift inserts)."""
    cursor.execute(
        "UPDATE vehicles v LEFT JOIN taxi_shifts s ON s.open_vehicle = v.vehicle_id"
        " SET v.driver_cin = s.cin"
        " WHERE v.kind IN ('taxi_petit', 'taxi_grand') AND NOT (v.driver_cin <=> s.cin)"
    )
