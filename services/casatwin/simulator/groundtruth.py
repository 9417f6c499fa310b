"""Ground truth: the infractions the scripted vehicles really committed, as published.

End-to-end tests compare what the processor detects with this list. It is built from
what the outside world can see — the published fixes (speeding is judged fix by fix,
as a detector would) — and from the exact events of the simulation (the moment a stop
line is crossed on red; when a vehicle parks and leaves inside a no-parking zone).

Records (JSON objects, times in epoch ms):

``speeding``         vehicle_id, segment_id, road, lat, lon, event_ts (the fix with the
                     largest excess), start_ts, end_ts, fixes, measured (km/h), limit
``red_light``        vehicle_id, intersection_id, intersection, segment_id (approach),
                     lat, lon (stop line), event_ts (crossing), measured (seconds the light
                     had been red), limit (0), speed_kmh, phase_colour ("red")
``illegal_parking``  vehicle_id, zone_id, zone, parking_kind, lat, lon, event_ts (parked
                     at), start_ts, end_ts (left; absent while still parked), measured
                     (seconds parked so far), limit (0: no stop allowed)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from casatwin.city.geometry import points_in_polygon
from casatwin.city.signals import RED
from casatwin.simulator.telemetry import Fix
from casatwin.simulator.traffic import Fleet, FleetEvent


@dataclass
class _Episode:
    start_ts: int
    end_ts: int
    fixes: int
    excess: float
    record: dict[str, Any]


@dataclass
class GroundTruth:
    """Collects the infractions of the ``tracked`` vehicles."""

    fleet: Fleet
    tracked: set[int]
    records: list[dict[str, Any]] = field(default_factory=list)
    _speeding: dict[int, _Episode] = field(default_factory=dict)
    _parked: dict[int, dict[str, Any]] = field(default_factory=dict)

    def observe_fixes(self, fix: Fix) -> None:
        """Speeding, fix by fix: consecutive fixes over the limit make one episode."""
        if not self.tracked:
            return
        net = self.fleet.net
        for k in np.flatnonzero(np.isin(fix.vehicles, list(self.tracked))):
            vehicle = int(fix.vehicles[k])
            seg = int(fix.segment[k])
            speed = round(float(fix.speed_kmh[k]), 1)
            limit = float(net.pack.seg_limit_kmh[seg])
            episode = self._speeding.get(vehicle)
            if speed <= limit:
                if episode is not None:
                    self._close_speeding(vehicle)
                continue
            if episode is None:
                episode = _Episode(fix.ts_ms, fix.ts_ms, 0, -1.0, {})
                self._speeding[vehicle] = episode
            episode.end_ts = fix.ts_ms
            episode.fixes += 1
            if speed - limit > episode.excess:
                episode.excess = speed - limit
                episode.record = {
                    "type": "speeding",
                    "vehicle_id": self.fleet.ids[vehicle],
                    "segment_id": net.pack.segment_ids[seg],
                    "road": net.pack.seg_road[seg],
                    "lat": round(float(fix.lat[k]), 6),
                    "lon": round(float(fix.lon[k]), 6),
                    "event_ts": fix.ts_ms,
                    "measured": speed,
                    "limit": limit,
                }

    def observe_events(self, events: list[FleetEvent]) -> None:
        for event in events:
            if event.vehicle not in self.tracked:
                continue
            if event.kind == "red_crossing":
                self._red_light(event)
            elif event.kind == "parked":
                self._parking_started(event)
            elif event.kind == "unparked":
                record = self._parked.pop(event.vehicle, None)
                if record is not None:
                    record["end_ts"] = _ms(event.t_s)
                    record["measured"] = round((record["end_ts"] - record["start_ts"]) / 1000, 1)

    def snapshot(self, now_ms: int) -> list[dict[str, Any]]:
        """Every record so far, in time order; episodes still going on are included as
        they stand at ``now_ms``."""
        out = [dict(r) for r in self.records]
        out += [self._speeding_record(e) for e in self._speeding.values()]
        for record in out:
            if record["type"] == "illegal_parking" and "end_ts" not in record:
                record["measured"] = round((now_ms - record["start_ts"]) / 1000, 1)
        return sorted(out, key=lambda r: (r["event_ts"], r["vehicle_id"]))

    def _close_speeding(self, vehicle: int) -> None:
        self.records.append(self._speeding_record(self._speeding.pop(vehicle)))

    @staticmethod
    def _speeding_record(episode: _Episode) -> dict[str, Any]:
        return {
            **episode.record,
            "start_ts": episode.start_ts,
            "end_ts": episode.end_ts,
            "fixes": episode.fixes,
        }

    def _red_light(self, event: FleetEvent) -> None:
        pack = self.fleet.net.pack
        intersection = pack.intersections[event.intersection]
        lat, lon = self.fleet.net.latlon(np.array([event.segment]), np.array([event.offset_m]))
        red_for_s = _red_for_s(self.fleet, event.segment, event.t_s)
        self.records.append(
            {
                "type": "red_light",
                "vehicle_id": event.vehicle_id,
                "intersection_id": intersection.id,
                "intersection": intersection.name,
                "segment_id": pack.segment_ids[event.segment],
                "lat": round(float(lat[0]), 6),
                "lon": round(float(lon[0]), 6),
                "event_ts": _ms(event.t_s),
                "measured": round(red_for_s, 1),
                "limit": 0.0,
                "speed_kmh": round(event.speed_ms * 3.6, 1),
                "phase_colour": "red",
            }
        )

    def _parking_started(self, event: FleetEvent) -> None:
        net = self.fleet.net
        lat, lon = net.latlon(np.array([event.segment]), np.array([event.offset_m]))
        x, y = net.pack.projection.to_xy(lat, lon)
        for zone in net.pack.no_parking_zones:
            zx, zy = net.pack.projection.to_xy(
                [p[0] for p in zone.polygon], [p[1] for p in zone.polygon]
            )
            if points_in_polygon(x, y, zx, zy)[0]:
                record = {
                    "type": "illegal_parking",
                    "vehicle_id": event.vehicle_id,
                    "zone_id": zone.id,
                    "zone": zone.name,
                    "parking_kind": zone.parking_kind,
                    "lat": round(float(lat[0]), 6),
                    "lon": round(float(lon[0]), 6),
                    "event_ts": _ms(event.t_s),
                    "start_ts": _ms(event.t_s),
                    "measured": 0.0,
                    "limit": 0.0,
                }
                self.records.append(record)
                self._parked[event.vehicle] = record
                return


def _ms(t_s: float) -> int:
    return round(t_s * 1000)


def _red_for_s(fleet: Fleet, segment: int, t_s: float) -> float:
    """How long the approach's light had been red at ``t_s`` (tenth of a second)."""
    table = fleet.net.signals
    back = t_s - np.arange(0.0, float(table.cycle_s[segment]), 0.1)
    still_red = table.colour(np.full(len(back), segment), back) == RED
    return (
        float(np.argmin(still_red) * 0.1) if not still_red.all() else float(table.cycle_s[segment])
    )
