"""The city pack as the JSON the map draws (served at ``/api/city``).

The browser gets arrays, not features: node coordinates once, and per segment its two end
nodes, class, road name index and id (congestion windows name segments by id). Two-way
streets are two directed segments; both are kept because congestion is per direction.
"""

from __future__ import annotations

from typing import Any

from casatwin.city.model import ROAD_CLASSES, CityPack
from casatwin.config import Settings
from casatwin.errors import UserError
from casatwin.logs import get_logger

log = get_logger("dashboard")


def load_pack(settings: Settings) -> tuple[CityPack | None, str]:
    """The city pack of the settings, or (None, why) — the live view runs without roads."""
    from casatwin.city.load import load_city

    try:
        pack = load_city(settings.city)
    except UserError as exc:
        log.warning(
            "city pack unavailable; the map shows vehicles without roads",
            pack=settings.city.pack,
            reason=exc.message,
        )
        return None, exc.message
    return pack, ""


def police_units(pack: CityPack | None) -> dict[str, str]:
    """Unit id → station name, the units the dashboard lists before any dispatch."""
    if pack is None:
        return {}
    return {unit: station.name for station in pack.police_stations for unit in station.units}


def city_json(pack: CityPack | None, problem: str = "") -> dict[str, Any]:
    if pack is None:
        empty_segments = {"id": [], "a": [], "b": [], "class": [], "road": [], "limit": []}
        return {
            "name": "", "title": "", "attribution": "", "bounds": None, "classes": [],
            "nodes": [], "segments": empty_segments, "roads": [], "intersections": [],
            "police_stations": [], "districts": [], "problem": problem,
        }  # fmt: skip
    roads = pack.roads()
    road_index = {name: i for i, name in enumerate(roads)}
    class_index = {name: i for i, name in enumerate(ROAD_CLASSES)}
    lat, lon = pack.node_lat, pack.node_lon
    return {
        "name": pack.name,
        "title": pack.title,
        "attribution": pack.attribution,
        "bounds": list(pack.bounds),
        "classes": list(ROAD_CLASSES),
        "nodes": [[round(float(a), 6), round(float(b), 6)] for a, b in zip(lat, lon)],
        "segments": {
            "id": pack.segment_ids,
            "a": pack.seg_from.tolist(),
            "b": pack.seg_to.tolist(),
            "class": [class_index[c] for c in pack.seg_class],
            "road": [road_index[r] for r in pack.seg_road],
            "limit": pack.seg_limit_kmh.astype(int).tolist(),
        },
        "roads": roads,
        "intersections": [
            {"id": x.id, "name": x.name, "node": pack.node_index[x.node]}
            for x in pack.intersections
        ],
        "police_stations": [
            {"id": p.id, "name": p.name, "lat": p.lat, "lon": p.lon, "units": list(p.units)}
            for p in pack.police_stations
        ],
        "districts": _districts(pack),
        "problem": "",
    }


def _districts(pack: CityPack) -> list[dict[str, Any]]:
    """Districts (arrondissements): name and polygon, drawn as outlines on the map."""
    return [
        {"id": d.id, "name": d.name, "polygon": [list(p) for p in d.polygon]}
        for d in pack.districts
    ]
