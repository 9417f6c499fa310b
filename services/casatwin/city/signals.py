"""Signal states from the fixed-time plans: the single source of truth for phases.

The simulator obeys these states, the intersection sensors report them and the processor
judges red-light crossings against them, all through :class:`SignalTable`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from casatwin.city.model import CityPack

GREEN, YELLOW, RED, UNSIGNALISED = 0, 1, 2, -1
COLOURS = {GREEN: "green", YELLOW: "yellow", RED: "red", UNSIGNALISED: "none"}


@dataclass(frozen=True)
class SignalTable:
    """Per approach segment: its intersection and when in the cycle it is green/yellow.

    Arrays are indexed by segment position; segments that do not end at a signalised
    junction have ``intersection == -1``.
    """

    intersection: NDArray[np.int64]
    phase: NDArray[np.int64]
    cycle_s: NDArray[np.float64]
    offset_s: NDArray[np.float64]
    green_start_s: NDArray[np.float64]
    green_end_s: NDArray[np.float64]
    yellow_end_s: NDArray[np.float64]

    @classmethod
    def from_pack(cls, pack: CityPack) -> SignalTable:
        n = pack.n_segments
        table = {
            "intersection": np.full(n, -1, dtype=np.int64),
            "phase": np.full(n, -1, dtype=np.int64),
            "cycle_s": np.ones(n),
            "offset_s": np.zeros(n),
            "green_start_s": np.zeros(n),
            "green_end_s": np.zeros(n),
            "yellow_end_s": np.zeros(n),
        }
        for i, x in enumerate(pack.intersections):
            for p, (phase, window) in enumerate(zip(x.plan.phases, x.plan.windows())):
                for seg_id in phase.approaches:
                    s = pack.segment_index[seg_id]
                    table["intersection"][s] = i
                    table["phase"][s] = p
                    table["cycle_s"][s] = x.plan.cycle_s
                    table["offset_s"][s] = x.plan.offset_s
                    table["green_start_s"][s], table["green_end_s"][s], table["yellow_end_s"][s] = (
                        window
                    )
        return cls(**table)

    def colour(self, segments: ArrayLike, t_s: ArrayLike) -> NDArray[np.int64]:
        """GREEN, YELLOW, RED or UNSIGNALISED for each (segment, time in seconds)."""
        s = np.asarray(segments, dtype=np.int64)
        t_in_cycle = (np.asarray(t_s, dtype=float) - self.offset_s[s]) % self.cycle_s[s]
        colour = np.full(np.broadcast(s, t_in_cycle).shape, RED, dtype=np.int64)
        green = (t_in_cycle >= self.green_start_s[s]) & (t_in_cycle < self.green_end_s[s])
        yellow = (t_in_cycle >= self.green_end_s[s]) & (t_in_cycle < self.yellow_end_s[s])
        colour[green] = GREEN
        colour[yellow] = YELLOW
        colour[self.intersection[s] < 0] = UNSIGNALISED
        return colour

    def seconds_until_green(self, segments: ArrayLike, t_s: ArrayLike) -> NDArray[np.float64]:
        """How long each approach waits for its next green (0 if green now)."""
        s = np.asarray(segments, dtype=np.int64)
        t_in_cycle = (np.asarray(t_s, dtype=float) - self.offset_s[s]) % self.cycle_s[s]
        start, end = self.green_start_s[s], self.green_end_s[s]
        wait = (start - t_in_cycle) % self.cycle_s[s]
        wait = np.where((t_in_cycle >= start) & (t_in_cycle < end), 0.0, wait)
        return np.where(self.intersection[s] < 0, 0.0, wait)


def active_phase(pack: CityPack, intersection: int, t_s: float) -> tuple[str, str]:
    """(phase name, "green"/"yellow"/"all_red") running at an intersection at time t."""
    plan = pack.intersections[intersection].plan
    t = (t_s - plan.offset_s) % plan.cycle_s
    for phase, (start, green_end, yellow_end) in zip(plan.phases, plan.windows()):
        if start <= t < green_end:
            return phase.name, "green"
        if green_end <= t < yellow_end:
            return phase.name, "yellow"
        if yellow_end <= t < yellow_end + plan.all_red_s:
            return phase.name, "all_red"
    return plan.phases[-1].name, "all_red"
