"""One simulated city, tick by tick, with no I/O: what the service publishes comes from here.

A :class:`Simulation` owns the fleet, the scenario being played, the telemetry schedule,
the intersection sensors and the ground truth. :meth:`Simulation.tick` advances one time
step and returns what happened (fixes, sensor readings, events, the end of the scenario's
script). When the scenario's ``duration_s`` is over its taxis drive on as law-abiding
traffic and the simulation goes on with normal traffic; stopping there is the caller's
choice (``CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO``). Simulated time is an
integer number of milliseconds from ``start_ms``, so the same seed and the same start
always give the same ticks, whatever the wall clock does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from casatwin.bus.messages import IntersectionReading
from casatwin.city.model import CityPack
from casatwin.config import SimulatorSettings
from casatwin.errors import UserError
from casatwin.simulator import scenario as scenarios
from casatwin.simulator.groundtruth import GroundTruth
from casatwin.simulator.sensors import read_intersections
from casatwin.simulator.telemetry import Fix, Schedule, take_fixes
from casatwin.simulator.traffic import Fleet, FleetConfig, FleetEvent


@dataclass(frozen=True)
class Tick:
    """What one step produced."""

    step: int
    t_ms: int  # simulated time at the end of the step
    fix: Fix
    readings: list[IntersectionReading] = field(default_factory=list)
    events: list[FleetEvent] = field(default_factory=list)
    scenario_end: scenarios.ScriptEnd | None = None  # the scenario's script ended here


class Simulation:
    def __init__(
        self,
        pack: CityPack,
        settings: SimulatorSettings,
        start_ms: int,
        scenario: scenarios.Scenario | None = None,
        **fleet_overrides: Any,
    ) -> None:
        self.settings = settings
        self.scenario = scenario
        self.start_ms = start_ms
        self.step_ms = round(settings.step_s * 1000)
        if self.step_ms <= 0:
            raise UserError(
                f"step_s={settings.step_s} is too small",
                hint="set CASATWIN_SIMULATOR_STEP_S to e.g. 0.5",
            )
        overrides: dict[str, Any] = {}
        if scenario is not None:
            overrides |= scenario.traffic
            if scenario.seed is not None:
                overrides["seed"] = scenario.seed
            overrides["reserved"] = scenario.fleet_indices()
        overrides |= {k: v for k, v in fleet_overrides.items() if v is not None}
        config = FleetConfig.from_settings(settings, **overrides)
        try:
            config.validate()
        except ValueError as exc:
            raise UserError(f"cannot build the fleet: {exc}") from None
        self.fleet = Fleet.create(pack, config)
        self.config = config
        self.schedule = Schedule(len(self.fleet), settings.telemetry_hz, self.step_ms / 1000)
        self.sensor_every = max(1, round(settings.sensor_period_s * 1000 / self.step_ms))
        self.player: scenarios.ScenarioPlayer | None = None
        tracked: set[int] = set()
        if scenario is not None:
            plans = scenarios.resolve(scenario, self.fleet.net, self.fleet)
            self.player = scenarios.ScenarioPlayer(
                plans, self.fleet, start_ms / 1000, self.step_ms / 1000
            )
            tracked = self.player.vehicles
        self.truth = GroundTruth(self.fleet, tracked)
        self.step = 0
        self.scenario_over = False

    @property
    def t_ms(self) -> int:
        """Simulated time now (the end of the last step)."""
        return self.start_ms + self.step * self.step_ms

    @property
    def elapsed_s(self) -> float:
        return self.step * self.step_ms / 1000

    @property
    def scenario_end_ms(self) -> int | None:
        """When the scenario's script is over (its ``duration_s``); None: it has no end."""
        if self.scenario is None or self.scenario.duration_s is None:
            return None
        return self.start_ms + round(self.scenario.duration_s * 1000)

    def tick(self) -> Tick:
        t_s = self.t_ms / 1000
        if self.player is not None:
            self.player.before_step(t_s)
        self.fleet.step(t_s, self.step_ms / 1000)
        self.step += 1
        t_ms = self.t_ms
        events = self.fleet.take_events()
        fix = take_fixes(self.fleet, self.schedule.due(self.step), t_ms)
        self.truth.observe_events(events)
        self.truth.observe_fixes(fix)
        readings: list[IntersectionReading] = []
        if self.step % self.sensor_every == 0:
            readings = read_intersections(self.fleet, t_ms, self.sensor_every * self.step_ms / 1000)
        return Tick(self.step, t_ms, fix, readings, events, self._end_scenario_if_due())

    def _end_scenario_if_due(self) -> scenarios.ScriptEnd | None:
        """At the first step that reaches the scenario's end, end its script (after the
        step: its last step is played and observed as the script had it)."""
        end_ms = self.scenario_end_ms
        if self.scenario_over or self.player is None or end_ms is None or self.t_ms < end_ms:
            return None
        self.scenario_over = True
        return self.player.finish()

    def ground_truth(self) -> list[dict[str, Any]]:
        """The scripted vehicles' infractions so far (see :mod:`groundtruth`)."""
        return self.truth.snapshot(self.t_ms)
