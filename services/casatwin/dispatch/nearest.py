"""Choosing the police unit that reaches an incident first, by road (pure).

One reverse shortest-path search from the incident gives every node's travel time *to* it;
each unit's time is then the rest of its current segment plus its segment end's time, so
choosing among 100 units costs one Dijkstra and a few array operations. Straight-line
distance only breaks ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from casatwin.city.geometry import haversine_m
from casatwin.city.model import CityPack
from casatwin.city.routing import Router

TIE_RESOLUTION_S = 0.1  # times closer than this are a tie, broken by distance


@dataclass(frozen=True)
class Place:
    """A point on the road network: a segment and how far along it, in metres."""

    segment: int
    offset_m: float


@dataclass(frozen=True)
class Choice:
    unit_id: str
    eta_s: float
    crow_m: float
    route: NDArray[np.int64]  # segments from the unit's segment to the incident's


def _seconds_per_metre(router: Router, segment: int) -> float:
    return float(router.weights_s[segment] / router.pack.seg_length_m[segment])


def travel_times(
    pack: CityPack, router: Router, incident: Place, units: list[Place]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Each unit's travel time to the incident (inf if it cannot get there), and the
    search tree (successors) for building routes."""
    to_node, successors = router.times_to(int(pack.seg_from[incident.segment]))
    seg = np.array([u.segment for u in units], dtype=np.int64)
    offset = np.array([u.offset_m for u in units], dtype=float)
    pace = router.weights_s[seg] / pack.seg_length_m[seg]  # s per metre on each unit's segment
    rest_of_segment = np.maximum(pack.seg_length_m[seg] - offset, 0.0) * pace
    into_incident = incident.offset_m * _seconds_per_metre(router, incident.segment)
    times = rest_of_segment + to_node[pack.seg_to[seg]] + into_incident
    # A unit already on the incident's segment, behind it, just drives on.
    behind = (seg == incident.segment) & (offset <= incident.offset_m)
    times[behind] = (incident.offset_m - offset[behind]) * pace[behind]
    return times, successors


def choose(
    pack: CityPack,
    router: Router,
    incident: Place,
    incident_latlon: tuple[float, float],
    units: dict[str, Place],
    unit_latlon: dict[str, tuple[float, float]],
) -> Choice | None:
    """The available unit that reaches the incident first, or None if none can."""
    if not units:
        return None
    ids = list(units)
    places = [units[i] for i in ids]
    times, successors = travel_times(pack, router, incident, places)
    lat = np.array([unit_latlon[i][0] for i in ids])
    lon = np.array([unit_latlon[i][1] for i in ids])
    crow = haversine_m(lat, lon, *incident_latlon)
    order = np.lexsort((crow, np.round(times / TIE_RESOLUTION_S)))
    best = int(order[0])
    if not np.isfinite(times[best]):
        return None
    return Choice(
        ids[best],
        float(times[best]),
        float(crow[best]),
        _route(pack, router, successors, places[best], incident),
    )


def _route(
    pack: CityPack, router: Router, successors: NDArray[np.int64], unit: Place, incident: Place
) -> NDArray[np.int64]:
    if unit.segment == incident.segment and unit.offset_m <= incident.offset_m:
        return np.array([unit.segment], dtype=np.int64)
    middle = router.path_via_successors(
        successors, int(pack.seg_to[unit.segment]), int(pack.seg_from[incident.segment])
    )
    return np.concatenate([[unit.segment], middle, [incident.segment]]).astype(np.int64)
