"""Intersection sensors: what a loop detector and a camera at each signalised junction
would report every period (contract ``casatwin.sensors.intersection``)."""

from __future__ import annotations

import numpy as np

from casatwin.bus.messages import IntersectionReading
from casatwin.city.signals import active_phase
from casatwin.simulator.traffic import DRIVING, QUEUED_BELOW_MS, Fleet


def read_intersections(fleet: Fleet, ts_ms: int, window_s: float) -> list[IntersectionReading]:
    """One reading per signalised intersection for the window ending at ``ts_ms``, then
    start a new window.

    ``vehicles``: stop-line crossings in the window; ``queue_len``: vehicles standing or
    crawling on its approaches now; ``max_wait_s``: the longest wait of a vehicle that
    crossed in the window or is still waiting; ``phase``: the plan's active phase.
    """
    net, counters = fleet.net, fleet.counters
    pack = net.pack
    n = len(pack.intersections)
    if n == 0:
        return []
    approach = net.approach_of[fleet.seg]
    queued = (
        (fleet.state == DRIVING)
        & (approach >= 0)
        & (fleet.v < QUEUED_BELOW_MS)
        & (fleet.pos <= net.stop_m[fleet.seg])
    )
    queue_len = np.bincount(approach[queued], minlength=n)
    max_wait = counters.max_wait_s.copy()
    np.maximum.at(max_wait, approach[queued], fleet.wait_s[queued])
    t_s = ts_ms / 1000.0
    readings: list[IntersectionReading] = [
        {
            "intersection_id": x.id,
            "ts": ts_ms,
            "window_s": window_s,
            "vehicles": int(counters.crossings[i]),
            "queue_len": int(queue_len[i]),
            "max_wait_s": round(float(max_wait[i]), 1),
            "phase": active_phase(pack, i, t_s)[0],
        }
        for i, x in enumerate(pack.intersections)
    ]
    counters.crossings[:] = 0
    counters.max_wait_s[:] = 0.0
    return readings
