"""Map matching: which directed road segment each GPS fix is on. Pure and vectorised.

The processor never trusts a segment id sent by a device: it matches lat/lon itself, so a
real GPS box works like a simulated taxi. Segments are indexed in a uniform grid of cells a
little larger than the search radius; a fix is compared with every segment registered in
its cell (a padded candidate matrix, one row per fix), and the cheapest wins:

    cost = distance to the segment (m) + heading_weight_m × (heading difference / 90°)

The heading term is what tells the two directions of a two-way street apart (same
geometry, opposite bearings) and prefers the street a vehicle drives along over the cross
street at a junction. It is ignored for vehicles slower than ``min_heading_speed_kmh``,
whose GPS heading is noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from casatwin.city.geometry import angle_diff_deg, project_on_segments
from casatwin.city.model import CityPack

NO_SEGMENT = -1


@dataclass(frozen=True)
class Match:
    """Per fix: segment index (or ``NO_SEGMENT``), metres from the segment's start along it,
    and distance from the road."""

    segment: NDArray[np.int64]
    along_m: NDArray[np.float64]
    distance_m: NDArray[np.float64]


class MapMatcher:
    def __init__(
        self,
        pack: CityPack,
        max_distance_m: float = 25.0,
        heading_weight_m: float = 30.0,
        min_heading_speed_kmh: float = 5.0,
        sample_step_m: float = 10.0,
    ) -> None:
        self.pack = pack
        self.max_distance_m = max_distance_m
        self.heading_weight_m = heading_weight_m
        self.min_heading_speed_kmh = min_heading_speed_kmh
        x, y = pack.node_xy
        self.ax, self.ay = x[pack.seg_from], y[pack.seg_from]
        self.bx, self.by = x[pack.seg_to], y[pack.seg_to]
        self.length_m = np.hypot(self.bx - self.ax, self.by - self.ay)
        self.bearing = pack.seg_bearing_deg
        # A point within max_distance of a segment is within max_distance + step/2 of one of
        # its samples, hence in the 3×3 block of cells around that sample's cell.
        self.cell_m = max_distance_m + sample_step_m
        self._build_grid(sample_step_m)

    def _build_grid(self, step_m: float) -> None:
        margin = 2 * self.cell_m
        self.x0 = float(min(self.ax.min(), self.bx.min())) - margin
        self.y0 = float(min(self.ay.min(), self.by.min())) - margin
        x1 = float(max(self.ax.max(), self.bx.max())) + margin
        y1 = float(max(self.ay.max(), self.by.max())) + margin
        self.ncols = int(np.ceil((x1 - self.x0) / self.cell_m)) + 1
        self.nrows = int(np.ceil((y1 - self.y0) / self.cell_m)) + 1
        samples_per_seg = np.maximum(np.ceil(self.length_m / step_m).astype(np.int64), 1) + 1
        seg = np.repeat(np.arange(len(self.length_m)), samples_per_seg)
        starts = np.concatenate([[0], np.cumsum(samples_per_seg)[:-1]])
        t = (np.arange(len(seg)) - np.repeat(starts, samples_per_seg)) / np.repeat(
            samples_per_seg - 1, samples_per_seg
        )
        sx = self.ax[seg] + t * (self.bx[seg] - self.ax[seg])
        sy = self.ay[seg] + t * (self.by[seg] - self.ay[seg])
        col = ((sx - self.x0) // self.cell_m).astype(np.int64)
        row = ((sy - self.y0) // self.cell_m).astype(np.int64)
        cells, segs = [], []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                cells.append((row + dr) * self.ncols + (col + dc))
                segs.append(seg)
        pairs = np.unique(np.stack([np.concatenate(cells), np.concatenate(segs)]), axis=1)
        cell_of_pair, self.cell_segments = pairs[0], pairs[1]
        counts = np.bincount(cell_of_pair, minlength=self.nrows * self.ncols)
        self.cell_ptr = np.concatenate([[0], np.cumsum(counts)])

    def candidates(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.int64]:
        """Candidate segments per point, padded with ``NO_SEGMENT`` (shape n × max per cell)."""
        col = np.floor((x - self.x0) / self.cell_m).astype(np.int64)
        row = np.floor((y - self.y0) / self.cell_m).astype(np.int64)
        inside = (col >= 0) & (col < self.ncols) & (row >= 0) & (row < self.nrows)
        cell = np.where(inside, row * self.ncols + col, 0)
        first = self.cell_ptr[cell]
        count = np.where(inside, self.cell_ptr[cell + 1] - first, 0)
        width = int(count.max()) if len(count) else 0
        k = np.arange(width)
        index = first[:, None] + k[None, :]
        valid = k[None, :] < count[:, None]
        picked = self.cell_segments[np.minimum(index, len(self.cell_segments) - 1)]
        return np.where(valid, picked, NO_SEGMENT)

    def match(
        self, lat: ArrayLike, lon: ArrayLike, heading_deg: ArrayLike, speed_kmh: ArrayLike
    ) -> Match:
        x, y = self.pack.projection.to_xy(lat, lon)
        x, y = np.atleast_1d(x), np.atleast_1d(y)
        n = len(x)
        cand = self.candidates(x, y)
        if cand.shape[1] == 0:
            return Match(np.full(n, NO_SEGMENT, dtype=np.int64), np.zeros(n), np.full(n, np.inf))
        s = np.maximum(cand, 0)
        t, dist = project_on_segments(
            x[:, None], y[:, None], self.ax[s], self.ay[s], self.bx[s], self.by[s]
        )
        heading = np.atleast_1d(np.asarray(heading_deg, dtype=float))
        moving = np.atleast_1d(np.asarray(speed_kmh, dtype=float)) >= self.min_heading_speed_kmh
        turn = angle_diff_deg(heading[:, None], self.bearing[s])
        cost = dist + np.where(moving[:, None], self.heading_weight_m * turn / 90.0, 0.0)
        cost = np.where((cand >= 0) & (dist <= self.max_distance_m), cost, np.inf)
        best = np.argmin(cost, axis=1)
        rows = np.arange(n)
        found = np.isfinite(cost[rows, best])
        segment = np.where(found, cand[rows, best], NO_SEGMENT)
        along = np.where(found, t[rows, best] * self.length_m[s[rows, best]], 0.0)
        distance = np.where(found, dist[rows, best], np.inf)
        return Match(segment.astype(np.int64), along, distance)
