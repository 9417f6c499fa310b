"""Plane and sphere geometry for a city-sized area. Pure, vectorised NumPy functions.

Distances use a local equirectangular projection around the city's centre: across 30 km
its error is well under 0.1 %, and it turns map matching, polygon tests and kinematics into
plain 2-D arithmetic in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

EARTH_RADIUS_M = 6_371_008.8

FloatArray = NDArray[np.float64]


def haversine_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> FloatArray:
    """Great-circle distance in metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))


def bearing_deg(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> FloatArray:
    """Initial bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.degrees(np.arctan2(y, x)) % 360.0


def angle_diff_deg(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Smallest absolute difference between two headings, in [0, 180]."""
    d = np.abs((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) % 360.0)
    return np.minimum(d, 360.0 - d)


@dataclass(frozen=True)
class LocalProjection:
    """Equirectangular projection in metres around (lat0, lon0): x east, y north."""

    lat0: float
    lon0: float

    @property
    def _kx(self) -> float:
        return np.radians(1.0) * EARTH_RADIUS_M * np.cos(np.radians(self.lat0))

    @property
    def _ky(self) -> float:
        return np.radians(1.0) * EARTH_RADIUS_M

    def to_xy(self, lat: ArrayLike, lon: ArrayLike) -> tuple[FloatArray, FloatArray]:
        x = (np.asarray(lon, dtype=float) - self.lon0) * self._kx
        y = (np.asarray(lat, dtype=float) - self.lat0) * self._ky
        return x, y

    def to_latlon(self, x: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        lat = np.asarray(y, dtype=float) / self._ky + self.lat0
        lon = np.asarray(x, dtype=float) / self._kx + self.lon0
        return lat, lon


def heading_from_xy(dx: ArrayLike, dy: ArrayLike) -> FloatArray:
    """Heading (degrees clockwise from north) of a displacement in projected metres."""
    return np.degrees(np.arctan2(dx, dy)) % 360.0


def project_on_segments(
    px: ArrayLike, py: ArrayLike, ax: ArrayLike, ay: ArrayLike, bx: ArrayLike, by: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Project points P on segments AB (broadcast): (fraction t in [0, 1], distance in m)."""
    px, py = np.asarray(px, dtype=float), np.asarray(py, dtype=float)
    abx, aby = np.asarray(bx) - np.asarray(ax), np.asarray(by) - np.asarray(ay)
    apx, apy = px - ax, py - ay
    length2 = abx * abx + aby * aby
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(length2 > 0, (apx * abx + apy * aby) / length2, 0.0)
    t = np.clip(t, 0.0, 1.0)
    dx = apx - t * abx
    dy = apy - t * aby
    return t, np.hypot(dx, dy)


def points_in_polygon(
    x: ArrayLike, y: ArrayLike, poly_x: ArrayLike, poly_y: ArrayLike
) -> NDArray[np.bool_]:
    """Even-odd rule test of many points against one simple polygon (vertices not repeated)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    vx, vy = np.asarray(poly_x, dtype=float), np.asarray(poly_y, dtype=float)
    inside = np.zeros(np.broadcast(x, y).shape, dtype=bool)
    n = len(vx)
    j = n - 1
    for i in range(n):  # loop over vertices (few), vectorised over points (many)
        xi, yi, xj, yj = vx[i], vy[i], vx[j], vy[j]
        crosses = (yi > y) != (yj > y)
        with np.errstate(invalid="ignore", divide="ignore"):
            x_at = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < x_at)
        j = i
    return inside


def polygon_area_m2(poly_x: ArrayLike, poly_y: ArrayLike) -> float:
    """Area of a simple polygon (shoelace), in the units of the coordinates squared."""
    x, y = np.asarray(poly_x, dtype=float), np.asarray(poly_y, dtype=float)
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def polygon_is_simple(poly_x: ArrayLike, poly_y: ArrayLike) -> bool:
    """True if no two non-adjacent edges of the polygon cross."""
    x, y = np.asarray(poly_x, dtype=float), np.asarray(poly_y, dtype=float)
    n = len(x)
    for i in range(n):
        a, b = (x[i], y[i]), (x[(i + 1) % n], y[(i + 1) % n])
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            c, d = (x[j], y[j]), (x[(j + 1) % n], y[(j + 1) % n])
            if _segments_cross(a, b, c, d):
                return False
    return True


def _segments_cross(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    def orient(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    return (o1 * o2 < 0) and (o3 * o4 < 0)
