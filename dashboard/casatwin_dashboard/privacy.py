"""Driver identities stay private: public views identify nobody.

The infraction messages and the read model carry no identity, only a pseudonymous driver
reference. Anonymous users, the live feed and the kiosk get :func:`public_infraction`: what an
operations room needs (what, where, when, the offence's class and fine, whether a unit is
needed), without the driver's reference, points or licence status, and with plates masked
except a police vehicle's. A logged-in operator gets :func:`operator_infraction`: the full
record plus the identity that the dashboard read from the ledger after writing the audit row.
Everything works by allow-list: a field not known to be harmless is left out, so a field the
processor adds tomorrow is private until someone decides otherwise.
"""

from __future__ import annotations

from typing import Any

MASK = "•••"

# What the law attaches to the offence itself, the same for every driver. Left out: the
# driver's points before and after, licence status, probation and the court reasons that
# come from the driver's record.
PUBLIC_DECISION_FIELDS = frozenset(
    {
        "class",
        "fine_mad",
        "reduced_24h",
        "reduced_15d",
        "points",
        "court",
        "legal_basis",
        "rule",
        "rule_book",
        "delit",
        "settlement_offered",
        "court_range_mad",
        "dispatch_required",
    }
)

# What an infraction message says besides the vehicle, the driver and the decision.
PUBLIC_INFRACTION_FIELDS = frozenset(
    {
        "infraction_id",
        "type",
        "event_ts",
        "evidence_ts",
        "detected_ts",
        "published_ts",
        "lat",
        "lon",
        "measured",
        "limit",
        "dispatch_required",
        "segment_id",
        "intersection_id",
        "zone_id",
        "parking_kind",
        "district",
    }
)

# Vehicles whose plate and id may be shown to anyone: the police's own.
PUBLIC_PLATE_KINDS = frozenset({"police"})


def mask_text(value: str, keep: int = 1) -> str:
    """``"Karim"`` → ``"K•••"``: enough to tell two records apart, not to identify anyone."""
    value = value.strip()
    return value[:keep] + MASK if value else ""


def public_vehicle(vehicle: dict[str, Any]) -> dict[str, Any]:
    """The kind of vehicle; its plate masked (``"12•••"``), shown whole for the police."""
    kind = vehicle.get("kind")
    out: dict[str, Any] = {"kind": kind} if kind else {}
    plate = vehicle.get("plate")
    if kind in PUBLIC_PLATE_KINDS:
        out.update({k: vehicle[k] for k in ("vehicle_id", "plate") if vehicle.get(k)})
    elif isinstance(plate, str) and plate:
        out["plate"] = mask_text(plate, keep=2)
    return out


def public_infraction(infraction: dict[str, Any]) -> dict[str, Any]:
    """The infraction as anyone may see it (allow-listed; see the module doc)."""
    out = {k: v for k, v in infraction.items() if k in PUBLIC_INFRACTION_FIELDS}
    vehicle = infraction.get("vehicle") or {}
    out["vehicle"] = public_vehicle(vehicle)
    if vehicle.get("kind") in PUBLIC_PLATE_KINDS and "vehicle_id" in infraction:
        out["vehicle_id"] = infraction["vehicle_id"]
    decision = infraction.get("decision") or {}
    out["decision"] = {k: v for k, v in decision.items() if k in PUBLIC_DECISION_FIELDS}
    out["driver"] = {"on_record": bool((infraction.get("driver") or {}).get("ref"))}
    out["identity"] = "masked"
    return out


def operator_infraction(
    infraction: dict[str, Any], driver: dict[str, Any], owner: str
) -> dict[str, Any]:
    """The infraction with the identity the ledger gave (the caller wrote the audit row)."""
    out = {k: v for k, v in infraction.items() if k != "_id"}
    out["driver"] = {**(infraction.get("driver") or {}), **driver}
    out["vehicle"] = {**(infraction.get("vehicle") or {}), **({"owner": owner} if owner else {})}
    out["identity"] = "shown"
    return out


def driver_reference(infraction: dict[str, Any]) -> str:
    """What the audit log records as the driver whose identity was shown: the pseudonym."""
    return str((infraction.get("driver") or {}).get("ref") or "")
