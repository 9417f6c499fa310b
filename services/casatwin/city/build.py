"""Build city packs: roads in, a validated graph with signal plans out.

:class:`PackBuilder` is shared by every source of a pack — the hand-drawn Casablanca sketch,
an OpenStreetMap import and the small synthetic grids of the tests — so that all packs get
the same densification, the same signal plans and the same ids.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from casatwin.city.geometry import LocalProjection, angle_diff_deg, bearing_deg, haversine_m
from casatwin.city.model import FORMAT

STOP_LINE_SETBACK_M = 8.0
YELLOW_S = 3.0
ALL_RED_S = 2.0
MIN_GREEN_S = 12.0
PROGRESSION_SPEED_MS = 50 / 3.6  # green waves are timed for 50 km/h

# Signal cycle by the most important road class meeting at the junction.
CYCLE_BY_CLASS = {"motorway": 100.0, "arterial": 90.0, "street": 60.0, "centre": 70.0}
CLASS_WEIGHT = {"motorway": 3.0, "arterial": 2.0, "centre": 1.5, "street": 1.0}


@dataclass
class PackBuilder:
    """Accumulates roads as directed segments between shared nodes."""

    name: str
    title: str
    bounds: tuple[float, float, float, float]  # south, west, north, east
    attribution: str = ""
    max_segment_m: float = 250.0
    snap_m: float = 3.0  # points closer than this become one node
    nodes: dict[str, tuple[float, float]] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)
    _pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    _grid: dict[tuple[int, int], list[str]] = field(default_factory=dict)

    @property
    def projection(self) -> LocalProjection:
        south, west, north, east = self.bounds
        return LocalProjection((south + north) / 2, (west + east) / 2)

    # -- nodes -----------------------------------------------------------------------------

    def node(self, lat: float, lon: float) -> str:
        """The id of the node at (lat, lon), created unless one lies within ``snap_m``."""
        x, y = self.projection.to_xy(lat, lon)
        cell = (int(x // 50), int(y // 50))
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for node_id in self._grid.get((cell[0] + dx, cell[1] + dy), []):
                    nlat, nlon = self.nodes[node_id]
                    if haversine_m(lat, lon, nlat, nlon) <= self.snap_m:
                        return node_id
        node_id = f"n{len(self.nodes) + 1:05d}"
        self.nodes[node_id] = (round(float(lat), 6), round(float(lon), 6))
        self._grid.setdefault(cell, []).append(node_id)
        return node_id

    # -- roads -----------------------------------------------------------------------------

    def add_road(
        self,
        road: str,
        points: list[tuple[float, float]],
        road_class: str,
        limit_kmh: float,
        oneway: bool = False,
        lanes: int = 2,
    ) -> list[str]:
        """Add a road through ``points`` (lat, lon); returns the node ids along it.

        Legs longer than ``max_segment_m`` are split evenly. A two-way road gets a segment
        in each direction; a one-way road only in the direction of ``points``.
        """
        path: list[str] = []
        for (lat1, lon1), (lat2, lon2) in itertools.pairwise(points):
            length = float(haversine_m(lat1, lon1, lat2, lon2))
            # a leg a hair over the maximum (coordinates are rounded to 0.1 m) is not split again
            pieces = max(1, int(np.ceil(length / self.max_segment_m - 0.05)))
            for k in range(pieces + 1):
                if path and k == 0:
                    continue
                f = k / pieces
                node_id = self.node(lat1 + (lat2 - lat1) * f, lon1 + (lon2 - lon1) * f)
                if not path or path[-1] != node_id:
                    path.append(node_id)
        for a, b in itertools.pairwise(path):
            self._add_segment(a, b, road, road_class, limit_kmh, oneway, lanes)
            if not oneway:
                self._add_segment(b, a, road, road_class, limit_kmh, oneway, lanes)
        return path

    def _add_segment(
        self, a: str, b: str, road: str, road_class: str, limit_kmh: float, oneway: bool, lanes: int
    ) -> None:
        if (a, b) in self._pairs:  # two roads sharing a stretch: the first one keeps it
            return
        self._pairs[(a, b)] = len(self.segments)
        self.segments.append(
            {
                "id": f"s{len(self.segments) + 1:05d}",
                "from": a,
                "to": b,
                "road": road,
                "class": road_class,
                "limit_kmh": limit_kmh,
                "oneway": oneway,
                "lanes": lanes,
            }
        )

    # -- signals ---------------------------------------------------------------------------

    def incoming(self, node_id: str) -> list[dict[str, Any]]:
        return [s for s in self.segments if s["to"] == node_id]

    def segment_bearing(self, seg: dict[str, Any]) -> float:
        (lat1, lon1), (lat2, lon2) = self.nodes[seg["from"]], self.nodes[seg["to"]]
        return float(bearing_deg(lat1, lon1, lat2, lon2))

    def signal_plan(self, node_id: str) -> dict[str, Any] | None:
        """A two-phase fixed-time plan for a junction, or None if it has one axis only.

        Approaches are grouped by axis (opposite directions share a phase); green is split
        in proportion to the importance of the roads; the offset makes a green wave along
        the x axis at 50 km/h.
        """
        approaches = self.incoming(node_id)
        if len(approaches) < 2:
            return None
        bearings = [self.segment_bearing(s) for s in approaches]
        weights = [CLASS_WEIGHT[s["class"]] * s["lanes"] for s in approaches]
        main = int(np.argmax(weights))
        axis = bearings[main] % 180.0
        phase_a, phase_b = [], []
        for seg, b in zip(approaches, bearings):
            (
                phase_a
                if angle_diff_deg(b % 180.0, axis) <= 45 or angle_diff_deg(b % 180.0, axis) >= 135
                else phase_b
            ).append(seg)
        if not phase_b:
            return None
        cycle = max(CYCLE_BY_CLASS[s["class"]] for s in approaches)
        green_total = cycle - 2 * (YELLOW_S + ALL_RED_S)
        weight_a = max(CLASS_WEIGHT[s["class"]] * s["lanes"] for s in phase_a)
        weight_b = max(CLASS_WEIGHT[s["class"]] * s["lanes"] for s in phase_b)
        green_a = round(max(MIN_GREEN_S, green_total * weight_a / (weight_a + weight_b)))
        green_a = min(green_a, green_total - MIN_GREEN_S)
        green_b = green_total - green_a
        x, _ = self.projection.to_xy(*self.nodes[node_id])
        offset = round(float(x) / PROGRESSION_SPEED_MS) % cycle
        return {
            "cycle_s": cycle,
            "offset_s": float(offset),
            "yellow_s": YELLOW_S,
            "all_red_s": ALL_RED_S,
            "phases": [
                {"name": "A", "green_s": float(green_a), "approaches": [s["id"] for s in phase_a]},
                {"name": "B", "green_s": float(green_b), "approaches": [s["id"] for s in phase_b]},
            ],
        }

    def stop_line(self, seg: dict[str, Any]) -> list[float]:
        """A point on the approach, ``STOP_LINE_SETBACK_M`` before the junction."""
        (lat1, lon1), (lat2, lon2) = self.nodes[seg["from"]], self.nodes[seg["to"]]
        length = float(haversine_m(lat1, lon1, lat2, lon2))
        f = max(0.5, 1.0 - STOP_LINE_SETBACK_M / length) if length > 0 else 1.0
        return [round(lat1 + (lat2 - lat1) * f, 6), round(lon1 + (lon2 - lon1) * f, 6)]

    def intersection(self, node_id: str, name: str, number: int) -> dict[str, Any] | None:
        """A signalised intersection record for ``node_id``, or None if it cannot have one."""
        plan = self.signal_plan(node_id)
        if plan is None:
            return None
        return {
            "id": f"i{number:03d}",
            "name": name,
            "node": node_id,
            "plan": plan,
            "stop_lines": {s["id"]: self.stop_line(s) for s in self.incoming(node_id)},
        }

    # -- output ----------------------------------------------------------------------------

    def pack(self, **features: Any) -> dict[str, Any]:
        """The raw pack (validate it with :func:`casatwin.city.load.from_dict`)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "title": self.title,
            "attribution": self.attribution,
            "bounds": list(self.bounds),
            "nodes": {k: list(v) for k, v in self.nodes.items()},
            "segments": self.segments,
            "intersections": features.get("intersections", []),
            "no_parking_zones": features.get("no_parking_zones", []),
            "police_stations": features.get("police_stations", []),
            "highway_stations": features.get("highway_stations", []),
            "landmarks": features.get("landmarks", []),
        }
