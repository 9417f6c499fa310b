"""Import an OpenStreetMap extract (``.osm`` XML or ``.osm.pbf``) as a city pack.

Read with pyosmium in one streaming pass: ``highway=*`` ways that cars drive on become
roads (class from the highway tag, the ``maxspeed`` tag or the class's default limit,
``oneway``, ``lanes``), ``highway=traffic_signals`` nodes mark signalised junctions (plans
from :class:`PackBuilder`, like every pack), ``amenity=police`` nodes become police stations.
Only the largest strongly connected part of the network is kept: an extract cut at its
edges leaves one-way stubs a vehicle could enter and never leave.

The data is © OpenStreetMap contributors, under the Open Database Licence; the pack's
attribution says so.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from casatwin import logs
from casatwin.city.build import DEFAULT_LANES, DEFAULT_LIMITS_KMH, PackBuilder, PruneReport
from casatwin.errors import UserError

ATTRIBUTION = "© OpenStreetMap contributors, ODbL 1.0 (https://www.openstreetmap.org/copyright)"

HIGHWAY_CLASS = {
    "motorway": "motorway",
    "motorway_link": "motorway",
    "trunk": "motorway",
    "trunk_link": "motorway",
    "primary": "arterial",
    "primary_link": "arterial",
    "secondary": "arterial",
    "secondary_link": "arterial",
    "tertiary": "street",
    "tertiary_link": "street",
    "unclassified": "street",
    "residential": "street",
    "living_street": "street",
}
IMPLIED_ONEWAY = ("motorway", "motorway_link")
# Moroccan implicit limits (maxspeed=MA:urban and friends).
IMPLICIT_LIMITS_KMH = {"urban": 60.0, "rural": 100.0, "trunk": 100.0, "motorway": 120.0}
SIGNAL_SEARCH_M = 30.0  # signals often stand on an approach, a few metres before the junction
BOUNDS_MARGIN_DEG = 0.002
PROGRESS_EVERY_S = 5.0

log = logs.get_logger("city.import")


class _Progress:
    """Logs an event with its counters at most every ``PROGRESS_EVERY_S`` seconds."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def tick(self, event: str, **fields: object) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            log.info(event, **fields)


@dataclass
class OsmExtract:
    """What the importer keeps from the file."""

    ways: list[dict[str, Any]] = field(default_factory=list)
    signals: list[tuple[float, float]] = field(default_factory=list)
    police: list[tuple[str, float, float]] = field(default_factory=list)
    objects: int = 0


@dataclass(frozen=True)
class ImportResult:
    raw: dict[str, Any]
    pruned: PruneReport
    signals_found: int
    signals_without_plan: int

    def report(self) -> dict[str, Any]:
        return {
            **self.pruned.as_dict(),
            "traffic_signal_nodes": self.signals_found,
            "signalised_junctions": len(self.raw["intersections"]),
            "signal_junctions_without_plan": self.signals_without_plan,
        }


def read(path: Path) -> OsmExtract:
    """Stream the file once, keeping drivable ways (with coordinates), signals and police."""
    import osmium

    if not path.is_file():
        raise UserError(f"no OpenStreetMap file at {path}")
    out = OsmExtract()
    processor = (
        osmium.FileProcessor(str(path))
        .with_locations()
        .with_filter(osmium.filter.KeyFilter("highway", "amenity"))
    )
    progress = _Progress()
    try:
        for obj in processor:
            out.objects += 1
            progress.tick("reading the extract", objects=out.objects, roads=len(out.ways))
            if obj.is_node():
                if obj.tags.get("highway") == "traffic_signals":
                    out.signals.append((obj.location.lat, obj.location.lon))
                if obj.tags.get("amenity") == "police":
                    name = obj.tags.get("name", "")
                    out.police.append((name, obj.location.lat, obj.location.lon))
            elif obj.is_way() and obj.tags.get("highway") in HIGHWAY_CLASS:
                coords = [(n.lat, n.lon) for n in obj.nodes if n.location.valid()]
                if len(coords) >= 2:
                    out.ways.append({"id": obj.id, "tags": dict(obj.tags), "coords": coords})
    except RuntimeError as exc:  # pyosmium reports unreadable input this way
        raise UserError(f"cannot read OpenStreetMap file {path}: {exc}") from None
    log.info(
        "extract read",
        objects=out.objects,
        roads=len(out.ways),
        signals=len(out.signals),
        police=len(out.police),
    )
    return out


def parse_maxspeed(value: str | None, default: float) -> float:
    """``"50"``, ``"50 km/h"``, ``"30 mph"``, ``"MA:urban"`` → km/h; anything else → default."""
    if not value:
        return default
    value = value.strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(km/h|kmh|kph|mph)?", value)
    if match:
        kmh = float(match.group(1)) * (1.609344 if match.group(2) == "mph" else 1.0)
        return float(min(max(round(kmh), 5), 130))
    if ":" in value:
        return IMPLICIT_LIMITS_KMH.get(value.split(":", 1)[1], default)
    return default


