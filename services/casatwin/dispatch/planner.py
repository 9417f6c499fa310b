"""Where things are on the road network, and which free unit reaches an incident first.

The planner turns an infraction into a :class:`~casatwin.dispatch.nearest.Place` (its
segment, and how far along it the reported position lies), keeps the routing weights
current from the congestion windows (free-flow until a segment's speed is known), and
asks :func:`~casatwin.dispatch.nearest.choose` for the unit. Pure: no I/O, time is a
parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from casatwin.city.geometry import project_on_segments
from casatwin.city.model import CityPack
from casatwin.city.routing import Router
from casatwin.dispatch.nearest import Choice, Place, choose


class UnknownPlace(ValueError):
    """An infraction that cannot be put on this city's road network."""


@dataclass(frozen=True)
class Incident:
    """What the dispatcher needs of an infraction."""

    infraction_id: str
    type: str
    event_ts: int
    lat: float
    lon: float
    place: Place
    severity: int


class Queued(Protocol):
    """What the queue keeps of an incident (a ``dispatch_assignments`` row)."""

    infraction_id: str
    infraction_type: str
    created_ms: int
    severity: int
    segment_id: str | None
    offset_m: float | None
    lat: float | None
    lon: float | None


def severity(decision: dict[str, Any]) -> int:
    """0 for a délit or a court case, then the contravention class (1 is the most serious)."""
    if decision.get("delit") or decision.get("court"):
        return 0
    klass = decision.get("class")
    return int(klass) if isinstance(klass, int) and not isinstance(klass, bool) else 9


Freshness = tuple[int, int]  # a congestion window's (window_end, window_start), in that order


def freshness(window: Mapping[str, Any]) -> Freshness:
    """How recent a congestion window is: the later end, then the later start, is newer."""
    return int(window["window_end"]), int(window["window_start"])


def supersedes(window: Freshness, current: Freshness | None) -> bool:
    """Whether a segment's speed from ``window`` replaces the one from ``current``.

    Not if it is older: the topic may carry a window again after a newer one (a late
    re-publication). The same window again does replace it: an update-mode query
    re-emits a window as more fixes come in.
    """
    return current is None or window >= current


