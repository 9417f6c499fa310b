"""Compile a hand-drawn city sketch (YAML) into a city pack.

A sketch lists roads as polylines of real WGS84 waypoints, and the city's features by
where they are (see ``sources/casablanca.yaml`` and docs/city.md). The compiler does what
a person drawing a map does implicitly:

- roads that cross get a shared junction node at the crossing, even where no waypoint is
  shared; a road whose end stops just short of (or just past) another road is snapped onto
  it (a T-junction); grade-separated roads (the motorway) meet other roads only at a shared
  waypoint — their interchanges — and cross everything else on bridges;
- the polylines are densified into directed segments by :class:`PackBuilder`, which also
  gives the signalised junctions their fixed-time plans;
- police stations snap to the nearest street node, highway stations to the nearest
  motorway segment, districts given by a seed point become the Voronoi cells of the seeds.

Compilation is deterministic: the same sketch gives a byte-identical pack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from casatwin.city.build import DEFAULT_LANES, DEFAULT_LIMITS_KMH, PackBuilder, slug
from casatwin.city.geometry import LocalProjection, haversine_m, project_on_segments
from casatwin.city.model import PARKING_KINDS, ROAD_CLASSES
from casatwin.errors import UserError

GRADE_SEPARATED = ("motorway",)  # classes that cross other roads on bridges by default

CROSSING_TOLERANCE_M = 0.5  # a crossing this close past a leg's end still counts
VERTEX_TOLERANCE_M = 2.0  # a crossing this close to a waypoint is at the waypoint
MERGE_M = 15.0  # a crossing this close to a waypoint moves onto it (no stub segments)
END_SNAP_M = 30.0  # a road end this close to another road joins it
JUNCTION_SEARCH_M = 80.0  # how far `at:` looks for a junction node
HIGHWAY_STATION_MAX_M = 200.0
ZONE_SIDES = 8


class SketchError(UserError):
    """A sketch that cannot be compiled; the message names the offending feature."""


@dataclass
class Road:
    """One road of the sketch, its waypoints in (lat, lon) and in local metres."""

    name: str
    road_class: str
    oneway: bool
    lanes: int
    limit_kmh: float
    grade_separated: bool
    latlon: list[tuple[float, float]]
    aliases: tuple[str, ...] = ()
    dead_end: bool = False  # an end joining nothing is intended (the street goes on, unsketched)
    nodes: list[str] = field(default_factory=list)  # filled once the road is built


def compile_file(path: Path) -> dict[str, Any]:
    """The raw pack compiled from the sketch file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SketchError(f"cannot read sketch {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SketchError(f"sketch {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SketchError(f"sketch {path} should hold a YAML mapping")
    return compile_sketch(data, source=Path(path).name)


def compile_sketch(data: dict[str, Any], source: str = "sketch") -> dict[str, Any]:
    """The raw pack compiled from a parsed sketch (validated before it is returned)."""
    return _Compiler(data, source).run()


class _Compiler:
    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source
        self.bounds = self._bounds()
        south, west, north, east = self.bounds
        self.proj = LocalProjection((south + north) / 2, (west + east) / 2)
        self.points = self._points()

    def fail(self, message: str, hint: str = "") -> SketchError:
        return SketchError(f"{self.source}: {message}", hint=hint)

    # -- header ----------------------------------------------------------------------------

    def _bounds(self) -> tuple[float, float, float, float]:
        for key in ("name", "bounds", "roads"):
            if key not in self.data:
                raise self.fail(f"missing {key!r}")
        b = self.data["bounds"]
        if not (
            isinstance(b, list)
            and len(b) == 4
            and all(isinstance(v, (int, float)) for v in b)
            and b[0] < b[2]
            and b[1] < b[3]
        ):
            raise self.fail(f"bounds {b!r} should be [south, west, north, east]")
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))

    def _section(self, key: str, kind: type) -> Any:
        """A top-level section: a mapping, or a list of mappings (empty if absent)."""
        value = self.data.get(key) or kind()
        if not isinstance(value, kind) or (
            kind is list and not all(isinstance(e, dict) for e in value)
        ):
            shape = "a mapping" if kind is dict else "a list of mappings (`- name: ...`)"
            raise self.fail(f"{key} should be {shape}")
        return value

    def _number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.data.get(key, default)
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(f"{key}={value!r} should be a number in {low:g}..{high:g}")
        return float(value)

    def _inside(self, lat: float, lon: float) -> bool:
        south, west, north, east = self.bounds
        return south <= lat <= north and west <= lon <= east

    def _points(self) -> dict[str, tuple[float, float]]:
        out = {}
        points = self._section("points", dict)
        for name, value in points.items():
            out[str(name)] = self._coord(value, f"point {name!r}", named=False)
        return out

    def _coord(self, value: Any, what: str, named: bool = True) -> tuple[float, float]:
        """A waypoint: ``[lat, lon]`` or, if ``named``, the name of a point."""
        if named and isinstance(value, str):
            if value not in self.points:
                raise self.fail(
                    f"{what}: unknown point {value!r}", hint="define it under `points:`"
                )
            return self.points[value]
        if not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise self.fail(f"{what}: {value!r} should be [lat, lon] or the name of a point")
        lat, lon = float(value[0]), float(value[1])
        if not self._inside(lat, lon):
            raise self.fail(f"{what}: [{lat}, {lon}] is outside the bounds {list(self.bounds)}")
        return (lat, lon)

    # -- the whole compilation -------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        roads = self._roads()
        self._join(roads)
        builder = PackBuilder(
            name=str(self.data["name"]),
            title=str(self.data.get("title", self.data["name"])),
            bounds=self.bounds,
            attribution=str(self.data.get("attribution", "")),
            max_segment_m=self._number("max_segment_m", 150.0, 20.0, 1000.0),
        )
        for road in roads:
            road.nodes = builder.add_road(
                road.name, road.latlon, road.road_class, road.limit_kmh, road.oneway, road.lanes
            )
        self._check_connected(builder, roads)
        self._check_ends(builder, roads)
        raw = builder.pack(
            road_aliases=self._aliases(roads),
            intersections=self._intersections(builder, roads),
            no_parking_zones=self._zones(),
            police_stations=self._police(builder),
            highway_stations=self._highway(builder),
            landmarks=self._landmarks(),
            districts=self._districts(),
        )
        from casatwin.city.load import problems

        found = problems(raw)
        if found:
            shown = "\n  ".join(found[:20])
            raise self.fail(f"the compiled pack is not valid:\n  {shown}")
        return raw

    # -- roads -----------------------------------------------------------------------------

    def _roads(self) -> list[Road]:
        limits = {**DEFAULT_LIMITS_KMH, **self._section("limits_kmh", dict)}
        lanes = {**DEFAULT_LANES, **self._section("lanes", dict)}
        roads = []
        entries = self._section("roads", list)
        if not entries:
            raise self.fail("roads should be a non-empty list")
        for k, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict) or not entry.get("name"):
                raise self.fail(f"road #{k} has no name")
            name = str(entry["name"])
            what = f"road {name!r}"
            road_class = entry.get("class", "street")
            if road_class not in ROAD_CLASSES:
                raise self.fail(f"{what}: class {road_class!r} is not one of {list(ROAD_CLASSES)}")
            path = entry.get("path")
            if not isinstance(path, list) or len(path) < 2:
                raise self.fail(f"{what}: path needs at least two waypoints")
            latlon = [self._coord(p, f"{what}, waypoint {i + 1}") for i, p in enumerate(path)]
            for i in range(1, len(latlon)):
                if haversine_m(*latlon[i - 1], *latlon[i]) < 1.0:
                    raise self.fail(f"{what}: waypoints {i} and {i + 1} are the same place")
            road_lanes = entry.get("lanes", lanes[road_class])
            if not isinstance(road_lanes, int) or not 1 <= road_lanes <= 6:
                raise self.fail(f"{what}: lanes={road_lanes!r} should be 1..6 (per direction)")
            limit = entry.get("limit_kmh", limits[road_class])
            if not isinstance(limit, (int, float)) or not 5 <= limit <= 130:
                raise self.fail(f"{what}: limit_kmh={limit!r} should be 5..130")
            aliases = entry.get("aliases") or []
            if not isinstance(aliases, list):
                raise self.fail(f"{what}: aliases should be a list of names")
            roads.append(
                Road(
                    name=name,
                    road_class=road_class,
                    oneway=bool(entry.get("oneway", False)),
                    lanes=road_lanes,
                    limit_kmh=float(limit),
                    grade_separated=bool(
                        entry.get("grade_separated", road_class in GRADE_SEPARATED)
                    ),
                    latlon=latlon,
                    aliases=tuple(str(a) for a in aliases),
                    dead_end=bool(entry.get("dead_end", False)),
                )
            )
        return roads

    def _aliases(self, roads: list[Road]) -> dict[str, str]:
        names = {r.name for r in roads}
        out: dict[str, str] = {}
        for road in roads:
            for alias in road.aliases:
                if alias in names:
                    raise self.fail(f"road {road.name!r}: alias {alias!r} is another road's name")
                if out.get(alias, road.name) != road.name:
                    raise self.fail(f"alias {alias!r} names both {out[alias]!r} and {road.name!r}")
                out[alias] = road.name
        return out

    # -- junctions -------------------------------------------------------------------------

    def _xy(self, road: Road) -> np.ndarray:
        lat = np.array([p[0] for p in road.latlon])
        lon = np.array([p[1] for p in road.latlon])
        x, y = self.proj.to_xy(lat, lon)
        return np.column_stack([x, y])

    def _latlon(self, x: float, y: float) -> tuple[float, float]:
        lat, lon = self.proj.to_latlon(x, y)
        return (round(float(lat), 6), round(float(lon), 6))

    def _join(self, roads: list[Road]) -> None:
        """Make roads meet where they meet on the ground: snap ends, then split crossings."""
        self._snap_ends(roads)
        self._split_crossings(roads)

    def _snap_ends(self, roads: list[Road]) -> None:
        """A road end that stops within ``END_SNAP_M`` of another road joins that road."""
        for i, road in enumerate(roads):
            if road.grade_separated:
                continue
            for end in (0, -1):
                ex, ey = self._xy(road)[end]
                best: tuple[float, int, int, float] | None = None  # (distance, road, leg, t)
                for j, other in enumerate(roads):
                    if j == i or other.grade_separated:
                        continue
                    xy = self._xy(other)
                    a, b = xy[:-1], xy[1:]
                    t, d = project_on_segments(ex, ey, a[:, 0], a[:, 1], b[:, 0], b[:, 1])
                    leg = int(np.argmin(d))
                    if best is None or d[leg] < best[0]:
                        best = (float(d[leg]), j, leg, float(t[leg]))
                if best is None or best[0] > END_SNAP_M or best[0] < CROSSING_TOLERANCE_M:
                    continue
                _, j, leg, t = best
                other = roads[j]
                foot = self._on_leg(other, leg, t)
                if foot not in other.latlon:
                    other.latlon.insert(leg + 1, foot)
                road.latlon[end] = foot

    def _on_leg(self, road: Road, leg: int, t: float) -> tuple[float, float]:
        """The point at fraction ``t`` of a leg, or the leg's waypoint if within MERGE_M."""
        xy = self._xy(road)
        a, b = xy[leg], xy[leg + 1]
        length = float(np.hypot(*(b - a)))
        if t * length <= MERGE_M:
            return road.latlon[leg]
        if (1 - t) * length <= MERGE_M:
            return road.latlon[leg + 1]
        return self._latlon(*(a + t * (b - a)))

    def _split_crossings(self, roads: list[Road]) -> None:
        """Insert a shared waypoint wherever two roads cross (between legs' interiors)."""
        legs = []  # (road, leg, ax, ay, bx, by)
        for r, road in enumerate(roads):
            xy = self._xy(road)
            for k in range(len(xy) - 1):
                legs.append((r, k, *xy[k], *xy[k + 1]))
        arr = np.array(legs, dtype=float)
        road_of, leg_of = arr[:, 0].astype(int), arr[:, 1].astype(int)
        p, q = arr[:, 2:4], arr[:, 4:6]
        d = q - p
        length = np.hypot(d[:, 0], d[:, 1])
        i, j = np.triu_indices(len(arr), k=1)
        keep = road_of[i] != road_of[j]
        i, j = i[keep], j[keep]
        # cheap bounding-box rejection first
        lo, hi = np.minimum(p, q), np.maximum(p, q)
        pad = CROSSING_TOLERANCE_M
        overlap = (
            (lo[i, 0] <= hi[j, 0] + pad)
            & (lo[j, 0] <= hi[i, 0] + pad)
            & (lo[i, 1] <= hi[j, 1] + pad)
            & (lo[j, 1] <= hi[i, 1] + pad)
        )
        i, j = i[overlap], j[overlap]
        r, s = d[i], d[j]
        denom = r[:, 0] * s[:, 1] - r[:, 1] * s[:, 0]
        w = p[j] - p[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (w[:, 0] * s[:, 1] - w[:, 1] * s[:, 0]) / denom
            u = (w[:, 0] * r[:, 1] - w[:, 1] * r[:, 0]) / denom
        tol_t = CROSSING_TOLERANCE_M / length[i]
        tol_u = CROSSING_TOLERANCE_M / length[j]
        hit = (
            (np.abs(denom) > 1e-9)
            & (t >= -tol_t)
            & (t <= 1 + tol_t)
            & (u >= -tol_u)
            & (u <= 1 + tol_u)
        )
        inserts: dict[int, list[tuple[int, float, tuple[float, float]]]] = {}
        t, u = np.clip(t, 0, 1), np.clip(u, 0, 1)
        for a, b, ta, ub in zip(i[hit], j[hit], t[hit].tolist(), u[hit].tolist()):
            ra, rb = roads[road_of[a]], roads[road_of[b]]
            at_vertex_a = min(ta, 1 - ta) * length[a] <= VERTEX_TOLERANCE_M
            at_vertex_b = min(ub, 1 - ub) * length[b] <= VERTEX_TOLERANCE_M
            if (ra.grade_separated or rb.grade_separated) and not (at_vertex_a and at_vertex_b):
                continue  # a bridge, not a junction
            point = self._junction_point(ra, leg_of[a], ta, rb, leg_of[b], ub)
            inserts.setdefault(road_of[a], []).append((leg_of[a], ta, point))
            inserts.setdefault(road_of[b], []).append((leg_of[b], ub, point))
        for r, items in inserts.items():
            road = roads[r]
            extra: dict[int, list[tuple[float, tuple[float, float]]]] = {}
            for leg, t_leg, point in items:
                if point not in (road.latlon[leg], road.latlon[leg + 1]):
                    extra.setdefault(leg, []).append((t_leg, point))
            merged: list[tuple[float, float]] = []
            for leg, start in enumerate(road.latlon):
                merged.append(start)
                end = road.latlon[leg + 1] if leg + 1 < len(road.latlon) else None
                for _, point in sorted(set(extra.get(leg, []))):
                    if point not in (merged[-1], end):
                        merged.append(point)
            road.latlon = merged

    def _junction_point(
        self, ra: Road, leg_a: int, ta: float, rb: Road, leg_b: int, ub: float
    ) -> tuple[float, float]:
        """Where two crossing legs meet: a nearby waypoint of either road, else the crossing."""
        on_a = self._on_leg(ra, leg_a, ta)
        if on_a in (ra.latlon[leg_a], ra.latlon[leg_a + 1]):
            return on_a
        on_b = self._on_leg(rb, leg_b, ub)
        if on_b in (rb.latlon[leg_b], rb.latlon[leg_b + 1]):
            return on_b
        return on_a

    def _check_connected(self, builder: PackBuilder, roads: list[Road]) -> None:
        ids, labels = builder.components()
        if labels.max(initial=0) == 0:
            return
        main = int(np.bincount(labels).argmax())
        label = dict(zip(ids, labels))
        stray = []
        for road in roads:
            if any(label[n] != main for n in road.nodes):
                stray.append(road.name)
        stray = list(dict.fromkeys(stray))
        raise self.fail(
            "the roads do not form one strongly connected network; not joined to the rest: "
            + ", ".join(stray),
            hint="make the road end on another road (within "
            f"{END_SNAP_M:g} m), share a waypoint, or check its one-way direction",
        )

    def _check_ends(self, builder: PackBuilder, roads: list[Road]) -> None:
        """A road end that joins nothing is a mistake unless the road says `dead_end: true`."""
        neighbours: dict[str, set[str]] = {}
        for seg in builder.segments:
            neighbours.setdefault(seg["from"], set()).add(seg["to"])
            neighbours.setdefault(seg["to"], set()).add(seg["from"])
        loose = [
            f"{road.name!r} at {list(builder.nodes[end])}"
            for road in roads
            if not road.dead_end
            for end in dict.fromkeys((road.nodes[0], road.nodes[-1]))
            if len(neighbours[end]) == 1
        ]
        if loose:
            raise self.fail(
                "road ends that join no other road: " + "; ".join(loose),
                hint=f"end the road on another road (within {END_SNAP_M:g} m) or, if the street "
                "goes on beyond the sketch, mark it `dead_end: true`",
            )

    # -- features --------------------------------------------------------------------------

    def _intersections(self, builder: PackBuilder, roads: list[Road]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        used: dict[str, str] = {}
        nodes_of: dict[str, set[str]] = {}
        for road in roads:
            nodes_of.setdefault(road.name, set()).update(road.nodes)
        for entry in self._section("intersections", list):
            name = str(entry.get("name", ""))
            what = f"intersection {name!r}"
            if not name:
                raise self.fail(f"intersection #{len(out) + 1} has no name")
            node = self._intersection_node(builder, entry, nodes_of, what)
            if node in used:
                raise self.fail(f"{what}: same junction as intersection {used[node]!r}")
            record = builder.intersection(node, name, len(out) + 1)
            if record is None:
                raise self.fail(
                    f"{what}: the roads meeting at node {node} give no sensible signal phases "
                    "(one axis only, or more than four)"
                )
            used[node] = name
            out.append(record)
        return out

    def _intersection_node(
        self,
        builder: PackBuilder,
        entry: dict[str, Any],
        nodes_of: dict[str, set[str]],
        what: str,
    ) -> str:
        near = self._coord(entry["near"], f"{what}, near") if "near" in entry else None
        if "roads" in entry:
            names = entry["roads"]
            if not isinstance(names, list) or len(names) < 2:
                raise self.fail(f"{what}: roads should list at least two road names")
            for road in names:
                if not isinstance(road, str) or road not in nodes_of:
                    raise self.fail(f"{what}: no road named {road!r}")
            common = set.intersection(*(nodes_of[road] for road in names))
            if not common:
                raise self.fail(f"{what}: {' and '.join(names)} do not meet")
            candidates = sorted(common)
            if len(candidates) > 1 and near is None:
                raise self.fail(
                    f"{what}: {' and '.join(names)} meet {len(candidates)} times",
                    hint="add `near: [lat, lon]` to say which junction",
                )
        elif "at" in entry:
            near = self._coord(entry["at"], f"{what}, at")
            neighbours: dict[str, set[str]] = {}
            for seg in builder.segments:
                neighbours.setdefault(seg["from"], set()).add(seg["to"])
                neighbours.setdefault(seg["to"], set()).add(seg["from"])
            candidates = [n for n in builder.nodes if len(neighbours.get(n, ())) >= 3]
        else:
            raise self.fail(f"{what}: say where it is with `roads:` or `at:`")
        if near is None:
            return candidates[0]
        coords = np.array([builder.nodes[n] for n in candidates], dtype=float)
        dist = haversine_m(near[0], near[1], coords[:, 0], coords[:, 1])
        best = int(np.argmin(dist))
        if dist[best] > JUNCTION_SEARCH_M:
            raise self.fail(f"{what}: no junction within {JUNCTION_SEARCH_M:g} m of {list(near)}")
        return candidates[best]

    def _zones(self) -> list[dict[str, Any]]:
        out = []
        for k, entry in enumerate(self._section("no_parking_zones", list), start=1):
            name = str(entry.get("name", ""))
            what = f"no-parking zone {name or k!r}"
            kind = entry.get("parking_kind")
            if kind not in PARKING_KINDS:
                raise self.fail(
                    f"{what}: parking_kind {kind!r} is not one of {list(PARKING_KINDS)}"
                )
            if "polygon" in entry:
                polygon = self._polygon(entry["polygon"], what)
            elif "around" in entry:
                polygon = self._octagon(self._coord(entry["around"], what), entry, what)
            else:
                raise self.fail(f"{what}: give a `polygon:` or `around:` with `radius_m:`")
            out.append(
                {
                    "id": str(entry.get("id", f"z{k:02d}")),
                    "name": name,
                    "parking_kind": kind,
                    "polygon": [list(p) for p in polygon],
                }
            )
        return out

    def _polygon(self, value: Any, what: str) -> list[tuple[float, float]]:
        if not isinstance(value, list) or len(value) < 3:
            raise self.fail(f"{what}: polygon should list at least 3 [lat, lon] vertices")
        return [self._coord(p, f"{what}, vertex {i + 1}") for i, p in enumerate(value)]

    def _octagon(
        self, centre: tuple[float, float], entry: dict[str, Any], what: str
    ) -> list[tuple[float, float]]:
        radius = entry.get("radius_m", 100)
        if not isinstance(radius, (int, float)) or not 10 <= radius <= 2000:
            raise self.fail(f"{what}: radius_m={radius!r} should be 10..2000")
        cx, cy = self.proj.to_xy(*centre)
        out = []
        for k in range(ZONE_SIDES):
            angle = 2 * math.pi * (k + 0.5) / ZONE_SIDES
            out.append(self._latlon(cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return out

    def _police(self, builder: PackBuilder) -> list[dict[str, Any]]:
        out = []
        for entry in self._section("police_stations", list):
            name = str(entry.get("name", ""))
            code = str(entry.get("code", ""))
            what = f"police station {name or code!r}"
            if not name or not re.fullmatch(r"[A-Z0-9]+", code):
                raise self.fail(f"{what}: needs a name and a code in capitals (e.g. ANFA)")
            units = entry.get("units")
            if not isinstance(units, int) or not 1 <= units <= 50:
                raise self.fail(f"{what}: units={units!r} should be a count 1..50")
            lat, lon = self._coord(entry.get("at"), what)
            node = builder.nearest_node(lat, lon, road_classes=("arterial", "street", "centre"))
            out.append(
                {
                    "id": f"ps-{code.lower()}",
                    "name": name,
                    "lat": lat,
                    "lon": lon,
                    "node": node,
                    "units": [f"PU-{code}-{k}" for k in range(1, units + 1)],
                }
            )
        return out

    def _highway(self, builder: PackBuilder) -> list[dict[str, Any]]:
        out = []
        for k, entry in enumerate(self._section("highway_stations", list), start=1):
            name = str(entry.get("name", f"station {k}"))
            what = f"highway station {name!r}"
            lat, lon = self._coord(entry.get("at"), what)
            try:
                seg, foot, distance = builder.nearest_segment(lat, lon, "motorway")
            except ValueError:
                raise self.fail(f"{what}: the sketch has no motorway") from None
            if distance > HIGHWAY_STATION_MAX_M:
                raise self.fail(
                    f"{what}: the nearest motorway is {distance:.0f} m away "
                    f"(at most {HIGHWAY_STATION_MAX_M:g} m)"
                )
            out.append(
                {
                    "id": str(entry.get("id", f"hs{k:02d}")),
                    "name": name,
                    "segment": seg["id"],
                    "lat": foot[0],
                    "lon": foot[1],
                }
            )
        return out

    def _landmarks(self) -> list[dict[str, Any]]:
        out = []
        seen: set[str] = set()
        for entry in self._section("landmarks", list):
            name = str(entry.get("name", ""))
            if not name:
                raise self.fail("a landmark has no name")
            lat, lon = self._coord(entry.get("at"), f"landmark {name!r}")
            landmark_id = str(entry.get("id", slug(name)))
            if landmark_id in seen:
                raise self.fail(f"landmark {name!r}: id {landmark_id!r} is used twice")
            seen.add(landmark_id)
            out.append({"id": landmark_id, "name": name, "lat": lat, "lon": lon})
        return out

    # -- districts -------------------------------------------------------------------------

    def _districts(self) -> list[dict[str, Any]]:
        entries = self._section("districts", list)
        seeds: list[tuple[int, tuple[float, float]]] = []
        polygons: dict[int, list[tuple[float, float]]] = {}
        for k, entry in enumerate(entries):
            name = str(entry.get("name", ""))
            what = f"district {name or k + 1!r}"
            if not name:
                raise self.fail(f"{what} has no name")
            if "polygon" in entry:
                polygons[k] = self._polygon(entry["polygon"], what)
            elif "seed" in entry:
                seeds.append((k, self._coord(entry["seed"], what)))
            else:
                raise self.fail(f"{what}: give a `polygon:` or a `seed:` point")
        for k, cell in self._voronoi([s for _, s in seeds]).items():
            polygons[seeds[k][0]] = cell
        return [
            {
                "id": str(entry.get("id", slug(str(entry["name"])))),
                "name": str(entry["name"]),
                "polygon": [list(p) for p in polygons[k]],
            }
            for k, entry in enumerate(entries)
        ]

    def _voronoi(self, seeds: list[tuple[float, float]]) -> dict[int, list[tuple[float, float]]]:
        """Each seed's cell: the part of the bounds nearer to it than to any other seed."""
        if not seeds:
            return {}
        south, west, north, east = self.bounds
        x0, y0 = self.proj.to_xy(south, west)
        x1, y1 = self.proj.to_xy(north, east)
        box = [
            (float(x0), float(y0)),
            (float(x1), float(y0)),
            (float(x1), float(y1)),
            (float(x0), float(y1)),
        ]
        xy = [tuple(float(v) for v in self.proj.to_xy(*s)) for s in seeds]
        cells = {}
        for i, (sx, sy) in enumerate(xy):
            cell = box
            for j, (ox, oy) in enumerate(xy):
                if j == i:
                    continue
                # keep p with (o - s)·p <= (|o|² - |s|²) / 2
                nx, ny = ox - sx, oy - sy
                if math.hypot(nx, ny) < 1.0:
                    raise self.fail(f"district seeds {seeds[i]} and {seeds[j]} coincide")
                cell = _clip(cell, nx, ny, (ox * ox + oy * oy - sx * sx - sy * sy) / 2)
            cells[i] = [self._clamp(self._latlon(x, y)) for x, y in cell]
        return cells

    def _clamp(self, p: tuple[float, float]) -> tuple[float, float]:
        south, west, north, east = self.bounds
        return (min(max(p[0], south), north), min(max(p[1], west), east))


def _clip(
    polygon: list[tuple[float, float]], nx: float, ny: float, c: float
) -> list[tuple[float, float]]:
    """Sutherland–Hodgman: the part of a convex polygon where nx·x + ny·y <= c."""
    out: list[tuple[float, float]] = []
    n = len(polygon)
    for k in range(n):
        p, q = polygon[k], polygon[(k + 1) % n]
        fp = nx * p[0] + ny * p[1] - c
        fq = nx * q[0] + ny * q[1] - c
        if fp <= 0:
            out.append(p)
        if (fp < 0 < fq) or (fq < 0 < fp):
            f = fp / (fp - fq)
            out.append((p[0] + f * (q[0] - p[0]), p[1] + f * (q[1] - p[1])))
    return out
