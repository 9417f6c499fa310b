"""The end of a scenario (issue 17): the script lets go of its taxis and normal traffic goes
on, unless the simulator is asked to stop there. The clock is the simulation's (as fast as
possible), the producer a recorder: no broker, no wall-clock wait."""

import textwrap
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from casatwin.bus import topics
from casatwin.city import load, synthetic
from casatwin.config import Settings, SimulatorSettings
from casatwin.simulator import scenario as scenarios
from casatwin.simulator.service import SimulatorService
from casatwin.simulator.simulation import Simulation
from casatwin.simulator.traffic import LAW_ABIDING_CAP

START_MS = 1_767_225_600_000
END_MS = START_MS + 30_000
# Two events still under way at the end (the speeder's 60 s, the parker's 600 s), one due
# after it (never played).
SHORT = """\
city: grid
seed: 4
traffic: {taxis: 40, speeder_share: 0, red_light_runner_share: 0, illegal_parker_share: 0}
duration_s: 30
events:
  - {type: speeding, vehicle: TX-00101, at: 5, road: Row 2, speed_kmh: 95, duration_s: 60}
  - {type: illegal_parking, vehicle: TX-00102, at: 5, zone: Row 0 block 2, duration_s: 600}
  - {type: speeding, vehicle: TX-00103, at: 50, road: Row 3, speed_kmh: 95, duration_s: 10}
"""


@pytest.fixture(scope="module")
def grid():
    return load.from_dict(synthetic.grid(5, 5))


@pytest.fixture
def simulation(grid, tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text(textwrap.dedent(SHORT))
    return Simulation(grid, SimulatorSettings(), START_MS, scenarios.load(path))


def test_the_script_ends_once_and_lets_go_of_its_taxis(simulation):
    sim = simulation
    ticks = [sim.tick() for _ in range(round(90 / (sim.step_ms / 1000)))]
    ends = [t for t in ticks if t.scenario_end is not None]
    assert [t.t_ms for t in ends] == [END_MS]
    assert ends[0].scenario_end == scenarios.ScriptEnd(released=2, not_started=1)

    speeder, parker, unplayed = (sim.fleet.index[v] for v in ("TX-00101", "TX-00102", "TX-00103"))
    net = sim.fleet.net
    after = [t for t in ticks if t.t_ms > END_MS]
    speeds = {speeder: [], parker: []}
    for tick in after:
        for v, seen in speeds.items():
            k = np.flatnonzero(tick.fix.vehicles == v)
            if len(k):
                limit = net.limit_ms[tick.fix.segment[k[0]]] * 3.6
                seen.append((tick.fix.speed_kmh[k[0]], limit))
        assert unplayed not in tick.fix.vehicles  # its event was after the end
    assert len(speeds[speeder]) >= 55 and len(speeds[parker]) >= 55  # still reporting, 1 Hz
    # Law-abiding from the first fix after the end: under 99 % of the limit.
    assert all(v <= LAW_ABIDING_CAP * limit + 0.1 for v, limit in speeds[speeder])
    assert max(v for v, _ in speeds[parker]) > 10  # it drove off
    [parking] = [r for r in sim.ground_truth() if r["type"] == "illegal_parking"]
    assert parking["end_ts"] == END_MS  # it drove off as the script ended
    assert not any(r["event_ts"] > END_MS for r in sim.ground_truth())


class Recorder:
    """The producer's part the service uses; sets ``stop`` once a fix stamped ``until_ms``
    or later is sent (the run must not go on much past it)."""

    def __init__(self, stop: threading.Event, until_ms: int) -> None:
        self.stop, self.until_ms = stop, until_ms
        self.telemetry: list[tuple[bytes, int]] = []
        self.report = SimpleNamespace(
            totals=lambda: {"sent": len(self.telemetry), "failed": 0, "refused": 0}
        )

    def send(self, topic: str, value: bytes, key: bytes, timestamp_ms: int) -> None:
        if topic == topics.TELEMETRY:
            self.telemetry.append((key, timestamp_ms))
        if timestamp_ms >= self.until_ms:
            self.stop.set()

    def poll(self, timeout_s: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


def run(simulation, stop_after_scenario, until_ms):
    service = SimulatorService(
        Settings(), simulation, realtime=False, stop_after_scenario=stop_after_scenario
    )
    stop = threading.Event()
    service.producer = recorder = Recorder(stop, until_ms)
    service.run_until(stop)
    return recorder, stop.is_set()


def scenario_over(caplog):
    return [r for r in caplog.records if r.getMessage().startswith("scenario over")]


def test_by_default_the_simulator_says_the_scenario_is_over_and_goes_on(simulation, caplog):
    caplog.set_level("INFO", logger="casatwin.simulator")
    recorder, stopped = run(simulation, False, until_ms=END_MS + 20_000)
    assert stopped  # it was still running 20 s after the end: the test stopped it
    last = {}
    for key, ts in recorder.telemetry:
        last[key] = max(ts, last.get(key, 0))
    assert sum(ts > END_MS for ts in last.values()) == len(simulation.fleet) - 1
    assert b"TX-00103" not in last  # the event never played
    [record] = scenario_over(caplog)
    assert "normal traffic goes on until the twin is stopped" in record.getMessage()
    fields = record.casatwin_fields
    assert fields["scenario"] == "short" and fields["sim_time"] == "2026-01-01T00:00:30Z"
    assert (fields["taxis_released"], fields["events_never_played"]) == (2, 1)
    assert fields["to_stop_here"] == "CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO=true"


def test_asked_to_stop_after_the_scenario_it_stops_there(simulation, caplog):
    caplog.set_level("INFO", logger="casatwin.simulator")
    recorder, overran = run(simulation, True, until_ms=END_MS + 60_000)
    assert not overran
    assert max(ts for _, ts in recorder.telemetry) == END_MS
    [record] = scenario_over(caplog)
    assert "the simulator stops, as asked" in record.getMessage()