class Planner:
    """Routing state of one dispatcher: the pack, the current weights, the unit homes."""

    def __init__(self, pack: CityPack, min_speed_kmh: float = 5.0) -> None:
        self.pack = pack
        self.min_speed_kmh = min_speed_kmh
        self.router = Router(pack)
        self._weights = pack.seg_free_flow_s.copy()
        self._speed_window: dict[int, Freshness] = {}  # the window each known speed is from
        self._dirty = False
        self.station_of = {u: s.id for s in pack.police_stations for u in s.units}
        homes = [Place(*pack.station_place(i)) for i in range(len(pack.police_stations))]
        self.place_units({u: homes[i] for i, s in enumerate(pack.police_stations) for u in s.units})

    def place_units(self, home: dict[str, Place]) -> None:
        """Where each unit is taken to be when free (its position computed once)."""
        self.home = dict(home)
        self._home_latlon = {unit: self.latlon(place) for unit, place in self.home.items()}

    # -- incidents -----------------------------------------------------------------------

    def incident(self, infraction: dict[str, Any]) -> Incident:
        """The incident of a (valid) infraction; :class:`UnknownPlace` if it is not on the map."""
        return Incident(
            infraction["infraction_id"],
            infraction["type"],
            infraction["event_ts"],
            float(infraction["lat"]),
            float(infraction["lon"]),
            self.locate(infraction),
            severity(infraction["decision"]),
        )

    def queued_incident(self, queued: Queued) -> Incident:
        """The incident of a queued record; :class:`UnknownPlace` if its segment is not in
        this pack (it was queued under another version of the pack)."""
        return Incident(
            queued.infraction_id,
            queued.infraction_type,
            queued.created_ms,
            float(queued.lat or 0.0),
            float(queued.lon or 0.0),
            Place(self._segment(queued.segment_id or ""), float(queued.offset_m or 0.0)),
            queued.severity,
        )

    def _segment(self, segment_id: str) -> int:
        segment = self.pack.segment_index.get(segment_id)
        if segment is None:
            raise UnknownPlace(f"segment {segment_id!r} is not in city pack {self.pack.name!r}")
        return segment

    def locate(self, infraction: dict[str, Any]) -> Place:
        pack = self.pack
        segment_id = infraction.get("segment_id")
        if segment_id:
            segment = self._segment(segment_id)
        elif infraction.get("intersection_id"):
            where = pack.intersection_index.get(infraction["intersection_id"])
            if where is None:
                raise UnknownPlace(
                    f"intersection {infraction['intersection_id']!r} is not in city pack "
                    f"{pack.name!r}"
                )
            node = pack.node_index[pack.intersections[where].node]
            into = pack.segments_into(node)
            if not len(into):
                raise UnknownPlace(f"no road leads to intersection {infraction['intersection_id']}")
            return Place(int(into[0]), float(pack.seg_length_m[into[0]]))
        else:
            raise UnknownPlace("the infraction names neither a segment nor an intersection")
        return Place(segment, self._offset(segment, infraction["lat"], infraction["lon"]))

    def _offset(self, segment: int, lat: float, lon: float) -> float:
        pack = self.pack
        x, y = pack.projection.to_xy(lat, lon)
        nx, ny = pack.node_xy
        a, b = pack.seg_from[segment], pack.seg_to[segment]
        t, _ = project_on_segments(x, y, nx[a], ny[a], nx[b], ny[b])
        return float(t) * float(pack.seg_length_m[segment])

    def latlon(self, place: Place) -> tuple[float, float]:
        pack = self.pack
        a, b = pack.seg_from[place.segment], pack.seg_to[place.segment]
        f = min(1.0, place.offset_m / float(pack.seg_length_m[place.segment]))
        lat = pack.node_lat[a] + (pack.node_lat[b] - pack.node_lat[a]) * f
        lon = pack.node_lon[a] + (pack.node_lon[b] - pack.node_lon[a]) * f
        return float(lat), float(lon)

    # -- choosing ------------------------------------------------------------------------

    def choose_free(self, incident: Incident, free: list[str]) -> Choice | None:
        """Among the free unit ids, the one that arrives first (each taken at its home)."""
        units = {u: self.home[u] for u in free if u in self.home}
        where = {u: self._home_latlon[u] for u in units}
        return choose(
            self.pack, self.router, incident.place, (incident.lat, incident.lon), units, where
        )

    def segment_id(self, incident: Incident) -> str:
        return self.pack.segment_ids[incident.place.segment]

    def route_latlon(self, route: np.ndarray) -> list[list[float]]:
        """The route as [[lat, lon], ...] through its nodes (what the dashboard draws)."""
        pack = self.pack
        if not len(route):
            return []
        nodes = [int(pack.seg_from[route[0]]), *(int(pack.seg_to[s]) for s in route)]
        return [[float(pack.node_lat[n]), float(pack.node_lon[n])] for n in nodes]

    # -- congestion ----------------------------------------------------------------------

    def observe_speed(
        self, segment_id: str, speed_kmh: float, window: Freshness | None = None
    ) -> bool:
        """Use a segment's current speed, from the congestion ``window`` (None: taken as
        current); False if the segment is unknown or the window older than the one in use."""
        segment = self.pack.segment_index.get(segment_id)
        if segment is None:
            return False
        if window is not None:
            if not supersedes(window, self._speed_window.get(segment)):
                return False
            self._speed_window[segment] = window
        speed = max(float(speed_kmh), self.min_speed_kmh) / 3.6
        self._weights[segment] = float(self.pack.seg_length_m[segment]) / speed
        self._dirty = True
        return True

    def refresh(self) -> bool:
        """Rebuild the routing graph if speeds changed since the last refresh."""
        if not self._dirty:
            return False
        self.router = Router(self.pack, self._weights.copy())
        self._dirty = False
        return True
