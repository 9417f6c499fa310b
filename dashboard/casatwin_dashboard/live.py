"""What the screens show besides positions: infractions, police units, congestion, the plot.

A pure reducer: messages from the topics go in (already validated), the public shapes the
WebSocket carries come out. The same code serves the replay at start and the live stream,
so a restarted dashboard shows what a running one would. Time is a parameter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from casatwin_dashboard.privacy import public_infraction

MINUTE_MS = 60_000
ACTIVE_STATUSES = frozenset({"queued", "assigned", "en_route", "on_scene"})
CONGESTED_LEVELS = frozenset({"moderate", "severe"})


def unit_state(unit_id: str, station: str = "") -> dict[str, Any]:
    return {
        "unit_id": unit_id,
        "station": station,
        "status": "available",
        "dispatch_id": None,
        "infraction_id": None,
        "ts": None,
        "eta_s": None,
        "route": [],
    }


@dataclass
class LiveState:
    recent_max: int = 200
    history_minutes: int = 60
    infractions: deque[dict[str, Any]] = field(default_factory=deque)
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    congestion: dict[str, dict[str, Any]] = field(default_factory=dict)  # key → latest window
    infractions_per_minute: dict[int, int] = field(default_factory=dict)
    congested_per_minute: dict[int, int] = field(default_factory=dict)
    _seen_infractions: set[str] = field(default_factory=set)

    @classmethod
    def with_units(cls, units: dict[str, str], **kwargs: Any) -> LiveState:
        """A state knowing the police units of the city pack (unit id → station name)."""
        state = cls(**kwargs)
        for unit_id, station in units.items():
            state.units[unit_id] = unit_state(unit_id, station)
        return state

    # -- infractions -----------------------------------------------------------------------

    def add_infractions(self, infractions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The new infractions in their public form (a replayed duplicate is ignored)."""
        out = []
        for infraction in infractions:
            infraction_id = infraction["infraction_id"]
            if infraction_id in self._seen_infractions:
                continue
            public = public_infraction(infraction)
            self.infractions.append(public)
            self._seen_infractions.add(infraction_id)
            while len(self.infractions) > self.recent_max:
                self._seen_infractions.discard(self.infractions.popleft()["infraction_id"])
            minute = infraction["event_ts"] // MINUTE_MS
            self.infractions_per_minute[minute] = self.infractions_per_minute.get(minute, 0) + 1
            out.append(public)
        return out

    def recent_infractions(self) -> list[dict[str, Any]]:
        """Newest last, as they arrived."""
        return list(self.infractions)

    # -- dispatch --------------------------------------------------------------------------

    def add_dispatch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The units whose state changed, in their new state."""
        changed: dict[str, dict[str, Any]] = {}
        for event in events:
            unit = self.units.setdefault(event["unit_id"], unit_state(event["unit_id"]))
            if unit["ts"] is not None and event["ts"] < unit["ts"]:
                continue  # an older step arriving late does not rewind the unit
            active = event["status"] in ACTIVE_STATUSES
            unit.update(
                status=event["status"] if active else "available",
                dispatch_id=event["dispatch_id"] if active else None,
                infraction_id=event["infraction_id"] if active else None,
                ts=event["ts"],
                eta_s=event.get("eta_s") if active else None,
                route=(event.get("route") or unit["route"]) if active else [],
            )
            changed[unit["unit_id"]] = unit
        return list(changed.values())

    def units_available(self) -> int:
        return sum(1 for u in self.units.values() if u["status"] == "available")

    # -- congestion ------------------------------------------------------------------------

    def add_congestion(self, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The windows that are now the latest of their key, in a compact form."""
        changed: dict[str, dict[str, Any]] = {}
        for window in sorted(windows, key=lambda w: w["window_end"]):
            key = f"{window['scope']}:{window['key']}"
            current = self.congestion.get(key)
            if current is not None and window["window_end"] < current["window_end"]:
                continue
            compact = {
                "key": window["key"],
                "scope": window["scope"],
                "level": window["level"],
                "avg_speed_kmh": round(float(window["avg_speed_kmh"]), 1),
                "count": window["count"],
                "anomaly": window["anomaly"],
                "window_start": window["window_start"],
                "window_end": window["window_end"],
            }
            self.congestion[key] = compact
            changed[key] = compact
            minute = window["window_end"] // MINUTE_MS
            self.congested_per_minute[minute] = self.congested_count()
        return list(changed.values())

    def congested_count(self) -> int:
        return sum(1 for w in self.congestion.values() if w["level"] in CONGESTED_LEVELS)

    # -- the plot --------------------------------------------------------------------------

    def history(self, now_ms: int) -> dict[str, Any]:
        """Per-minute infractions and congested places over the last ``history_minutes``.

        Congestion is a level, not an event: a minute without a new window carries the
        previous minute's count forward.
        """
        last = now_ms // MINUTE_MS
        first = last - self.history_minutes + 1
        for series in (self.infractions_per_minute, self.congested_per_minute):
            for minute in [m for m in series if m < first - 1]:
                del series[minute]
        infractions = [self.infractions_per_minute.get(m, 0) for m in range(first, last + 1)]
        carried = self.congested_per_minute.get(first - 1, 0)
        earlier = [m for m in self.congested_per_minute if m < first]
        if earlier:
            carried = self.congested_per_minute[max(earlier)]
        congested = []
        for m in range(first, last + 1):
            carried = self.congested_per_minute.get(m, carried)
            congested.append(carried)
        return {"start_ms": first * MINUTE_MS, "infractions": infractions, "congested": congested}

    def infractions_last_minute(self, now_ms: int) -> int:
        """Infractions whose event time is within the last 60 s (by whole minutes, weighted)."""
        minute, into = divmod(now_ms, MINUTE_MS)
        current = self.infractions_per_minute.get(minute, 0)
        previous = self.infractions_per_minute.get(minute - 1, 0)
        return round(current + previous * (1 - into / MINUTE_MS))
