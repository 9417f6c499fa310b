"""Build city packs: roads in, a validated graph with signal plans out.

:class:`PackBuilder` is shared by every source of a pack — the hand-drawn Casablanca sketch
(:mod:`casatwin.city.sketch`), an OpenStreetMap import (:mod:`casatwin.city.osm`) and the
small synthetic grids of the tests — so that all packs get the same densification, the
same signal plans and the same ids.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from casatwin.city.geometry import (
    LocalProjection,
    angle_diff_deg,
    bearing_deg,
    haversine_m,
    project_on_segments,
)
from casatwin.city.model import FORMAT

STOP_LINE_SETBACK_M = 8.0
YELLOW_S = 3.0
ALL_RED_S = 2.0
MIN_GREEN_S = 12.0
MAX_PHASES = 4
SAME_AXIS_DEG = 40.0  # approaches whose axes differ by less than this can share a green
PROGRESSION_SPEED_MS = 50 / 3.6  # green waves are timed for 50 km/h
PHASE_NAMES = "ABCD"

# Speed limits and lanes (per direction) of a road class when its source says nothing.
DEFAULT_LIMITS_KMH = {"motorway": 100.0, "arterial": 60.0, "street": 60.0, "centre": 40.0}
DEFAULT_LANES = {"motorway": 3, "arterial": 2, "street": 1, "centre": 1}

# Signal cycle by the most important road class meeting at the junction.
CYCLE_BY_CLASS = {"motorway": 100.0, "arterial": 90.0, "street": 60.0, "centre": 70.0}
CLASS_WEIGHT = {"motorway": 3.0, "arterial": 2.0, "centre": 1.5, "street": 1.0}


def slug(text: str) -> str:
    """``"Maârif"`` → ``"maarif"``: ascii, lower case, words joined by dashes (for ids)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`PackBuilder.keep_largest_component` dropped."""

    kept_nodes: int
    kept_segments: int
    dropped_nodes: int
    dropped_segments: int
    dropped_roads: tuple[str, ...]  # roads left without any segment

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept_nodes": self.kept_nodes,
            "kept_segments": self.kept_segments,
            "dropped_nodes": self.dropped_nodes,
            "dropped_segments": self.dropped_segments,
            "dropped_roads": list(self.dropped_roads),
        }


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
    _incoming: dict[str, list[int]] = field(default_factory=dict)
    _nearest: tuple[Any, list[str], Any] | None = None  # KD-tree cache of nearest_node

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

    def nearest_node(self, lat: float, lon: float, road_classes: tuple[str, ...] = ()) -> str:
        """The node nearest to (lat, lon); with ``road_classes``, only nodes on such roads."""
        key = (road_classes, len(self.nodes), len(self.segments))
        if self._nearest is None or self._nearest[0] != key:
            if road_classes:
                allowed = {s["from"] for s in self.segments if s["class"] in road_classes}
                candidates = [n for n in self.nodes if n in allowed]
            else:
                candidates = list(self.nodes)
            coords = np.array([self.nodes[n] for n in candidates], dtype=float)
            x, y = self.projection.to_xy(coords[:, 0], coords[:, 1])
            self._nearest = (key, candidates, cKDTree(np.column_stack([x, y])))
        _, candidates, tree = self._nearest
        _, i = tree.query(np.array(self.projection.to_xy(lat, lon), dtype=float))
        return candidates[int(i)]

    def nearest_segment(
        self, lat: float, lon: float, road_class: str
    ) -> tuple[dict[str, Any], tuple[float, float], float]:
        """The ``road_class`` segment nearest to (lat, lon): (segment, foot point, distance m)."""
        segs = [s for s in self.segments if s["class"] == road_class]
        if not segs:
            raise ValueError(f"no {road_class} segment")
        proj = self.projection
        a = np.array([self.nodes[s["from"]] for s in segs], dtype=float)
        b = np.array([self.nodes[s["to"]] for s in segs], dtype=float)
        ax, ay = proj.to_xy(a[:, 0], a[:, 1])
        bx, by = proj.to_xy(b[:, 0], b[:, 1])
        px, py = proj.to_xy(lat, lon)
        t, d = project_on_segments(px, py, ax, ay, bx, by)
        best = int(np.argmin(d))
        foot = proj.to_latlon(
            ax[best] + t[best] * (bx[best] - ax[best]), ay[best] + t[best] * (by[best] - ay[best])
        )
        return segs[best], (round(float(foot[0]), 6), round(float(foot[1]), 6)), float(d[best])

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
        self._incoming.setdefault(b, []).append(len(self.segments))
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

    # -- topology --------------------------------------------------------------------------

    def components(self) -> tuple[list[str], np.ndarray]:
        """(node ids, strongly connected component label of each node)."""
        ids = list(self.nodes)
        index = {n: i for i, n in enumerate(ids)}
        src = [index[s["from"]] for s in self.segments]
        dst = [index[s["to"]] for s in self.segments]
        graph = csr_matrix((np.ones(len(src)), (src, dst)), shape=(len(ids), len(ids)))
        _, labels = connected_components(graph, directed=True, connection="strong")
        return ids, labels

    def keep_largest_component(self) -> PruneReport:
        """Drop everything outside the largest strongly connected part; renumber the ids.

        Imports need this: an extract cut at its edges leaves one-way stubs and islands
        that a vehicle could enter and never leave.
        """
        ids, labels = self.components()
        main = int(np.bincount(labels).argmax()) if len(ids) else 0
        keep = {n for n, label in zip(ids, labels) if label == main}
        roads_before = {s["road"] for s in self.segments}
        kept_segs = [s for s in self.segments if s["from"] in keep and s["to"] in keep]
        dropped_segments = len(self.segments) - len(kept_segs)
        rename = {}
        for n in ids:
            if n in keep:
                rename[n] = f"n{len(rename) + 1:05d}"
        old_nodes = self.nodes
        self.nodes, self.segments = {}, []
        self._pairs, self._grid, self._incoming = {}, {}, {}
        for old, new in rename.items():
            lat, lon = old_nodes[old]
            self.nodes[new] = (lat, lon)
            x, y = self.projection.to_xy(lat, lon)
            self._grid.setdefault((int(x // 50), int(y // 50)), []).append(new)
        for s in kept_segs:
            self._add_segment(
                rename[s["from"]],
                rename[s["to"]],
                s["road"],
                s["class"],
                s["limit_kmh"],
                s["oneway"],
                s["lanes"],
            )
        roads_after = {s["road"] for s in self.segments}
        return PruneReport(
            kept_nodes=len(self.nodes),
            kept_segments=len(self.segments),
            dropped_nodes=len(ids) - len(self.nodes),
            dropped_segments=dropped_segments,
            dropped_roads=tuple(sorted(roads_before - roads_after)),
        )

    # -- signals ---------------------------------------------------------------------------

    def incoming(self, node_id: str) -> list[dict[str, Any]]:
        return [self.segments[i] for i in self._incoming.get(node_id, [])]

    def segment_bearing(self, seg: dict[str, Any]) -> float:
        (lat1, lon1), (lat2, lon2) = self.nodes[seg["from"]], self.nodes[seg["to"]]
        return float(bearing_deg(lat1, lon1, lat2, lon2))

    def signal_phases(self, node_id: str) -> list[list[dict[str, Any]]]:
        """The approaches of a junction grouped into phases that may be green together.

        Approaches along one axis (coming from opposite sides) share a phase. The heaviest
        approach opens the first phase; every other joins the first phase whose axis is
        within ``SAME_AXIS_DEG`` of its own, or opens a new one. A crossroads gets two
        phases, a Y-junction or a five-way square three or four.
        """
        approaches = self.incoming(node_id)
        weights = [CLASS_WEIGHT[s["class"]] * s["lanes"] for s in approaches]
        order = sorted(range(len(approaches)), key=lambda i: (-weights[i], i))
        phases: list[tuple[float, list[int]]] = []  # (axis of the phase, approach positions)
        for i in order:
            axis = self.segment_bearing(approaches[i]) % 180.0
            for phase_axis, members in phases:
                if float(angle_diff_deg(axis * 2, phase_axis * 2)) / 2 <= SAME_AXIS_DEG:
                    members.append(i)
                    break
            else:
                phases.append((axis, [i]))
        return [[approaches[i] for i in sorted(members)] for _, members in phases]

    def signal_plan(self, node_id: str) -> dict[str, Any] | None:
        """A fixed-time plan for a junction, or None if one axis only (or too many) meet.

        Green is split in proportion to the importance of each phase's heaviest road (with
        at least ``MIN_GREEN_S``); the cycle follows the most important road class; the
        offset makes a green wave along the x axis at 50 km/h.
        """
        phases = self.signal_phases(node_id)
        if not 2 <= len(phases) <= MAX_PHASES:
            return None
        approaches = [s for phase in phases for s in phase]
        lost = YELLOW_S + ALL_RED_S
        cycle = max(CYCLE_BY_CLASS[s["class"]] for s in approaches)
        cycle = max(cycle, len(phases) * (MIN_GREEN_S + lost))
        green_total = cycle - len(phases) * lost
        weights = [max(CLASS_WEIGHT[s["class"]] * s["lanes"] for s in phase) for phase in phases]
        spare = green_total - len(phases) * MIN_GREEN_S
        greens = [MIN_GREEN_S + round(spare * w / sum(weights)) for w in weights[:-1]]
        greens.append(green_total - sum(greens))
        x, _ = self.projection.to_xy(*self.nodes[node_id])
        offset = round(float(x) / PROGRESSION_SPEED_MS) % cycle
        return {
            "cycle_s": float(cycle),
            "offset_s": float(offset),
            "yellow_s": YELLOW_S,
            "all_red_s": ALL_RED_S,
            "phases": [
                {
                    "name": PHASE_NAMES[k],
                    "green_s": float(green),
                    "approaches": [s["id"] for s in phase],
                }
                for k, (phase, green) in enumerate(zip(phases, greens))
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
            "road_aliases": features.get("road_aliases", {}),
            "intersections": features.get("intersections", []),
            "no_parking_zones": features.get("no_parking_zones", []),
            "police_stations": features.get("police_stations", []),
            "highway_stations": features.get("highway_stations", []),
            "landmarks": features.get("landmarks", []),
            "districts": features.get("districts", []),
        }
