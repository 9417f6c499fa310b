"""What the processor needs from the city pack, as arrays indexed by segment position.

Built once per process from the pack (:func:`for_city` caches it per Python worker, since
Spark reuses its workers from task to task). The signal plans are read through
:class:`~casatwin.city.signals.SignalTable`, the single source of truth for phases.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from casatwin.city.geometry import project_on_segments
from casatwin.city.load import load_city
from casatwin.city.model import CityPack
from casatwin.city.signals import SignalTable
from casatwin.config import CitySettings
from casatwin.processor.mapmatch import MapMatcher


@dataclass(frozen=True)
class Zone:
    id: str
    parking_kind: str
    x: NDArray[np.float64]
    y: NDArray[np.float64]


class RoadNetwork:
    """Segments, stop lines, signal plans and no-parking zones of one city pack."""

    def __init__(self, pack: CityPack) -> None:
        self.pack = pack
        self.matcher = MapMatcher(pack)
        self.signals = SignalTable.from_pack(pack)
        n = pack.n_segments
        self.limit_kmh = pack.seg_limit_kmh
        self.length_m = self.matcher.length_m
        self.from_node = pack.seg_from
        self.to_node = pack.seg_to
        self.segment_ids = pack.segment_ids
        # Stop lines: per approach segment, metres from its start and the line's position.
        self.stop_along_m = np.full(n, np.nan)
        self.stop_lat = np.full(n, np.nan)
        self.stop_lon = np.full(n, np.nan)
        self.intersection_ids: list[str | None] = [None] * n
        m = self.matcher
        for x in pack.intersections:
            for seg_id, (lat, lon) in x.stop_lines.items():
                s = pack.segment_index[seg_id]
                px, py = pack.projection.to_xy(lat, lon)
                t, _ = project_on_segments(px, py, m.ax[s], m.ay[s], m.bx[s], m.by[s])
                self.stop_along_m[s] = float(t) * self.length_m[s]
                self.stop_lat[s], self.stop_lon[s] = lat, lon
                self.intersection_ids[s] = x.id
        self.zones = []
        for z in pack.no_parking_zones:
            lat = np.array([p[0] for p in z.polygon])
            lon = np.array([p[1] for p in z.polygon])
            zx, zy = pack.projection.to_xy(lat, lon)
            self.zones.append(Zone(z.id, z.parking_kind, zx, zy))

    @cached_property
    def _zone_bboxes(self) -> NDArray[np.float64]:
        return np.array([[z.x.min(), z.y.min(), z.x.max(), z.y.max()] for z in self.zones]).reshape(
            -1, 4
        )

    def zone_of(self, x: ArrayLike, y: ArrayLike) -> NDArray[np.int64]:
        """Index of the no-parking zone containing each point, or -1 (vectorised)."""
        from casatwin.city.geometry import points_in_polygon

        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        out = np.full(len(x), -1, dtype=np.int64)
        for i, (zone, box) in enumerate(zip(self.zones, self._zone_bboxes)):
            near = np.flatnonzero(
                (out < 0) & (x >= box[0]) & (y >= box[1]) & (x <= box[2]) & (y <= box[3])
            )
            if len(near):
                inside = points_in_polygon(x[near], y[near], zone.x, zone.y)
                out[near[inside]] = i
        return out

    def district_of(self, lat: float, lon: float) -> str | None:
        """The district a point lies in, or None (outside every district, or a pack with
        none)."""
        return self.pack.district_of(lat, lon) or None


@lru_cache(maxsize=4)
def for_city(city: CitySettings) -> RoadNetwork:
    """The network of the city (:func:`~casatwin.city.load.load_city`: the pack with the
    configured limits), built once per process."""
    return RoadNetwork(load_city(city))
