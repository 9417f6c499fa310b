"""Scripted drives on a city pack, for the processor's tests: telemetry a test can reason about.

A :class:`Drive` follows a path of segments at a set speed, one fix per second, stopping at
the stop line of a red (or yellow) approach unless told to run red lights, and can park.
Positions are exact points on the segments; heading is the segment's bearing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from casatwin.city.signals import GREEN
from casatwin.processor.detectors import Fix
from casatwin.processor.network import RoadNetwork

T0 = 1_800_000_000_000  # a round epoch-ms start for scripted scenarios


def path_along(net: RoadNetwork, road: str, direction: int = 1) -> list[int]:
    """The segments of a road in driving order (direction 1: as drawn, -1: reverse)."""
    pack = net.pack
    segs = [int(s) for s in pack.road_segments(road)]
    forward = [s for s in segs if not _is_reverse(pack, s, segs)]
    chain = _chain(pack, forward)
    if direction == 1:
        return chain
    rev = pack.reverse_segment
    return [int(rev[s]) for s in reversed(chain)]


def _is_reverse(pack: Any, s: int, segs: list[int]) -> bool:
    rev = int(pack.reverse_segment[s])
    return rev in segs and rev < s


def _chain(pack: Any, segs: list[int]) -> list[int]:
    starts = {int(pack.seg_from[s]): s for s in segs}
    ends = {int(pack.seg_to[s]) for s in segs}
    first = next(s for s in segs if int(pack.seg_from[s]) not in ends)
    chain = [first]
    while int(pack.seg_to[chain[-1]]) in starts:
        chain.append(starts[int(pack.seg_to[chain[-1]])])
    return chain


def position(net: RoadNetwork, segment: int, along_m: float) -> tuple[float, float]:
    pack = net.pack
    a, b = pack.seg_from[segment], pack.seg_to[segment]
    f = min(max(along_m / net.length_m[segment], 0.0), 1.0)
    lat = pack.node_lat[a] + f * (pack.node_lat[b] - pack.node_lat[a])
    lon = pack.node_lon[a] + f * (pack.node_lon[b] - pack.node_lon[a])
    return round(float(lat), 7), round(float(lon), 7)


@dataclass
class Drive:
    """One vehicle's scripted trip; :meth:`fixes` returns its telemetry messages."""

    net: RoadNetwork
    vehicle_id: str
    path: list[int]
    start_ts: int = T0
    start_along_m: float = 0.0
    kind: str = "taxi_petit"
    speeds_kmh: list[float] = field(default_factory=lambda: [50.0])  # per second; last repeats
    runs_red: bool = False
    duration_s: int = 60

    def fixes(self) -> list[dict[str, Any]]:
        """One fix per second: position now, and the speed held over the next second."""
        out = []
        i, along = 0, self.start_along_m
        for k in range(self.duration_s):
            ts = self.start_ts + k * 1000
            seg = self.path[i]
            step = self.speeds_kmh[min(k, len(self.speeds_kmh) - 1)] / 3.6
            stop = self.net.stop_along_m[seg]
            if not self.runs_red and not np.isnan(stop) and along < stop <= along + step:
                crossing_s = ts / 1000 + (stop - along) / step
                if int(self.net.signals.colour(seg, crossing_s)) != GREEN:
                    step = max(0.0, stop - 0.5 - along)  # up to the line, and wait there
            out.append(self._fix(ts, *position(self.net, seg, along), step * 3.6, seg))
            along += step
            while along >= self.net.length_m[self.path[i]]:
                along -= self.net.length_m[self.path[i]]
                i += 1
                if i >= len(self.path):
                    return out
        return out

    def _fix(self, ts: int, lat: float, lon: float, speed: float, seg: int) -> dict[str, Any]:
        return {
            "vehicle_id": self.vehicle_id,
            "kind": self.kind,
            "ts": ts,
            "lat": lat,
            "lon": lon,
            "speed_kmh": float(speed),
            "heading_deg": round(float(self.net.pack.seg_bearing_deg[seg]), 1),
            "source": "sim",
        }


def matched(net: RoadNetwork, messages: list[dict[str, Any]]) -> list[Fix]:
    """The messages as the detectors see them: map-matched, projected, zoned."""
    lat = np.array([m["lat"] for m in messages])
    lon = np.array([m["lon"] for m in messages])
    speed = np.array([m["speed_kmh"] for m in messages])
    match = net.matcher.match(lat, lon, [m["heading_deg"] for m in messages], speed)
    x, y = net.pack.projection.to_xy(lat, lon)
    zone = net.zone_of(x, y)
    return [
        Fix(m["ts"], m["lat"], m["lon"], float(x[k]), float(y[k]), m["speed_kmh"],
            int(match.segment[k]), float(match.along_m[k]), int(zone[k]))
        for k, m in enumerate(messages)
    ]  # fmt: skip
