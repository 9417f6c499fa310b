"""The dispatch records in MariaDB: free units, assignments, the queue, arrival and close.

No unit is ever booked twice, by construction: ``dispatch_assignments.open_unit`` carries
the unit id while an assignment is open, under a unique index, so of two dispatchers that
pick the same unit at once the second gets a duplicate-key error and picks again. The
unit's row is locked first, so that taking a unit off duty and assigning it exclude each
other. The dispatch id is derived from the infraction id: a replayed infraction is
recognised by the primary key and assigned nothing.

The ``assigned`` event is stored with the assignment, in the same transaction
(``assigned_event``): :func:`unanswered_order` gives it back, as it was published, while the
unit has not answered, so that an order lost on its way out can be sent again unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from casatwin.bus import messages
from casatwin.dispatch.planner import Incident
from casatwin.errors import UserError
from casatwin.registry import db

OPEN_STATUSES = ("assigned", "en_route", "on_scene")


def dispatch_id_of(infraction_id: str) -> str:
    return f"D-{infraction_id}"


class UnitTaken(Exception):
    """The unit got an open assignment (or went off duty) since it was seen free."""


class AlreadyHandled(Exception):
    """This infraction already has a dispatch record (a replay)."""


@dataclass(frozen=True)
class Assignment:
    dispatch_id: str
    infraction_id: str
    unit_id: str | None
    status: str
    created_ms: int
    assigned_ms: int | None
    arrived_ms: int | None
    closed_ms: int | None
    eta_s: float | None
    response_s: float | None
    infraction_type: str
    severity: int
    segment_id: str | None
    offset_m: float | None
    lat: float | None
    lon: float | None


_ASSIGNMENT_COLUMNS = (
    "dispatch_id, infraction_id, unit_id, status, created_ms, assigned_ms, arrived_ms,"
    " closed_ms, eta_s, response_s, infraction_type, severity, segment_id, offset_m, lat, lon"
)


def free_units(cursor: db.Cursor) -> list[str]:
    """Units on duty with no open assignment."""
    cursor.execute(
        "SELECT p.unit_id FROM police_units p WHERE p.active AND p.on_duty AND NOT EXISTS"
        " (SELECT 1 FROM dispatch_assignments d WHERE d.open_unit = p.unit_id)"
        " ORDER BY p.unit_id"
    )
    return [row[0] for row in cursor.fetchall()]


def _incident_row(incident: Incident, segment_id: str) -> tuple[Any, ...]:
    return (
        dispatch_id_of(incident.infraction_id),
        incident.infraction_id,
        incident.event_ts,
        incident.type,
        incident.severity,
        segment_id,
        incident.place.offset_m,
        incident.lat,
        incident.lon,
    )


def assign(
    conn: db.Connection,
    incident: Incident,
    segment_id: str,
    unit_id: str,
    eta_s: float,
    now_ms: int,
    event: Mapping[str, Any] | None = None,
) -> str:
    """Record ``unit_id`` as sent to ``incident``, with the ``assigned`` ``event`` that
    will be published; :class:`UnitTaken` if someone was quicker, :class:`AlreadyHandled`
    on a replay. Returns the dispatch id."""

    def work(cursor: db.Cursor) -> str:
        on_duty = db.scalar(
            cursor,
            "SELECT active AND on_duty FROM police_units WHERE unit_id = %s FOR UPDATE",
            (unit_id,),
        )
        if not on_duty:
            raise UnitTaken(unit_id)
        try:
            cursor.execute(
                "INSERT INTO dispatch_assignments (dispatch_id, infraction_id, created_ms,"
                " infraction_type, severity, segment_id, offset_m, lat, lon, unit_id, status,"
                " assigned_ms, eta_s, assigned_event) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, 'assigned', %s, %s, %s)",
                (*_incident_row(incident, segment_id), unit_id, now_ms, eta_s, _json(event)),
            )
        except db.Error as exc:
            _raise_duplicate(exc, unit_id)
            raise
        return dispatch_id_of(incident.infraction_id)

    return db.transaction(conn, work)


def enqueue(conn: db.Connection, incident: Incident, segment_id: str) -> bool:
    """Queue an incident no unit can take now; False if it was already recorded."""
    cursor = conn.cursor()
    try:
        cursor.execute(
            "INSERT IGNORE INTO dispatch_assignments (dispatch_id, infraction_id, created_ms,"
            " infraction_type, severity, segment_id, offset_m, lat, lon, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued')",
            _incident_row(incident, segment_id),
        )
        return cursor.rowcount == 1
    finally:
        cursor.close()


@dataclass(frozen=True)
class PassedOver:
    """A queued incident that none of the free units can take (not on this city pack's
    map, out of their reach): it keeps its place and the next one is served."""

    queued: Assignment


Picked = tuple[str, float, dict[str, Any], Any]  # unit id, eta_s, assigned event, extra
Pick = Callable[[Assignment, list[str]], Picked | None]


def assign_queued(
    conn: db.Connection, pick: Pick, now_ms: int, passed_over: Collection[str] = ()
) -> tuple[Assignment, dict[str, Any], Any] | PassedOver | None:
    """Give the most urgent queued incident (severity, then age) not in ``passed_over``
    (dispatch ids) a unit.

    ``pick(assignment, free_unit_ids)`` returns ``(unit_id, eta_s, assigned_event, extra)``
    or None; the event is stored with the assignment. The queue head is locked (``SKIP
    LOCKED``: another dispatcher takes the next one), so one incident is never assigned
    twice. Returns what was assigned ``(queued, event, extra)``, :class:`PassedOver` if
    ``pick`` found no unit for the head, or None (nothing queued, no unit free).
    """
    skip = f" AND dispatch_id NOT IN ({', '.join(['%s'] * len(passed_over))})"

    def work(cursor: db.Cursor) -> tuple[Assignment, dict[str, Any], Any] | PassedOver | None:
        cursor.execute(
            f"SELECT {_ASSIGNMENT_COLUMNS} FROM dispatch_assignments WHERE status = 'queued'"
            f"{skip if passed_over else ''} ORDER BY severity, created_ms LIMIT 1"
            " FOR UPDATE SKIP LOCKED",
            tuple(passed_over) or None,
        )
        row = cursor.fetchone()
        if row is None:
            return None
        queued = Assignment(*row)
        free = free_units(cursor)
        if not free:
            return None
        chosen = pick(queued, free)
        if chosen is None:
            return PassedOver(queued)
        unit_id, eta_s, event, extra = chosen
        db.scalar(cursor, "SELECT unit_id FROM police_units WHERE unit_id = %s FOR UPDATE",
                  (unit_id,))  # fmt: skip
        try:
            cursor.execute(
                "UPDATE dispatch_assignments SET unit_id = %s, status = 'assigned',"
                " assigned_ms = %s, eta_s = %s, assigned_event = %s"
                " WHERE dispatch_id = %s AND status = 'queued'",
                (unit_id, now_ms, eta_s, _json(event), queued.dispatch_id),
            )
        except db.Error as exc:
            _raise_duplicate(exc, unit_id)
            raise
        return queued, event, extra

    return db.transaction(conn, work)


def _json(event: Mapping[str, Any] | None) -> str | None:
    return None if event is None else messages.encode(dict(event)).decode()


def unanswered_order(conn: db.Connection, dispatch_id: str) -> dict[str, Any] | None:
    """The ``assigned`` event of ``dispatch_id`` as it was published, while the unit has
    not answered it (status still ``assigned``: the simulator reports ``en_route`` as soon
    as it has the order); None once it has, or if the assignment is not open, or was made
    before the event was kept (migration 0006)."""
    cursor = conn.cursor()
    try:
        event = db.scalar(
            cursor,
            "SELECT assigned_event FROM dispatch_assignments"
            " WHERE dispatch_id = %s AND status = 'assigned'",
            (dispatch_id,),
        )
    finally:
        cursor.close()
    return None if event is None else orjson.loads(event)


def _raise_duplicate(exc: db.Error, unit_id: str) -> None:
    if db.error_code(exc) != db.ER_DUP_ENTRY:
        return
    if "uq_dispatch_open_unit" in str(exc):
        raise UnitTaken(unit_id) from None
    raise AlreadyHandled() from None


def record_status(
    conn: db.Connection, dispatch_id: str, status: str, ts: int, response_s: float | None = None
) -> Assignment | None:
    """Record what the unit reports (en_route, on_scene, closed); the assignment after it,
    or None if the report changes nothing (a repeated one, an en_route after the arrival).

    Only ``on_scene`` sets ``arrived_ms`` and ``response_s``. Should it come after the
    ``closed`` of its assignment (nothing but the topic's keying keeps a unit's reports in
    order), it still records them, once, and leaves the assignment closed: the unit stays
    free and is booked nowhere.
    """

    def work(cursor: db.Cursor) -> Assignment | None:
        if status == "on_scene":
            # response_s is NULL until the arrival is recorded, whatever the status.
            cursor.execute(
                "UPDATE dispatch_assignments SET arrived_ms = %s,"
                " response_s = COALESCE(%s, (%s - created_ms) / 1000),"
                " status = IF(status = 'closed', 'closed', 'on_scene')"
                " WHERE dispatch_id = %s AND (status IN ('assigned', 'en_route')"
                " OR (status = 'closed' AND response_s IS NULL))",
                (ts, response_s, ts, dispatch_id),
            )
        elif status == "closed":
            cursor.execute(
                "UPDATE dispatch_assignments SET status = 'closed', closed_ms = %s"
                " WHERE dispatch_id = %s AND status IN ('assigned', 'en_route', 'on_scene')",
                (ts, dispatch_id),
            )
        elif status == "en_route":
            cursor.execute(
                "UPDATE dispatch_assignments SET status = 'en_route'"
                " WHERE dispatch_id = %s AND status = 'assigned'",
                (dispatch_id,),
            )
        else:
            return None
        if cursor.rowcount != 1:
            return None
        return _get(cursor, dispatch_id)

    return db.transaction(conn, work)


def _get(cursor: db.Cursor, dispatch_id: str) -> Assignment | None:
    cursor.execute(
        f"SELECT {_ASSIGNMENT_COLUMNS} FROM dispatch_assignments WHERE dispatch_id = %s",
        (dispatch_id,),
    )
    row = cursor.fetchone()
    return None if row is None else Assignment(*row)


def get(conn: db.Connection, dispatch_id: str) -> Assignment | None:
    cursor = conn.cursor()
    try:
        return _get(cursor, dispatch_id)
    finally:
        cursor.close()


def set_on_duty(conn: db.Connection, unit_ids: list[str], on_duty: bool) -> list[str]:
    """Take units off duty (or back on). A unit on an assignment finishes it first: it is
    simply not offered new ones. Returns the units that changed."""

    def work(cursor: db.Cursor) -> list[str]:
        cursor.execute(
            "SELECT unit_id, on_duty FROM police_units WHERE unit_id IN"
            f" ({', '.join(['%s'] * len(unit_ids))}) FOR UPDATE",
            unit_ids,
        )
        found = dict(cursor.fetchall())
        missing = [u for u in unit_ids if u not in found]
        if missing:
            raise UserError(
                f"no police unit {missing[0]!r} in the registry",
                hint="`casatwin dispatch status` lists the units; `casatwin registry load` "
                "loads the city pack's units",
            )
        changed = [u for u in unit_ids if bool(found[u]) != on_duty]
        if changed:
            cursor.execute(
                f"UPDATE police_units SET on_duty = %s WHERE unit_id IN"
                f" ({', '.join(['%s'] * len(changed))})",
                [on_duty, *changed],
            )
        return changed

    return db.transaction(conn, work)


@dataclass(frozen=True)
class UnitState:
    unit_id: str
    station_id: str
    on_duty: bool
    dispatch_id: str | None
    status: str  # available, off_duty, or the open assignment's status
    busy_since_ms: int | None


def units(conn: db.Connection) -> list[UnitState]:
    cursor = conn.cursor()
    try:
        cursor.execute(
            "SELECT p.unit_id, p.station_id, p.on_duty, d.dispatch_id, d.status, d.assigned_ms"
            " FROM police_units p LEFT JOIN dispatch_assignments d ON d.open_unit = p.unit_id"
            " WHERE p.active ORDER BY p.station_id, p.unit_id"
        )
        out = []
        for unit_id, station, on_duty, dispatch_id, status, since in cursor.fetchall():
            label = status or ("available" if on_duty else "off_duty")
            out.append(UnitState(unit_id, station, bool(on_duty), dispatch_id, label, since))
        return out
    finally:
        cursor.close()


def open_incidents(conn: db.Connection, limit: int = 100) -> list[Assignment]:
    """Queued and open assignments, queue first in the order it is served."""
    cursor = conn.cursor()
    try:
        cursor.execute(
            f"SELECT {_ASSIGNMENT_COLUMNS} FROM dispatch_assignments"
            " WHERE status IN ('queued', 'assigned', 'en_route', 'on_scene')"
            " ORDER BY status <> 'queued', severity, created_ms LIMIT %s",
            (limit,),
        )
        return [Assignment(*row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def queue_length(conn: db.Connection) -> int:
    cursor = conn.cursor()
    try:
        return int(
            db.scalar(cursor, "SELECT COUNT(*) FROM dispatch_assignments WHERE status = 'queued'")
        )
    finally:
        cursor.close()
