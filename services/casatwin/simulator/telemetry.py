"""Telemetry fixes (contract ``casatwin.telemetry``): who reports in a step, and the bytes.

Each vehicle reports every ``1 / telemetry_hz`` seconds, on its own slot so that a
second's fixes are spread over the steps of that second rather than sent in one burst.
Encoding formats each message from a per-vehicle prefix (id and kind never change), which
is several times faster than building and serialising a dict per fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from casatwin.errors import UserError
from casatwin.simulator.traffic import Fleet

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Fix:
    """Fixes of one step, as arrays (the ground truth reads these, the encoder too)."""

    ts_ms: int
    vehicles: IntArray
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    speed_kmh: NDArray[np.float64]
    heading_deg: NDArray[np.float64]
    segment: IntArray


class Schedule:
    """Which vehicles report at step ``k``: vehicle ``i`` when ``(k + i) % period == 0``."""

    def __init__(self, n_vehicles: int, telemetry_hz: float, step_s: float) -> None:
        if telemetry_hz <= 0:
            raise UserError(
                f"telemetry_hz={telemetry_hz} must be positive",
                hint="set CASATWIN_SIMULATOR_TELEMETRY_HZ to e.g. 1",
            )
        period = round(1.0 / (telemetry_hz * step_s))
        if period < 1:
            raise UserError(
                f"telemetry_hz={telemetry_hz} is faster than the time step ({step_s} s)",
                hint="lower CASATWIN_SIMULATOR_TELEMETRY_HZ or CASATWIN_SIMULATOR_STEP_S",
            )
        self.period = period
        slot = np.arange(n_vehicles) % period
        self._due = [np.flatnonzero(slot == (-k) % period) for k in range(period)]

    def due(self, step: int) -> IntArray:
        return self._due[step % self.period]


def take_fixes(fleet: Fleet, vehicles: IntArray, ts_ms: int) -> Fix:
    """The fixes of ``vehicles`` now (those off the road are left out)."""
    vehicles = vehicles[fleet.on_road()[vehicles]]
    lat, lon, heading = fleet.positions(vehicles)
    return Fix(
        ts_ms,
        vehicles,
        lat,
        lon,
        fleet.v[vehicles] * 3.6,
        heading,
        fleet.seg[vehicles].copy(),
    )


class TelemetryEncoder:
    """JSON values and keys of telemetry messages, byte-identical for identical states."""

    def __init__(self, ids: list[str], kinds: list[str]) -> None:
        self.keys = [vehicle_id.encode() for vehicle_id in ids]
        self._prefix = [
            f'{{"vehicle_id":"{vehicle_id}","kind":"{kind}","ts":'.encode()
            for vehicle_id, kind in zip(ids, kinds)
        ]

    def encode(self, fix: Fix) -> list[bytes]:
        prefix = self._prefix
        ts = fix.ts_ms
        return [
            b'%s%d,"lat":%.6f,"lon":%.6f,"speed_kmh":%.1f,"heading_deg":%.1f,"source":"sim"}'
            % (prefix[v], ts, lat, lon, speed, heading)
            for v, lat, lon, speed, heading in zip(
                fix.vehicles.tolist(),
                fix.lat.tolist(),
                fix.lon.tolist(),
                fix.speed_kmh.tolist(),
                fix.heading_deg.tolist(),
            )
        ]
