"""Messages the load test publishes or seeds (contract-valid, recognisable: ids ``load-...``)."""

from __future__ import annotations

import random
import uuid
from typing import Any

from casatwin.fleet import taxi_id, taxi_kind

# Casablanca's centre, for positions that land on the map.
LAT, LON = 33.5731, -7.5898


def infraction(now_ms: int) -> dict[str, Any]:
    """A contract-valid infraction that happened ``now``."""
    n = random.randrange(500)
    return {
        "infraction_id": f"load-{uuid.uuid4().hex[:12]}",
        "type": "speeding",
        "event_ts": now_ms,
        "detected_ts": now_ms,
        "published_ts": now_ms,
        "lat": LAT + random.uniform(-0.03, 0.03),
        "lon": LON + random.uniform(-0.04, 0.04),
        "measured": 88.0,
        "limit": 60.0,
        "vehicle": {"vehicle_id": taxi_id(n), "plate": f"{10000 + n}-A-6", "kind": taxi_kind(n)},
        "driver": {"driver_id": n, "cin": f"LT{n:06d}", "first_name": "Load",
                   "last_name": "Test", "licence_number": f"06/{n:06d}",
                   "points_before": 30, "points_after": 26},
        "decision": {"class": 1, "fine_mad": 700, "reduced_24h": 400, "reduced_15d": 500,
                     "points": 4, "court": False, "legal_basis": "Art. 219, loi 52-05"},
        "dispatch_required": False,
    }  # fmt: skip
