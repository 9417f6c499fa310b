"""The road network as the simulator sees it: flat per-segment arrays, computed once.

Everything the stepping loop needs about a segment is one array lookup away (length,
speed limit, where its stop line is, which intersection it approaches, its end points for
positions and headings), so a step indexes arrays with the vehicles' segment numbers and
never touches Python objects of the city pack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from casatwin.city.geometry import points_in_polygon, project_on_segments
from casatwin.city.model import CityPack
from casatwin.city.signals import SignalTable

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

PARKING_SAMPLE_M = 4.0  # spacing of the points tested against no-parking polygons


@dataclass(frozen=True)
class ParkingSpot:
    """A place on a segment inside a no-parking zone, where an illegal parker stops."""

    zone: int  # index in pack.no_parking_zones
    segment: int
    offset_m: float


@dataclass
class RoadNetwork:
    """Per-segment arrays (indexed by segment position in the pack) plus the signal table."""

    pack: CityPack
    signals: SignalTable
    length_m: FloatArray
    limit_ms: FloatArray  # speed limit in m/s
    lanes: IntArray
    stop_m: FloatArray  # offset of the stop line (== length when there is none)
    has_signal: NDArray[np.bool_]
    approach_of: IntArray  # intersection index the segment approaches, or -1
    lat0: FloatArray
    lon0: FloatArray
    dlat: FloatArray
    dlon: FloatArray
    heading_deg: FloatArray
    parking_spots: list[ParkingSpot]

    @classmethod
    def from_pack(cls, pack: CityPack) -> RoadNetwork:
        signals = SignalTable.from_pack(pack)
        length = pack.seg_length_m.astype(float)
        a, b = pack.seg_from, pack.seg_to
        return cls(
            pack=pack,
            signals=signals,
            length_m=length,
            limit_ms=pack.seg_limit_kmh / 3.6,
            lanes=np.maximum(pack.seg_lanes, 1),
            stop_m=_stop_line_offsets(pack, length),
            has_signal=signals.intersection >= 0,
            approach_of=signals.intersection.copy(),
            lat0=pack.node_lat[a].copy(),
            lon0=pack.node_lon[a].copy(),
            dlat=pack.node_lat[b] - pack.node_lat[a],
            dlon=pack.node_lon[b] - pack.node_lon[a],
            heading_deg=pack.seg_bearing_deg.copy(),
            parking_spots=_parking_spots(pack, length),
        )

    @property
    def n_segments(self) -> int:
        return len(self.length_m)

    @property
    def max_lanes(self) -> int:
        return int(self.lanes.max())

    def latlon(self, segment: IntArray, offset_m: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Positions of points ``offset_m`` along ``segment`` (straight segments)."""
        f = np.clip(offset_m / self.length_m[segment], 0.0, 1.0)
        return self.lat0[segment] + f * self.dlat[segment], self.lon0[segment] + f * self.dlon[
            segment
        ]

    def spots_in_zone(self, zone: int) -> list[ParkingSpot]:
        return [s for s in self.parking_spots if s.zone == zone]


def _stop_line_offsets(pack: CityPack, length: FloatArray) -> FloatArray:
    """Where each approach's stop line lies along it: the pack's stop-line point projected
    on the segment. Segments without a signal get their full length (no stop line)."""
    stop = length.copy()
    x, y = pack.node_xy
    for intersection in pack.intersections:
        for seg_id, (lat, lon) in intersection.stop_lines.items():
            s = pack.segment_index[seg_id]
            px, py = pack.projection.to_xy(lat, lon)
            a, b = pack.seg_from[s], pack.seg_to[s]
            fraction, _ = project_on_segments(px, py, x[a], y[a], x[b], y[b])
            stop[s] = float(fraction) * length[s]
    return stop


def _parking_spots(pack: CityPack, length: FloatArray) -> list[ParkingSpot]:
    """For each zone, the segments that run through it and the middle of their stretch
    inside the polygon (motorways excluded: nobody parks on the urban motorway)."""
    if not pack.no_parking_zones:
        return []
    x, y = pack.node_xy
    seg = np.array([s for s in range(pack.n_segments) if pack.seg_class[s] != "motorway"])
    if len(seg) == 0:
        return []
    samples = np.maximum(np.ceil(length[seg] / PARKING_SAMPLE_M).astype(int), 1)
    owner = np.repeat(np.arange(len(seg)), samples)
    starts = np.concatenate([[0], np.cumsum(samples)[:-1]])
    fraction = (np.arange(len(owner)) - starts[owner] + 0.5) / samples[owner]
    a, b = pack.seg_from[seg[owner]], pack.seg_to[seg[owner]]
    px = x[a] + fraction * (x[b] - x[a])
    py = y[a] + fraction * (y[b] - y[a])
    spots = []
    for z, zone in enumerate(pack.no_parking_zones):
        poly_x, poly_y = pack.projection.to_xy(
            [p[0] for p in zone.polygon], [p[1] for p in zone.polygon]
        )
        inside = points_in_polygon(px, py, poly_x, poly_y)
        for k in np.unique(owner[inside]):
            fractions = fraction[inside & (owner == k)]
            s = int(seg[k])
            spots.append(ParkingSpot(z, s, float(np.median(fractions) * length[s])))
    return spots
