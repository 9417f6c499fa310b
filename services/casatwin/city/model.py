"""A city pack in memory: the road graph as NumPy arrays plus the city's features.

The pack file (JSON, format ``casatwin.city/1``) holds:

``nodes``            ``{id: [lat, lon]}`` — road junctions and shape points (WGS84)
``segments``         directed, straight road pieces ``{id, from, to, road, class, limit_kmh,
                     oneway, lanes}``; a two-way street is two segments
``intersections``    signalised nodes with a fixed-time plan and a stop line per approach
``no_parking_zones`` polygons ``[[lat, lon], ...]`` with the parking offence's kind
``police_stations``  with their units; ``highway_stations`` on motorway segments;
``landmarks``        named places scenarios refer to

Lengths and bearings are computed here from the coordinates, never read from the file.
Everything is indexed twice: by id (``segment_index["s0001"]``) and by position in the
arrays, which is what vectorised code uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from casatwin.city.geometry import LocalProjection, bearing_deg, haversine_m

FORMAT = "casatwin.city/1"

RoadClass = Literal["motorway", "arterial", "street", "centre"]
ROAD_CLASSES: tuple[str, ...] = ("motorway", "arterial", "street", "centre")
ParkingKind = Literal["dangerous", "pedestrian_crossing", "other"]
PARKING_KINDS: tuple[str, ...] = ("dangerous", "pedestrian_crossing", "other")


@dataclass(frozen=True)
class SignalPhase:
    """One phase of a fixed-time plan: the approaches (segment ids) it gives green to."""

    name: str
    green_s: float
    approaches: tuple[str, ...]


@dataclass(frozen=True)
class SignalPlan:
    """A fixed-time plan: phases run in order, each green, then yellow, then all-red.

    The cycle restarts every ``cycle_s`` seconds, shifted by ``offset_s`` (green waves).
    """

    cycle_s: float
    offset_s: float
    yellow_s: float
    all_red_s: float
    phases: tuple[SignalPhase, ...]

    def windows(self) -> list[tuple[float, float, float]]:
        """(green start, green end, yellow end) of each phase, seconds into the cycle."""
        out = []
        t = 0.0
        for phase in self.phases:
            out.append((t, t + phase.green_s, t + phase.green_s + self.yellow_s))
            t += phase.green_s + self.yellow_s + self.all_red_s
        return out

    @property
    def planned_cycle_s(self) -> float:
        return sum(p.green_s + self.yellow_s + self.all_red_s for p in self.phases)


@dataclass(frozen=True)
class Intersection:
    id: str
    name: str
    node: str
    plan: SignalPlan
    stop_lines: dict[str, tuple[float, float]]  # approach segment id → (lat, lon)


@dataclass(frozen=True)
class NoParkingZone:
    id: str
    name: str
    parking_kind: ParkingKind
    polygon: tuple[tuple[float, float], ...]  # (lat, lon), not closed


@dataclass(frozen=True)
class PoliceStation:
    id: str
    name: str
    lat: float
    lon: float
    node: str
    units: tuple[str, ...]


@dataclass(frozen=True)
class HighwayStation:
    id: str
    name: str
    segment: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Landmark:
    id: str
    name: str
    lat: float
    lon: float


@dataclass
class CityPack:
    """A validated city. Build it with :func:`casatwin.city.load.from_dict`."""

    name: str
    title: str
    attribution: str
    bounds: tuple[float, float, float, float]  # south, west, north, east
    node_ids: list[str]
    node_lat: NDArray[np.float64]
    node_lon: NDArray[np.float64]
    segment_ids: list[str]
    seg_from: NDArray[np.int64]
    seg_to: NDArray[np.int64]
    seg_road: list[str]
    seg_class: list[str]
    seg_limit_kmh: NDArray[np.float64]
    seg_oneway: NDArray[np.bool_]
    seg_lanes: NDArray[np.int64]
    intersections: list[Intersection] = field(default_factory=list)
    no_parking_zones: list[NoParkingZone] = field(default_factory=list)
    police_stations: list[PoliceStation] = field(default_factory=list)
    highway_stations: list[HighwayStation] = field(default_factory=list)
    landmarks: list[Landmark] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- indexes ---------------------------------------------------------------------------

    @cached_property
    def node_index(self) -> dict[str, int]:
        return {node_id: i for i, node_id in enumerate(self.node_ids)}

    @cached_property
    def segment_index(self) -> dict[str, int]:
        return {seg_id: i for i, seg_id in enumerate(self.segment_ids)}

    @cached_property
    def intersection_index(self) -> dict[str, int]:
        return {x.id: i for i, x in enumerate(self.intersections)}

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_segments(self) -> int:
        return len(self.segment_ids)

    # -- geometry --------------------------------------------------------------------------

    @cached_property
    def projection(self) -> LocalProjection:
        south, west, north, east = self.bounds
        return LocalProjection((south + north) / 2, (west + east) / 2)

    @cached_property
    def node_xy(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self.projection.to_xy(self.node_lat, self.node_lon)

    @cached_property
    def seg_length_m(self) -> NDArray[np.float64]:
        a, b = self.seg_from, self.seg_to
        return haversine_m(self.node_lat[a], self.node_lon[a], self.node_lat[b], self.node_lon[b])

    @cached_property
    def seg_bearing_deg(self) -> NDArray[np.float64]:
        a, b = self.seg_from, self.seg_to
        return bearing_deg(self.node_lat[a], self.node_lon[a], self.node_lat[b], self.node_lon[b])

    @cached_property
    def seg_free_flow_s(self) -> NDArray[np.float64]:
        """Travel time at the speed limit, the routing weight when nothing better is known."""
        return self.seg_length_m / (self.seg_limit_kmh / 3.6)

    def contains(self, lat: Any, lon: Any) -> NDArray[np.bool_]:
        south, west, north, east = self.bounds
        lat, lon = np.asarray(lat), np.asarray(lon)
        return (lat >= south) & (lat <= north) & (lon >= west) & (lon <= east)

    # -- topology --------------------------------------------------------------------------

    @cached_property
    def out_segments(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """CSR adjacency: segments leaving node n are ``seg[ptr[n]:ptr[n + 1]]``."""
        order = np.argsort(self.seg_from, kind="stable")
        counts = np.bincount(self.seg_from, minlength=self.n_nodes)
        ptr = np.concatenate([[0], np.cumsum(counts)])
        return ptr, order

    @cached_property
    def in_segments(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """CSR adjacency: segments entering node n are ``seg[ptr[n]:ptr[n + 1]]``."""
        order = np.argsort(self.seg_to, kind="stable")
        counts = np.bincount(self.seg_to, minlength=self.n_nodes)
        ptr = np.concatenate([[0], np.cumsum(counts)])
        return ptr, order

    def segments_from(self, node: int) -> NDArray[np.int64]:
        ptr, seg = self.out_segments
        return seg[ptr[node] : ptr[node + 1]]

    def segments_into(self, node: int) -> NDArray[np.int64]:
        ptr, seg = self.in_segments
        return seg[ptr[node] : ptr[node + 1]]

    @cached_property
    def reverse_segment(self) -> NDArray[np.int64]:
        """For each segment, the segment running the other way between the same nodes, or -1."""
        lookup = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(self.seg_from, self.seg_to))}
        return np.array(
            [lookup.get((int(b), int(a)), -1) for a, b in zip(self.seg_from, self.seg_to)],
            dtype=np.int64,
        )

    @cached_property
    def node_intersection(self) -> NDArray[np.int64]:
        """For each node, the index of its signalised intersection, or -1."""
        out = np.full(self.n_nodes, -1, dtype=np.int64)
        for i, x in enumerate(self.intersections):
            out[self.node_index[x.node]] = i
        return out

    def roads(self) -> list[str]:
        """Names of the roads, each once, in order of first appearance."""
        return list(dict.fromkeys(self.seg_road))

    def road_segments(self, road: str) -> NDArray[np.int64]:
        return np.array([i for i, r in enumerate(self.seg_road) if r == road], dtype=np.int64)

    def landmark(self, name_or_id: str) -> Landmark:
        for mark in self.landmarks:
            if name_or_id in (mark.id, mark.name):
                return mark
        raise KeyError(name_or_id)

    def intersection(self, name_or_id: str) -> Intersection:
        for x in self.intersections:
            if name_or_id in (x.id, x.name):
                return x
        raise KeyError(name_or_id)

    def stats(self) -> dict[str, int | float | str]:
        """The counts ``casatwin city stats`` prints."""
        return {
            "name": self.name,
            "nodes": self.n_nodes,
            "directed_segments": self.n_segments,
            "roads": len(self.roads()),
            "road_km": round(float(self.seg_length_m.sum()) / 1000.0, 1),
            "signalised_intersections": len(self.intersections),
            "no_parking_zones": len(self.no_parking_zones),
            "police_stations": len(self.police_stations),
            "police_units": sum(len(s.units) for s in self.police_stations),
            "highway_stations": len(self.highway_stations),
            "landmarks": len(self.landmarks),
        }
