"""A city pack in memory: the road graph as NumPy arrays plus the city's features.

The pack file (JSON, format ``casatwin.city/1``) holds:

``nodes``            ``{id: [lat, lon]}`` — road junctions and shape points (WGS84)
``segments``         directed, straight road pieces ``{id, from, to, road, class, limit_kmh,
                     oneway, lanes}``; a two-way street is two segments
``intersections``    signalised nodes with a fixed-time plan and a stop line per approach
``no_parking_zones`` polygons ``[[lat, lon], ...]`` with the parking offence's kind
``police_stations``  with their units; ``highway_stations`` on motorway segments;
``landmarks``        named places scenarios refer to
``districts``        named areas (arrondissements) as polygons, for tagging positions
``road_aliases``     other names of roads (``{"Boulevard Roudani": "Boulevard Brahim Roudani"}``)

Lengths and bearings are computed here from the coordinates, never read from the file.
Everything is indexed twice: by id (``segment_index["s0001"]``) and by position in the
arrays, which is what vectorised code uses.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from casatwin.city.geometry import LocalProjection, bearing_deg, haversine_m, points_in_polygon

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


@dataclass(frozen=True)
class District:
    id: str
    name: str
    polygon: tuple[tuple[float, float], ...]  # (lat, lon), not closed


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
    districts: list[District] = field(default_factory=list)
    road_aliases: dict[str, str] = field(default_factory=dict)
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

    @cached_property
    def _node_tree(self) -> cKDTree:
        x, y = self.node_xy
        return cKDTree(np.column_stack([x, y]))

    def nearest_node(self, lat: Any, lon: Any) -> Any:
        """Position of the node nearest to each point (an ``int`` for scalars); vectorised."""
        x, y = self.projection.to_xy(lat, lon)
        _, index = self._node_tree.query(np.stack([x, y], axis=-1))
        return int(index) if np.ndim(index) == 0 else index.astype(np.int64)

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

    def station_place(self, station: int) -> tuple[int, float]:
        """Where the units of police station ``station`` (its index) wait: the start of a
        segment leaving its node, as (segment, offset in metres). The simulator parks them
        there and the dispatcher assumes them there."""
        node = self.node_index[self.police_stations[station].node]
        return int(self.segments_from(node)[0]), 0.0

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

    def road_name(self, name: str) -> str:
        """The pack's name of a road given its name or an alias, in any case or accents.

        ``road_name("boulevard roudani")`` → ``"Boulevard Brahim Roudani"``; an unknown
        name comes back unchanged.
        """
        if name in self._road_index:
            return name
        if name in self.road_aliases:
            return self.road_aliases[name]
        return self._road_keys.get(_key(name), name)

    @cached_property
    def _road_keys(self) -> dict[str, str]:
        keys = {_key(alias): road for alias, road in self.road_aliases.items()}
        keys.update({_key(road): road for road in self._road_index})
        return keys

    def road_segments(self, road: str) -> NDArray[np.int64]:
        """Positions of the segments of a road (by name or alias); empty if unknown."""
        return self._road_index.get(self.road_name(road), np.empty(0, dtype=np.int64))

    @cached_property
    def _road_index(self) -> dict[str, NDArray[np.int64]]:
        positions: dict[str, list[int]] = {}
        for i, road in enumerate(self.seg_road):
            positions.setdefault(road, []).append(i)
        return {road: np.array(p, dtype=np.int64) for road, p in positions.items()}

    # -- districts -------------------------------------------------------------------------

    @cached_property
    def _district_xy(self) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
        out = []
        for d in self.districts:
            lat = np.array([p[0] for p in d.polygon])
            lon = np.array([p[1] for p in d.polygon])
            out.append(self.projection.to_xy(lat, lon))
        return out

    def district_index(self, lat: Any, lon: Any) -> NDArray[np.int64]:
        """For each point, the position of the district containing it, or -1."""
        x, y = self.projection.to_xy(lat, lon)
        out = np.full(np.shape(x), -1, dtype=np.int64)
        for i, (px, py) in enumerate(self._district_xy):
            inside = points_in_polygon(x, y, px, py) & (out < 0)
            out[inside] = i
        return out

    def district_of(self, lat: Any, lon: Any) -> Any:
        """The district name of a point ("" outside every district); vectorised.

        Scalars in, a ``str`` out; arrays in, an array of ``str`` out.
        """
        index = self.district_index(lat, lon)
        names = np.array([d.name for d in self.districts] + [""], dtype=object)
        found = names[index]  # -1 picks the trailing ""
        return str(found) if np.ndim(found) == 0 else found

    def landmark(self, name_or_id: str) -> Landmark:
        """A landmark by id or name; accents and case do not matter ("Ain Diab")."""
        return _find(self.landmarks, name_or_id)

    def intersection(self, name_or_id: str) -> Intersection:
        """A signalised intersection by id or name; accents and case do not matter."""
        return _find(self.intersections, name_or_id)

    def district(self, name_or_id: str) -> District:
        """A district by id or name; accents and case do not matter ("Maarif")."""
        return _find(self.districts, name_or_id)

    def no_parking_zone(self, name_or_id: str) -> NoParkingZone:
        """A no-parking zone by id or name; accents and case do not matter ("casa port")."""
        return _find(self.no_parking_zones, name_or_id)

    def police_station(self, name_or_id: str) -> PoliceStation:
        """A police station by id or name; accents and case do not matter."""
        return _find(self.police_stations, name_or_id)

    @property
    def _once(self) -> NDArray[np.bool_]:
        """Each stretch of road once: one-way segments, and one direction of two-way ones."""
        reverse = self.reverse_segment
        return (reverse < 0) | (np.arange(self.n_segments) < reverse)

    def limits_by_class(self) -> dict[str, list[float]]:
        """The speed limits in use per road class, e.g. ``{"centre": [40.0], ...}``."""
        out: dict[str, set[float]] = {}
        for road_class, limit in zip(self.seg_class, self.seg_limit_kmh):
            out.setdefault(road_class, set()).add(float(limit))
        return {c: sorted(out[c]) for c in ROAD_CLASSES if c in out}

    def stats(self) -> dict[str, Any]:
        """The counts ``casatwin city stats`` prints."""
        return {
            "name": self.name,
            "nodes": self.n_nodes,
            "directed_segments": self.n_segments,
            "roads": len(self.roads()),
            "road_km": round(float(self.seg_length_m[self._once].sum()) / 1000.0, 1),
            "signalised_intersections": len(self.intersections),
            "no_parking_zones": len(self.no_parking_zones),
            "police_stations": len(self.police_stations),
            "police_units": sum(len(s.units) for s in self.police_stations),
            "highway_stations": len(self.highway_stations),
            "landmarks": len(self.landmarks),
            "districts": len(self.districts),
            "oneway_segments": int(self.seg_oneway.sum()),
            "motorway_km": round(
                float(
                    self.seg_length_m[self._once & (np.array(self.seg_class) == "motorway")].sum()
                )
                / 1000.0,
                1,
            ),
            "limits_kmh": self.limits_by_class(),
        }


def _key(text: str) -> str:
    """A name as scenario files may spell it: no accents, no case, single spaces."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(ascii_text.lower().replace("'", " ").split())


def _find(features: list[Any], name_or_id: str) -> Any:
    for feature in features:
        if name_or_id in (feature.id, feature.name):
            return feature
    key = _key(name_or_id)
    for feature in features:
        if key == _key(feature.name):
            return feature
    raise KeyError(name_or_id)
