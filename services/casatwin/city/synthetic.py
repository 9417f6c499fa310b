"""Small synthetic cities for tests: a grid of streets near Casablanca's centre.

Built with the same :class:`PackBuilder` as the real packs, so signal plans, stop lines and
ids follow the same rules. Coordinates are real (around Place Mohammed V) so that the
Casablanca bounds and projection apply.
"""

from __future__ import annotations

import itertools
from typing import Any

from casatwin.city.build import PackBuilder
from casatwin.city.geometry import LocalProjection


def grid(
    rows: int = 5,
    cols: int = 5,
    spacing_m: float = 200.0,
    origin: tuple[float, float] = (33.585, -7.625),
    limit_kmh: float = 60.0,
    signalised: bool = True,
    oneway_rows: tuple[int, ...] = (),
    motorway: bool = False,
    parking_kind: str = "other",
) -> dict[str, Any]:
    """A ``rows`` × ``cols`` grid; row r runs west→east, column c south→north.

    Rows listed in ``oneway_rows`` are one-way eastbound. Interior junctions are signalised.
    One no-parking zone (of ``parking_kind``) surrounds the middle of row 0's second block;
    one police station sits at each of two opposite corners, two units each.

    ``motorway`` adds a two-way motorway (100 km/h, 3 lanes) one block north of the last
    row, joined to the grid at both ends, with a highway detector station in the middle of
    each block in each direction: ``hw-e1``… eastbound, ``hw-w1``… westbound.
    """
    proj = LocalProjection(*origin)

    def at(r: float, c: float) -> tuple[float, float]:
        lat, lon = proj.to_latlon(c * spacing_m, r * spacing_m)
        return round(float(lat), 6), round(float(lon), 6)

    south, west = at(-2, -2)
    north, east = at(rows + 1, cols + 1)
    b = PackBuilder(
        name="grid",
        title=f"Synthetic grid {rows}x{cols}",
        bounds=(south, west, north, east),
        attribution="synthetic",
        max_segment_m=spacing_m,
    )
    for r in range(rows):
        b.add_road(
            f"Row {r}",
            [at(r, 0), at(r, cols - 1)],
            "arterial",
            limit_kmh,
            oneway=r in oneway_rows,
        )
    for c in range(cols):
        b.add_road(f"Column {c}", [at(0, c), at(rows - 1, c)], "street", limit_kmh)
    highway_stations = _motorway(b, at, rows, cols) if motorway else []
    intersections = []
    if signalised:
        for r in range(1, rows - 1):
            for c in range(1, cols - 1):
                record = b.intersection(
                    b.node(*at(r, c)), f"Row {r} x Column {c}", len(intersections) + 1
                )
                if record is not None:
                    intersections.append(record)
    zone_centre = at(0, 1.5)
    centre = at(rows // 2, cols // 2)
    half = 30.0 / spacing_m
    zone = [
        at(-half, 1.5 - 2 * half),
        at(-half, 1.5 + 2 * half),
        at(half, 1.5 + 2 * half),
        at(half, 1.5 - 2 * half),
    ]
    stations = [
        {
            "id": "ps-sw",
            "name": "Station South-West",
            "lat": at(0, 0)[0],
            "lon": at(0, 0)[1],
            "node": b.node(*at(0, 0)),
            "units": ["PU-SW-1", "PU-SW-2"],
        },
        {
            "id": "ps-ne",
            "name": "Station North-East",
            "lat": at(rows - 1, cols - 1)[0],
            "lon": at(rows - 1, cols - 1)[1],
            "node": b.node(*at(rows - 1, cols - 1)),
            "units": ["PU-NE-1", "PU-NE-2"],
        },
    ]
    return b.pack(
        intersections=intersections,
        no_parking_zones=[
            {
                "id": "z-row0",
                "name": "Row 0 block 2",
                "parking_kind": parking_kind,
                "polygon": [list(p) for p in zone],
            }
        ],
        police_stations=stations,
        highway_stations=highway_stations,
        landmarks=[
            {"id": "centre", "name": "Grid centre", "lat": centre[0], "lon": centre[1]},
            {"id": "zone", "name": "Zone centre", "lat": zone_centre[0], "lon": zone_centre[1]},
        ],
    )


def _motorway(b: PackBuilder, at: Any, rows: int, cols: int) -> list[dict[str, Any]]:
    """The motorway north of the grid and its detector stations (see :func:`grid`)."""
    path = b.add_road("Motorway", [at(rows, 0), at(rows, cols - 1)], "motorway", 100.0, lanes=3)
    b.add_road("Link West", [at(rows - 1, 0), at(rows, 0)], "street", 50.0)
    b.add_road("Link East", [at(rows - 1, cols - 1), at(rows, cols - 1)], "street", 50.0)
    by_ends = {(s["from"], s["to"]): s["id"] for s in b.segments}
    stations = []
    eastbound = list(itertools.pairwise(path))
    westbound = [(z, a) for a, z in eastbound]
    for direction, pairs in (("e", eastbound), ("w", westbound)):
        for number, (a, z) in enumerate(pairs, start=1):
            (lat1, lon1), (lat2, lon2) = b.nodes[a], b.nodes[z]
            stations.append(
                {
                    "id": f"hw-{direction}{number}",
                    "name": f"Motorway {'east' if direction == 'e' else 'west'}bound {number}",
                    "segment": by_ends[(a, z)],
                    "lat": round((lat1 + lat2) / 2, 6),
                    "lon": round((lon1 + lon2) / 2, 6),
                }
            )
    return stations
