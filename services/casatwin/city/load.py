"""Read and validate city packs.

:func:`problems` lists everything wrong with a pack, each naming the offending feature
(``segment s0042: ...``); :func:`from_dict` refuses a pack with problems; :func:`load` finds a
bundled pack by name or reads a file; :func:`load_city` is what services call: the pack of
the settings with the configured speed limits applied.
"""

from __future__ import annotations

import dataclasses
import gzip
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from casatwin.city.geometry import haversine_m, points_in_polygon, polygon_is_simple
from casatwin.city.model import (
    FORMAT,
    PARKING_KINDS,
    ROAD_CLASSES,
    CityPack,
    District,
    HighwayStation,
    Intersection,
    Landmark,
    NoParkingZone,
    PoliceStation,
    SignalPhase,
    SignalPlan,
)
from casatwin.config import CitySettings
from casatwin.errors import UserError

MAX_STOP_LINE_DISTANCE_M = 60.0
LIMIT_RANGE_KMH = (5.0, 130.0)


class PackError(UserError):
    """A city pack that cannot be used; the message lists the offending features."""


def bundled_path(name: str) -> Path | None:
    """The file of a pack shipped inside the package, or None."""
    packs = resources.files("casatwin.city") / "packs"
    for suffix in (".json", ".json.gz"):
        candidate = packs / f"{name}{suffix}"
        if candidate.is_file():
            return Path(str(candidate))
    return None


