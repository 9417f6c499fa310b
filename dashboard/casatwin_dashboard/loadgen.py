"""A synthetic fleet for the dashboard's benchmark and browser tests.

Not the simulator (no signals, no car-following): vehicles drive along the city pack's
segments at a steady speed and pick a random next segment at each node, which is all a
map needs to look alive and all the fan-out needs to be loaded. Vectorised with NumPy so
that 13,000 vehicles cost little next to what is measured.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import orjson

from casatwin.bus import topics
from casatwin.bus.producer import DeliveryReport, Producer
from casatwin.city.model import CityPack
from casatwin.config import KafkaSettings
from casatwin.fleet import taxi_id, taxi_kind


class SyntheticFleet:
    """``n`` vehicles on the pack's road graph; every 50th is a speeder."""

    def __init__(self, pack: CityPack, n: int, seed: int = 7) -> None:
        self.pack = pack
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.ids = [taxi_id(i) for i in range(n)]
        self.kinds = [taxi_kind(i) for i in range(n)]
        self.segment = self.rng.integers(0, pack.n_segments, n)
        self.offset_m = self.rng.random(n) * pack.seg_length_m[self.segment]
        limits = pack.seg_limit_kmh[self.segment]
        self.speed_kmh = limits * self.rng.uniform(0.4, 0.95, n)
        self.speed_kmh[::50] = limits[::50] * 1.5
        self._prefixes = [
            f'{{"vehicle_id":"{vid}","kind":"{kind}",' for vid, kind in zip(self.ids, self.kinds)
        ]

    def step(self, dt_s: float) -> None:
        self.offset_m += self.speed_kmh / 3.6 * dt_s
        length = self.pack.seg_length_m
        for _ in range(4):  # at most a few segment changes per step
            over = np.flatnonzero(self.offset_m > length[self.segment])
            if not len(over):
                break
            self.offset_m[over] -= length[self.segment[over]]
            ptr, order = self.pack.out_segments
            nodes = self.pack.seg_to[self.segment[over]]
            counts = ptr[nodes + 1] - ptr[nodes]
            pick = (self.rng.random(len(over)) * counts).astype(np.int64)
            self.segment[over] = order[ptr[nodes] + pick]

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lat, lon, heading) of every vehicle."""
        p = self.pack
        a, b = p.seg_from[self.segment], p.seg_to[self.segment]
        f = np.clip(self.offset_m / p.seg_length_m[self.segment], 0, 1)
        lat = p.node_lat[a] + (p.node_lat[b] - p.node_lat[a]) * f
        lon = p.node_lon[a] + (p.node_lon[b] - p.node_lon[a]) * f
        return lat, lon, p.seg_bearing_deg[self.segment]

    def messages(self, ts_ms: int) -> list[tuple[str, bytes]]:
        """(key, value) of one telemetry message per vehicle (JSON built by formatting: the
        feeder must not be what a benchmark measures)."""
        lat, lon, heading = self.positions()
        return [
            (vid, f'{prefix}"ts":{ts_ms},"lat":{la:.6f},"lon":{lo:.6f},'
                  f'"speed_kmh":{s:.1f},"heading_deg":{h:.1f},"source":"sim"}}'.encode())
            for vid, prefix, la, lo, s, h in zip(
                self.ids, self._prefixes, lat.tolist(), lon.tolist(),
                self.speed_kmh.tolist(), heading.tolist(),
            )
        ]  # fmt: skip


class FleetFeeder:
    """Publishes the fleet's telemetry at ``hz`` on a thread until stopped."""

    def __init__(self, settings: KafkaSettings, fleet: SyntheticFleet, hz: float) -> None:
        self._producer: Producer | None = Producer(settings, "casatwin-dashboard-loadgen")
        self.fleet = fleet
        self.hz = hz
        self.rounds = 0
        self.late_rounds = 0  # rounds that took longer than their period (machine busy)
        self.report = DeliveryReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-feeder", daemon=True)

    def start(self) -> FleetFeeder:
        self._thread.start()
        return self

    def stop(self) -> DeliveryReport:
        self._stop.set()
        self._thread.join(10)
        if self._producer is not None:
            self.report = self._producer.close(5)
            self._producer = None  # let librdkafka's threads go now, not at interpreter exit
        return self.report

    def _run(self) -> None:
        period = 1.0 / self.hz
        next_at = time.monotonic()
        producer = self._producer
        assert producer is not None
        while not self._stop.is_set():
            self.fleet.step(period)
            for key, value in self.fleet.messages(int(time.time() * 1000)):
                producer.send(topics.TELEMETRY, value, key=key)
            producer.poll(0)
            self.rounds += 1
            next_at += period
            wait = next_at - time.monotonic()
            if wait < 0:
                self.late_rounds += 1
                next_at = time.monotonic()
            self._stop.wait(max(0.0, wait))


def main() -> int:
    """``python -m casatwin_dashboard.loadgen VEHICLES HZ SECONDS``: feed the broker of the
    ``CASATWIN_*`` settings (the city pack of the settings, or a synthetic grid)."""
    import sys

    from casatwin.city import load, synthetic
    from casatwin.config import load as load_settings
    from casatwin_dashboard.citymap import load_pack

    vehicles, hz, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    settings = load_settings()
    pack, _ = load_pack(settings)
    pack = pack or load.from_dict(synthetic.grid(rows=12, cols=16, spacing_m=400))
    feeder = FleetFeeder(settings.kafka, SyntheticFleet(pack, vehicles), hz).start()
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        feeder.stop()
    totals = feeder.report.totals()
    print(
        orjson.dumps(
            {"rounds": feeder.rounds, "late_rounds": feeder.late_rounds, **totals}
        ).decode()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
