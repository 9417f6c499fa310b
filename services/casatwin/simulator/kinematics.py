"""Car-following: the Intelligent Driver Model (Treiber, Hennecke & Helbing, 2000).

Pure, vectorised functions of the vehicles' speeds and gaps. A vehicle accelerates
towards its desired speed and brakes for what is ahead of it, be it a leading vehicle
or a stop line it must respect (a stationary obstacle). The explicit update keeps
speeds non-negative and never lets a vehicle advance further than the gap it had, so
no vehicle ever passes through its leader or through a stop line it stops for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class DriverModel:
    """IDM parameters of an urban taxi driver."""

    max_accel: float = 1.6  # a: m/s²
    comfort_decel: float = 2.5  # b: m/s²
    min_gap_m: float = 2.0  # s0: bumper to bumper, standing
    headway_s: float = 1.3  # T: time gap when following
    vehicle_length_m: float = 4.5
    delta: float = 4.0  # how the acceleration drops towards the desired speed
    safety_margin_m: float = 0.3  # never end a step closer than this to an obstacle

    def acceleration(
        self, v: FloatArray, v0: FloatArray, gap_m: FloatArray, closing_ms: FloatArray
    ) -> FloatArray:
        """IDM acceleration for speed ``v``, desired speed ``v0``, bumper-to-bumper
        ``gap_m`` to the obstacle (``inf``: none) closing at ``closing_ms`` (v − v_leader)."""
        free = 1.0 - (v / v0) ** self.delta
        wanted = self.min_gap_m + np.maximum(
            0.0,
            v * self.headway_s
            + v * closing_ms / (2.0 * np.sqrt(self.max_accel * self.comfort_decel)),
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            interaction = np.where(np.isfinite(gap_m), (wanted / np.maximum(gap_m, 0.1)) ** 2, 0.0)
        return self.max_accel * (free - interaction)

    def advance(
        self, v: FloatArray, accel: FloatArray, limit_m: FloatArray, dt: float
    ) -> tuple[FloatArray, FloatArray]:
        """(distance covered, new speed) over ``dt``, never more than ``limit_m``.

        ``limit_m`` is the room the vehicle has (the gap to its leader or to a stop line
        minus a margin; ``inf`` when free). A vehicle that runs out of room ends the step
        at the limit with the speed it would need to cover it.
        """
        v_new = np.maximum(v + accel * dt, 0.0)
        # Braking to a stop within the step: only the part of dt until v reaches 0 counts.
        stop_time = np.where(accel < 0, np.minimum(dt, v / np.maximum(-accel, 1e-9)), dt)
        distance = np.where(v_new > 0, (v + v_new) / 2.0 * dt, v * stop_time / 2.0)
        room = np.maximum(limit_m, 0.0)
        blocked = distance > room
        distance = np.where(blocked, room, distance)
        v_new = np.where(blocked, np.minimum(v_new, room / dt), v_new)
        return distance, v_new


def stopping_distance_m(v: FloatArray, decel: float) -> FloatArray:
    return v * v / (2.0 * decel)