def read_raw(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackError(f"cannot read city pack {path}: {exc.strerror}") from None
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PackError(f"city pack {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise PackError(f"city pack {path} should hold a JSON object")
    return raw


def encode(raw: dict[str, Any], compact: bool) -> bytes:
    """The JSON of a pack: compact (inside .gz files) or indented (plain .json files)."""
    return orjson.dumps(raw, option=0 if compact else orjson.OPT_INDENT_2)


def write(raw: dict[str, Any], path: Path) -> None:
    """Write a pack file (compact and gzip-compressed when the name ends in .gz)."""
    compressed = path.suffix == ".gz"
    data = encode(raw, compact=compressed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0) if compressed else data)
    except OSError as exc:
        raise PackError(f"cannot write city pack {path}: {exc.strerror}") from None


# Unbounded on purpose: a service loads one or two packs, and a bounded cache that evicted
# the bundled pack would hand load_city's callers a second, different copy of the city.
@cache
def load(name_or_path: str) -> CityPack:
    """A bundled pack by name (``casablanca``) or a pack file by path; validated."""
    path = bundled_path(name_or_path)
    if path is None:
        path = Path(name_or_path)
        if not path.exists():
            raise PackError(
                f"no city pack named {name_or_path!r}",
                hint="use a bundled pack (casablanca) or the path of a pack file",
            )
    return from_dict(read_raw(path), source=str(path))


@cache
def load_city(settings: CitySettings) -> CityPack:
    """THE city of a service: ``settings.pack`` with the configured speed limits applied.

    Every service that needs the city calls this with the same settings, so the limits the
    simulator drives to and the limits the processor judges against are the same numbers.
    The result is cached (settings are frozen, hence hashable): call it freely.
    """
    return with_limits(load(settings.pack), limit_overrides(settings))


def limit_overrides(settings: CitySettings) -> dict[str, float]:
    """Road class → limit (km/h) from the ``limit_<class>_kmh`` settings; 0 = keep the pack's."""
    out = {}
    low, high = LIMIT_RANGE_KMH
    for road_class in ROAD_CLASSES:
        value = float(getattr(settings, f"limit_{road_class}_kmh"))
        if value == 0:
            continue
        if not low <= value <= high:
            var = f"CASATWIN_CITY_LIMIT_{road_class.upper()}_KMH"
            raise UserError(
                f"{var}={value:g} is outside {low:g}..{high:g} km/h",
                hint=f"set {var} to a limit in km/h, or to 0 to keep the pack's own limits",
            )
        out[road_class] = value
    return out


def with_limits(pack: CityPack, overrides: dict[str, float]) -> CityPack:
    """A copy of ``pack`` whose segments of each overridden class have the new limit."""
    if not overrides:
        return pack
    limits = pack.seg_limit_kmh.copy()
    classes = np.array(pack.seg_class)
    for road_class, limit in overrides.items():
        limits[classes == road_class] = limit
    raw = dict(pack.raw)
    raw["segments"] = [
        {**seg, "limit_kmh": float(limit)} for seg, limit in zip(pack.raw["segments"], limits)
    ]
    return dataclasses.replace(pack, seg_limit_kmh=limits, raw=raw)


def from_dict(raw: dict[str, Any], source: str = "city pack") -> CityPack:
    found = problems(raw)
    if found:
        shown = "\n  ".join(found[:20])
        more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
        raise PackError(f"{source} is not a valid city pack:\n  {shown}{more}")
    return _build(raw)


def _build(raw: dict[str, Any]) -> CityPack:
    node_ids = list(raw["nodes"])
    coords = np.array([raw["nodes"][n] for n in node_ids], dtype=float).reshape(-1, 2)
    index = {n: i for i, n in enumerate(node_ids)}
    segs = raw["segments"]
    return CityPack(
        name=raw["name"],
        title=raw.get("title", raw["name"]),
        attribution=raw.get("attribution", ""),
        bounds=tuple(raw["bounds"]),  # type: ignore[arg-type]
        node_ids=node_ids,
        node_lat=coords[:, 0].copy(),
        node_lon=coords[:, 1].copy(),
        segment_ids=[s["id"] for s in segs],
        seg_from=np.array([index[s["from"]] for s in segs], dtype=np.int64),
        seg_to=np.array([index[s["to"]] for s in segs], dtype=np.int64),
        seg_road=[s.get("road", "") for s in segs],
        seg_class=[s["class"] for s in segs],
        seg_limit_kmh=np.array([s["limit_kmh"] for s in segs], dtype=float),
        seg_oneway=np.array([bool(s.get("oneway", False)) for s in segs]),
        seg_lanes=np.array([int(s.get("lanes", 1)) for s in segs], dtype=np.int64),
        intersections=[_intersection(x) for x in raw.get("intersections", [])],
        no_parking_zones=[
            NoParkingZone(
                z["id"], z["name"], z["parking_kind"], tuple(tuple(p) for p in z["polygon"])
            )
            for z in raw.get("no_parking_zones", [])
        ],
        police_stations=[
            PoliceStation(p["id"], p["name"], p["lat"], p["lon"], p["node"], tuple(p["units"]))
            for p in raw.get("police_stations", [])
        ],
        highway_stations=[
            HighwayStation(h["id"], h["name"], h["segment"], h["lat"], h["lon"])
            for h in raw.get("highway_stations", [])
        ],
        landmarks=[
            Landmark(m["id"], m["name"], m["lat"], m["lon"]) for m in raw.get("landmarks", [])
        ],
        districts=[
            District(d["id"], d["name"], tuple(tuple(p) for p in d["polygon"]))
            for d in raw.get("districts", [])
        ],
        road_aliases=dict(raw.get("road_aliases", {})),
        raw=raw,
    )


def _intersection(x: dict[str, Any]) -> Intersection:
    plan = x["plan"]
    return Intersection(
        id=x["id"],
        name=x.get("name", x["id"]),
        node=x["node"],
        plan=SignalPlan(
            cycle_s=float(plan["cycle_s"]),
            offset_s=float(plan.get("offset_s", 0)),
            yellow_s=float(plan.get("yellow_s", 3)),
            all_red_s=float(plan.get("all_red_s", 2)),
            phases=tuple(
                SignalPhase(p["name"], float(p["green_s"]), tuple(p["approaches"]))
                for p in plan["phases"]
            ),
        ),
        stop_lines={k: (float(v[0]), float(v[1])) for k, v in x["stop_lines"].items()},
    )


# ---------------------------------------------------------------------------------------
# Validation: each check appends "feature id: what is wrong" lines.


def problems(raw: dict[str, Any]) -> list[str]:
    """Everything wrong with a pack, each line naming the feature; empty if it is valid."""
    out: list[str] = []
    if raw.get("format") != FORMAT:
        return [f"format is {raw.get('format')!r}, expected {FORMAT!r}"]
    for key in ("name", "bounds", "nodes", "segments"):
        if key not in raw:
            out.append(f"missing {key!r}")
    if out:
        return out
    bounds = raw["bounds"]
    if not (
        isinstance(bounds, list)
        and len(bounds) == 4
        and bounds[0] < bounds[2]
        and bounds[1] < bounds[3]
    ):
        return [f"bounds {bounds!r} should be [south, west, north, east]"]
    inside = _inside(bounds)
    out += _check_nodes(raw["nodes"], inside)
    out += _check_segments(raw["segments"], raw["nodes"])
    if out:
        return out  # the rest relies on a sound graph
    out += _check_connectivity(raw)
    out += _check_intersections(raw)
    out += _check_zones(raw.get("no_parking_zones", []), inside)
    out += _check_police(raw.get("police_stations", []), raw["nodes"], inside)
    out += _check_highway(raw.get("highway_stations", []), raw["segments"], inside)
    out += _check_landmarks(raw.get("landmarks", []), inside)
    out += _check_aliases(raw.get("road_aliases", {}), raw["segments"])
    out += _check_districts(raw.get("districts", []), raw["nodes"], inside)
    return out


def _inside(bounds: list[float]) -> Any:
    south, west, north, east = bounds

    def check(lat: Any, lon: Any) -> bool:
        return (
            isinstance(lat, (int, float))
            and isinstance(lon, (int, float))
            and south <= lat <= north
            and west <= lon <= east
        )

    return check


def _check_nodes(nodes: Any, inside: Any) -> list[str]:
    if not isinstance(nodes, dict) or not nodes:
        return ["nodes should be a non-empty object {id: [lat, lon]}"]
    out = []
    for node_id, coord in nodes.items():
        if not (isinstance(coord, list) and len(coord) == 2):
            out.append(f"node {node_id}: coordinates should be [lat, lon], got {coord!r}")
        elif not inside(*coord):
            out.append(f"node {node_id}: {coord} is outside the city's bounds")
    return out


def _check_segments(segments: Any, nodes: dict[str, Any]) -> list[str]:
    if not isinstance(segments, list) or not segments:
        return ["segments should be a non-empty list"]
    out = []
    seen: set[str] = set()
    pairs: dict[tuple[Any, Any], str] = {}
    for seg in segments:
        sid = seg.get("id", "?")
        if sid in seen:
            out.append(f"segment {sid}: duplicate id")
        seen.add(sid)
        pair = (seg.get("from"), seg.get("to"))
        if pair in pairs:
            out.append(f"segment {sid}: runs between the same nodes as segment {pairs[pair]}")
        pairs[pair] = sid
        for end in ("from", "to"):
            if seg.get(end) not in nodes:
                out.append(f"segment {sid}: {end} node {seg.get(end)!r} does not exist")
        if seg.get("from") == seg.get("to"):
            out.append(f"segment {sid}: starts and ends at the same node")
        if seg.get("class") not in ROAD_CLASSES:
            out.append(
                f"segment {sid}: class {seg.get('class')!r} is not one of {list(ROAD_CLASSES)}"
            )
        limit = seg.get("limit_kmh")
        low, high = LIMIT_RANGE_KMH
        if not isinstance(limit, (int, float)) or not low <= limit <= high:
            out.append(f"segment {sid}: limit_kmh={limit!r} is outside {low:g}..{high:g}")
        lanes = seg.get("lanes", 1)
        if not isinstance(lanes, int) or not 1 <= lanes <= 6:
            out.append(f"segment {sid}: lanes={lanes!r} is outside 1..6")
    return out


def _check_connectivity(raw: dict[str, Any]) -> list[str]:
    node_ids = list(raw["nodes"])
    index = {n: i for i, n in enumerate(node_ids)}
    src = [index[s["from"]] for s in raw["segments"]]
    dst = [index[s["to"]] for s in raw["segments"]]
    graph = csr_matrix((np.ones(len(src)), (src, dst)), shape=(len(node_ids), len(node_ids)))
    n_components, labels = connected_components(graph, directed=True, connection="strong")
    if n_components == 1:
        return []
    main = np.bincount(labels).argmax()
    stray = {node_ids[i] for i in np.flatnonzero(labels != main)}
    roads = sorted(
        {
            s.get("road") or s["id"]
            for s in raw["segments"]
            if s["from"] in stray or s["to"] in stray
        }
    )
    shown = ", ".join(roads[:5]) + (f" and {len(roads) - 5} more" if len(roads) > 5 else "")
    return [
        f"the road graph is not strongly connected: {len(stray)} node(s) cannot reach or be "
        f"reached from the rest, e.g. node {min(stray)}, on {shown} "
        f"(a one-way street leading nowhere?)"
    ]


def _check_intersections(raw: dict[str, Any]) -> list[str]:
    nodes = raw["nodes"]
    segments = {s["id"]: s for s in raw["segments"]}
    incoming: dict[str, set[str]] = {}
    for s in raw["segments"]:
        incoming.setdefault(s["to"], set()).add(s["id"])
    out = []
    seen_nodes: set[str] = set()
    for x in raw.get("intersections", []):
        xid = x.get("id", "?")
        node = x.get("node")
        if node not in nodes:
            out.append(f"intersection {xid}: node {node!r} does not exist")
            continue
        if node in seen_nodes:
            out.append(f"intersection {xid}: node {node} already has a signal plan")
        seen_nodes.add(node)
        plan = x.get("plan") or {}
        phases = plan.get("phases") or []
        if len(phases) < 2:
            out.append(f"intersection {xid}: a plan needs at least two phases")
            continue
        yellow, all_red = plan.get("yellow_s", 3), plan.get("all_red_s", 2)
        planned = sum(p.get("green_s", 0) + yellow + all_red for p in phases)
        cycle = plan.get("cycle_s", 0)
        if abs(planned - cycle) > 0.01:
            out.append(
                f"intersection {xid}: cycle_s={cycle} but phases, yellow and all-red "
                f"add up to {planned:g}"
            )
        if not 0 <= plan.get("offset_s", 0) < max(cycle, 1e-9):
            out.append(f"intersection {xid}: offset_s={plan.get('offset_s')} is outside 0..cycle")
        if not 2 <= yellow <= 6 or not 0 <= all_red <= 5:
            out.append(f"intersection {xid}: yellow_s={yellow} / all_red_s={all_red} are not sane")
        served: list[str] = []
        for phase in phases:
            if phase.get("green_s", 0) < 5:
                out.append(f"intersection {xid}: phase {phase.get('name')} has under 5 s of green")
            served += phase.get("approaches", [])
        expected = incoming.get(node, set())
        for seg_id in served:
            if seg_id not in segments or segments[seg_id]["to"] != node:
                out.append(f"intersection {xid}: approach {seg_id} does not end at node {node}")
        missing = expected - set(served)
        if missing:
            out.append(f"intersection {xid}: approach(es) {sorted(missing)} are in no phase")
        duplicated = {s for s in served if served.count(s) > 1}
        if duplicated:
            out.append(f"intersection {xid}: approach(es) {sorted(duplicated)} are in two phases")
        stop_lines = x.get("stop_lines", {})
        for seg_id in expected:
            line = stop_lines.get(seg_id)
            if line is None:
                out.append(f"intersection {xid}: approach {seg_id} has no stop line")
                continue
            distance = float(haversine_m(line[0], line[1], *nodes[node]))
            if distance > MAX_STOP_LINE_DISTANCE_M:
                out.append(
                    f"intersection {xid}: stop line of {seg_id} is {distance:.0f} m "
                    "from the junction"
                )
    return out


def _check_zones(zones: list[dict[str, Any]], inside: Any) -> list[str]:
    out = []
    for z in zones:
        zid = z.get("id", "?")
        polygon = z.get("polygon") or []
        if z.get("parking_kind") not in PARKING_KINDS:
            out.append(
                f"no-parking zone {zid}: parking_kind {z.get('parking_kind')!r} "
                f"is not one of {list(PARKING_KINDS)}"
            )
        problem = _polygon_problem(polygon, inside)
        if problem:
            out.append(f"no-parking zone {zid}: {problem}")
            continue
        lat = np.array([p[0] for p in polygon])
        lon = np.array([p[1] for p in polygon])
        if not points_in_polygon(lon.mean(), lat.mean(), lon, lat):
            # not an error in general, but our zones are small convex-ish areas
            out.append(f"no-parking zone {zid}: its centre lies outside the polygon")
    return out


def _polygon_problem(polygon: list[Any], inside: Any) -> str | None:
    """What is wrong with a feature's polygon ``[[lat, lon], ...]``, or None."""
    if len(polygon) < 3:
        return "a polygon needs at least 3 vertices"
    if any(not (isinstance(p, list) and len(p) == 2 and inside(*p)) for p in polygon):
        return "a vertex is outside the city's bounds"
    if not polygon_is_simple([p[1] for p in polygon], [p[0] for p in polygon]):
        return "the polygon crosses itself"
    return None


def _check_police(stations: list[dict[str, Any]], nodes: dict[str, Any], inside: Any) -> list[str]:
    out = []
    units: set[str] = set()
    for p in stations:
        pid = p.get("id", "?")
        if not inside(p.get("lat"), p.get("lon")):
            out.append(f"police station {pid}: position is outside the city's bounds")
        if p.get("node") not in nodes:
            out.append(f"police station {pid}: node {p.get('node')!r} does not exist")
        if not p.get("units"):
            out.append(f"police station {pid}: has no units")
        for unit in p.get("units", []):
            if unit in units:
                out.append(f"police station {pid}: unit {unit} is listed twice")
            units.add(unit)
    return out


def _check_highway(
    stations: list[dict[str, Any]], segments: list[dict[str, Any]], inside: Any
) -> list[str]:
    by_id = {s["id"]: s for s in segments}
    out = []
    for h in stations:
        hid = h.get("id", "?")
        seg = by_id.get(h.get("segment"))
        if seg is None:
            out.append(f"highway station {hid}: segment {h.get('segment')!r} does not exist")
        elif seg["class"] != "motorway":
            out.append(f"highway station {hid}: segment {seg['id']} is not a motorway segment")
        if not inside(h.get("lat"), h.get("lon")):
            out.append(f"highway station {hid}: position is outside the city's bounds")
    return out


def _check_landmarks(landmarks: list[dict[str, Any]], inside: Any) -> list[str]:
    return [
        f"landmark {m.get('id', '?')}: position is outside the city's bounds"
        for m in landmarks
        if not inside(m.get("lat"), m.get("lon"))
    ]


def _check_aliases(aliases: Any, segments: list[dict[str, Any]]) -> list[str]:
    if not isinstance(aliases, dict):
        return ["road_aliases should be an object {alias: road name}"]
    roads = {s.get("road") for s in segments}
    return [
        f"road alias {alias!r}: names road {road!r}, which has no segment"
        for alias, road in aliases.items()
        if road not in roads
    ]


def _check_districts(
    districts: list[dict[str, Any]], nodes: dict[str, Any], inside: Any
) -> list[str]:
    """Districts must be simple polygons that cover every node, each node once."""
    if not districts:
        return []
    out = []
    seen: set[str] = set()
    node_ids = list(nodes)
    lat = np.array([nodes[n][0] for n in node_ids], dtype=float)
    lon = np.array([nodes[n][1] for n in node_ids], dtype=float)
    hits = np.zeros(len(node_ids), dtype=np.int64)
    first = np.full(len(node_ids), -1, dtype=np.int64)
    sound = []
    for i, d in enumerate(districts):
        did = d.get("id", "?")
        if did in seen:
            out.append(f"district {did}: duplicate id")
        seen.add(did)
        if not d.get("name"):
            out.append(f"district {did}: has no name")
        polygon = d.get("polygon") or []
        problem = _polygon_problem(polygon, inside)
        if problem:
            out.append(f"district {did}: {problem}")
            continue
        plat = np.array([p[0] for p in polygon])
        plon = np.array([p[1] for p in polygon])
        sound.append(i)
        inside_d = points_in_polygon(lon, lat, plon, plat)
        overlap = inside_d & (hits > 0)
        if overlap.any():
            k = int(np.flatnonzero(overlap)[0])
            other = districts[int(first[k])].get("id", "?")
            out.append(
                f"district {did}: overlaps district {other} (both contain node {node_ids[k]})"
            )
        first[inside_d & (first < 0)] = i
        hits += inside_d
    if len(sound) == len(districts):
        uncovered = [node_ids[k] for k in np.flatnonzero(hits == 0)]
        if uncovered:
            out.append(
                f"districts: {len(uncovered)} node(s) lie in no district, e.g. node {uncovered[0]}"
            )
    return out
