"""Driver identities stay private: public views see them masked.

Only logged-in operators see a driver's name, CIN and licence, through an audited API call;
the live feed, the kiosk and anonymous users get :func:`public_infraction`. Masking works by
allow-list: a field not known to be harmless is masked, so a field the processor adds
tomorrow (a phone number, an address) is private until someone decides otherwise.
"""

from __future__ import annotations

from typing import Any

MASK = "•••"

# Facts about the licence that say nothing about who the driver is.
PUBLIC_DRIVER_FIELDS = frozenset(
    {
        "points",
        "points_before",
        "points_after",
        "points_balance",
        "status",
        "licence_status",
        "licence_category",
        "category",
        "probation",
        "on_probation",
        "found",
    }
)

# What is painted on a vehicle or visible in the street.
PUBLIC_VEHICLE_FIELDS = frozenset(
    {"vehicle_id", "id", "plate", "kind", "category", "make", "model", "colour", "color"}
)


def mask_text(value: str, keep: int = 1) -> str:
    """``"Karim"`` → ``"K•••"``: enough to tell two records apart, not to identify anyone."""
    value = value.strip()
    return value[:keep] + MASK if value else ""


def mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return MASK
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    return value


def mask_fields(record: Any, public: frozenset[str]) -> Any:
    if not isinstance(record, dict):
        return record
    return {k: v if k in public else mask_value(v) for k, v in record.items()}


def public_infraction(infraction: dict[str, Any]) -> dict[str, Any]:
    """The infraction as anyone may see it: driver identity and vehicle owner masked."""
    out = dict(infraction)
    out.pop("_id", None)
    if "driver" in out:
        out["driver"] = mask_fields(out["driver"], PUBLIC_DRIVER_FIELDS)
    if "vehicle" in out:
        out["vehicle"] = mask_fields(out["vehicle"], PUBLIC_VEHICLE_FIELDS)
    out["identity"] = "masked"
    return out


def operator_infraction(infraction: dict[str, Any]) -> dict[str, Any]:
    """The infraction with the identity, for an operator (the caller writes the audit row)."""
    out = dict(infraction)
    out.pop("_id", None)
    out["identity"] = "shown"
    return out


def driver_reference(infraction: dict[str, Any]) -> str:
    """What the audit log records as the driver whose identity was shown."""
    driver = infraction.get("driver") or {}
    for key in ("driver_id", "cin", "licence_number", "licence"):
        if driver.get(key):
            return f"{key}:{driver[key]}"
    return ""