def road_attributes(tags: dict[str, str]) -> tuple[str, float, int, int]:
    """(class, limit km/h, lanes per direction, direction: 1 forward, -1 backward, 0 both)."""
    highway = tags["highway"]
    road_class = HIGHWAY_CLASS[highway]
    limit = parse_maxspeed(tags.get("maxspeed"), DEFAULT_LIMITS_KMH[road_class])
    oneway = tags.get("oneway", "").lower()
    if oneway in ("yes", "true", "1"):
        direction = 1
    elif oneway in ("-1", "reverse"):
        direction = -1
    elif oneway == "no":
        direction = 0
    elif tags.get("junction") in ("roundabout", "circular") or highway in IMPLIED_ONEWAY:
        direction = 1
    else:
        direction = 0
    try:
        lanes = int(tags.get("lanes", ""))
        lanes = lanes if direction else max(1, lanes // 2)
    except ValueError:
        lanes = DEFAULT_LANES[road_class]
    return road_class, limit, min(max(lanes, 1), 6), direction


def build(
    extract: OsmExtract,
    name: str,
    title: str,
    units_per_station: int = 4,
    highway_stations: int = 6,
) -> ImportResult:
    """The pack of an extract (largest strongly connected part only)."""
    if not extract.ways:
        raise UserError("the OpenStreetMap file has no drivable roads (highway=* ways)")
    lats = np.array([c[0] for w in extract.ways for c in w["coords"]])
    lons = np.array([c[1] for w in extract.ways for c in w["coords"]])
    bounds = (
        round(float(lats.min()) - BOUNDS_MARGIN_DEG, 4),
        round(float(lons.min()) - BOUNDS_MARGIN_DEG, 4),
        round(float(lats.max()) + BOUNDS_MARGIN_DEG, 4),
        round(float(lons.max()) + BOUNDS_MARGIN_DEG, 4),
    )
    builder = PackBuilder(name, title, bounds, attribution=ATTRIBUTION, snap_m=0.5)
    progress = _Progress()
    for k, way in enumerate(sorted(extract.ways, key=lambda w: w["id"]), start=1):
        progress.tick("building the graph", roads=k, of=len(extract.ways))
        tags = way["tags"]
        road_class, limit, lanes, direction = road_attributes(tags)
        coords = way["coords"][::-1] if direction < 0 else way["coords"]
        road = tags.get("name") or tags.get("ref") or ""
        builder.add_road(road, coords, road_class, limit, oneway=direction != 0, lanes=lanes)
    pruned = builder.keep_largest_component()
    log.info("kept the largest strongly connected part", **pruned.as_dict())
    intersections, without_plan = _signals(builder, extract.signals)
    return ImportResult(
        raw=builder.pack(
            intersections=intersections,
            police_stations=_police(builder, extract.police, units_per_station),
            highway_stations=_highway_stations(builder, highway_stations),
        ),
        pruned=pruned,
        signals_found=len(extract.signals),
        signals_without_plan=without_plan,
    )


def import_file(path: Path, name: str, title: str, **options: Any) -> ImportResult:
    return build(read(path), name, title, **options)


def _signals(
    builder: PackBuilder, signals: list[tuple[float, float]]
) -> tuple[list[dict[str, Any]], int]:
    """One signalised intersection per junction that has a signal at or near it."""
    if not signals:
        return [], 0
    neighbours: dict[str, set[str]] = {}
    for seg in builder.segments:
        neighbours.setdefault(seg["from"], set()).add(seg["to"])
        neighbours.setdefault(seg["to"], set()).add(seg["from"])
    junctions = [n for n in builder.nodes if len(neighbours.get(n, ())) >= 3]
    if not junctions:
        return [], 0
    proj = builder.projection
    jx, jy = proj.to_xy(*np.array([builder.nodes[n] for n in junctions]).T)
    sx, sy = proj.to_xy(*np.array(signals).T)
    distance, nearest = cKDTree(np.column_stack([jx, jy])).query(np.column_stack([sx, sy]))
    chosen = sorted({junctions[i] for i, d in zip(nearest, distance) if d <= SIGNAL_SEARCH_M})
    out, without_plan, names_used = [], 0, {}
    for node in chosen:
        roads = list(dict.fromkeys(s["road"] for s in builder.incoming(node) if s["road"]))
        name = " × ".join(roads[:2]) if roads else f"Signal {node}"
        names_used[name] = names_used.get(name, 0) + 1
        if names_used[name] > 1:
            name = f"{name} ({names_used[name]})"
        record = builder.intersection(node, name, len(out) + 1)
        if record is None:
            without_plan += 1
        else:
            out.append(record)
    return out, without_plan


def _police(
    builder: PackBuilder, police: list[tuple[str, float, float]], units: int
) -> list[dict[str, Any]]:
    south, west, north, east = builder.bounds
    out = []
    for k, (name, lat, lon) in enumerate(sorted(police, key=lambda p: (p[1], p[2])), start=1):
        if not (south <= lat <= north and west <= lon <= east):
            continue
        code = f"S{k:02d}"
        out.append(
            {
                "id": f"ps-{code.lower()}",
                "name": name or f"Police station {k}",
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "node": builder.nearest_node(lat, lon, road_classes=("arterial", "street")),
                "units": [f"PU-{code}-{u}" for u in range(1, units + 1)],
            }
        )
    return out


def _highway_stations(builder: PackBuilder, count: int) -> list[dict[str, Any]]:
    """Detector stations spread evenly over the motorway segments (OSM does not map them)."""
    motorway = [s for s in builder.segments if s["class"] == "motorway"]
    if not motorway or count <= 0:
        return []
    picks = sorted({int(i) for i in np.linspace(0, len(motorway) - 1, count)})
    out = []
    for k, i in enumerate(picks, start=1):
        seg = motorway[i]
        (lat1, lon1), (lat2, lon2) = builder.nodes[seg["from"]], builder.nodes[seg["to"]]
        out.append(
            {
                "id": f"hs{k:02d}",
                "name": f"{seg['road'] or 'Motorway'} station {k}",
                "segment": seg["id"],
                "lat": round((lat1 + lat2) / 2, 6),
                "lon": round((lon1 + lon2) / 2, 6),
            }
        )
    return out
