"""``casatwin simulator``: the simulation's I/O edge — pacing, publishing, metrics, logs.

Lifecycle: :meth:`SimulatorService.start` checks the broker (one clear error if it cannot
be reached) and opens the producer; :meth:`run_until` ticks the simulation until the stop
event is set or the requested simulated time has passed (or, if asked, the scenario is
over; otherwise its end is logged and normal traffic goes on); :meth:`drain` flushes what
is still queued and writes the ground truth.

In real time a tick's state is due at its simulated time (wall clock), and its fixes are
sent in a few chunks spread over the step, so the broker sees a steady stream rather than
a burst per step. As fast as possible, ticks follow each other with only the producer's
buffer to pace them. Either way the simulation keeps stepping while the broker is away:
the producer buffers and retries with backoff, and undelivered messages are counted and
reported, never silently lost.

Other components act on the running fleet through :meth:`submit` (a command applied
between two steps, e.g. ``lambda fleet: fleet.dispatch(unit, route, tag=id)``) and hear
of what happens through :meth:`add_listener` (e.g. a unit's ``arrived`` event).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from casatwin import metrics
from casatwin.bus import messages, topics
from casatwin.bus.admin import require_topics, wait_for_broker
from casatwin.bus.producer import Producer
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.simulator.scenario import ScriptEnd
from casatwin.simulator.simulation import Simulation, Tick
from casatwin.simulator.telemetry import TelemetryEncoder
from casatwin.simulator.traffic import Fleet, FleetEvent

log = get_logger("simulator")

STEPS = Counter("casatwin_simulator_steps_total", "Simulation steps taken")
UPDATES = Counter("casatwin_simulator_vehicle_updates_total", "Vehicle-steps computed")
STEP_RATE = Gauge("casatwin_simulator_steps_per_second", "Steps per wall-clock second")
VEHICLES = Gauge("casatwin_simulator_vehicles", "Vehicles by state", ["state"])
PUBLISHED = Counter("casatwin_simulator_messages_total", "Messages handed to Kafka", ["topic"])
UNDELIVERED = Gauge(
    "casatwin_simulator_undelivered_messages",
    "Messages that could not be delivered (failed after retries, or refused: buffer full)",
)
QUEUED = Gauge("casatwin_simulator_queued_messages", "Messages waiting for the broker")
LAG = Gauge("casatwin_simulator_lag_seconds", "How far real-time mode is behind the clock")

PROGRESS_EVERY_S = 10.0
BACKPRESSURE_FILL = 0.5  # as fast as possible: wait for the broker when the buffer is this full
BACKPRESSURE_WAIT_S = 2.0
BROKER_CHECK_S = 5.0  # at start, how long to wait for the broker before giving up

Command = Callable[[Fleet], Any]
Listener = Callable[[FleetEvent], Any]


class SimulatorService:
    def __init__(
        self,
        settings: Settings,
        simulation: Simulation,
        realtime: bool,
        seconds: float | None = None,
        ground_truth_path: Path | None = None,
        client_id: str = "casatwin-simulator",
        telemetry_topic: str = topics.TELEMETRY,
        sensor_topic: str = topics.SENSORS_INTERSECTION,
        stop_after_scenario: bool = False,
    ) -> None:
        self.settings = settings
        self.stop_after_scenario = stop_after_scenario
        self.sim = simulation
        self.realtime = realtime
        self.seconds = seconds
        self.ground_truth_path = ground_truth_path
        self.client_id = client_id
        self.telemetry_topic = telemetry_topic
        self.sensor_topic = sensor_topic
        self.encoder = TelemetryEncoder(simulation.fleet.ids, simulation.fleet.kinds)
        self.producer: Producer | None = None
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._listeners: list[Listener] = []
        self._progress = _Progress()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Check the broker and the topics (UserError if unreachable or missing), open the
        producer and the metrics endpoint."""
        wait_for_broker(self.settings.kafka, timeout_s=BROKER_CHECK_S)
        require_topics(self.settings.kafka, [self.telemetry_topic, self.sensor_topic])
        self.producer = Producer(self.settings.kafka, self.client_id)
        metrics.serve(self.settings.simulator.metrics_port, "simulator")
        fleet = self.sim.fleet
        log.info(
            "simulator started",
            city=fleet.net.pack.name,
            taxis=self.sim.config.taxis,
            police_units=len(fleet.police_station),
            scripted=len(self.sim.player.vehicles) if self.sim.player else 0,
            mode="real time" if self.realtime else "as fast as possible",
            start=_iso(self.sim.start_ms),
            seed=self.sim.config.seed,
            telemetry_hz=self.sim.settings.telemetry_hz,
        )

    def run_until(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set, the requested simulated seconds have passed or, with
        ``stop_after_scenario``, the scenario is over."""
        assert self.producer is not None, "start() first"
        self._progress.reset(self.sim, self.producer)
        while not stop.is_set() and not self._done():
            self._apply_commands()
            tick = self.sim.tick()
            STEPS.inc()
            UPDATES.inc(len(self.sim.fleet))
            for event in tick.events:
                for listener in self._listeners:
                    listener(event)
            self._publish(tick, stop)
            if tick.scenario_end is not None:
                self._log_scenario_end(tick.scenario_end)
            self._progress.maybe_log(self.sim, self.producer, self._lag_s(tick))

    def drain(self, timeout_s: float = 15.0) -> dict[str, int]:
        """Flush what is queued, write the ground truth, log the totals; returns them."""
        totals: dict[str, int] = {}
        if self.producer is not None:
            remaining = self.producer.flush(timeout_s)
            totals = self.producer.report.totals() | {"undelivered_at_exit": remaining}
            self._update_gauges()
        if self.ground_truth_path is not None:
            self.write_ground_truth(self.ground_truth_path)
        log.info(
            "simulator stopped",
            sim_seconds=round(self.sim.elapsed_s, 1),
            steps=self.sim.step,
            **totals,
        )
        return totals

    def write_ground_truth(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.sim.ground_truth(), option=orjson.OPT_INDENT_2))
        log.info("ground truth written", path=str(path), infractions=len(self.sim.ground_truth()))

    # -- integration points --------------------------------------------------------------

    def submit(self, command: Command) -> None:
        """Run ``command(fleet)`` between two steps (thread-safe)."""
        self._commands.put(command)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every fleet event (on the simulator's thread)."""
        self._listeners.append(listener)

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command(self.sim.fleet)
            except (KeyError, ValueError) as exc:
                log.warning("command refused", reason=str(exc))

    # -- publishing ----------------------------------------------------------------------

    def _publish(self, tick: Tick, stop: threading.Event) -> None:
        producer = self.producer
        assert producer is not None
        values = self.encoder.encode(tick.fix)  # before the wait: the bytes are ready on time
        if self.realtime:
            # What a step measured goes out at that step's time, as a device's fix would
            # (the schedule spreads each vehicle's fixes over the steps of a second).
            self._wait_until(tick.t_ms, stop)
        for reading in tick.readings:
            producer.send(
                self.sensor_topic,
                messages.encode(dict(reading)),
                key=reading["intersection_id"],
                timestamp_ms=tick.t_ms,
            )
        PUBLISHED.labels(self.sensor_topic).inc(len(tick.readings))
        keys = self.encoder.keys
        vehicles = tick.fix.vehicles.tolist()
        topic = self.telemetry_topic
        for k in range(len(values)):
            producer.send(topic, values[k], key=keys[vehicles[k]], timestamp_ms=tick.t_ms)
        producer.poll(0)
        PUBLISHED.labels(topic).inc(len(values))
        if not self.realtime:
            self._backpressure()

    def _wait_until(self, t_ms: float, stop: threading.Event) -> None:
        delay = t_ms / 1000 - time.time()
        if delay > 0:
            stop.wait(delay)

    def _backpressure(self) -> None:
        """As fast as possible, the broker sets the pace: wait (bounded) while the local
        buffer is over half full, then carry on stepping whatever happens."""
        producer = self.producer
        assert producer is not None
        limit = self.settings.kafka.queue_max_messages * BACKPRESSURE_FILL
        deadline = time.monotonic() + BACKPRESSURE_WAIT_S
        while len(producer) > limit and time.monotonic() < deadline:
            producer.poll(0.05)

    def _lag_s(self, tick: Tick) -> float:
        return max(0.0, time.time() - tick.t_ms / 1000) if self.realtime else 0.0

    def _done(self) -> bool:
        if self.stop_after_scenario and self.sim.scenario_over:
            return True
        return self.seconds is not None and self.sim.elapsed_s >= self.seconds - 1e-9

    def _log_scenario_end(self, end: ScriptEnd) -> None:
        scenario = self.sim.scenario
        assert scenario is not None
        fields: dict[str, Any] = {
            "scenario": scenario.name,
            "sim_time": _iso(self.sim.t_ms),
            "scripted_infractions": len(self.sim.ground_truth()),
            "taxis_released": end.released,
        }
        if end.not_started:
            fields["events_never_played"] = end.not_started  # their `at` is after the end
        if self.stop_after_scenario:
            log.info("scenario over; the simulator stops, as asked", **fields)
        else:
            fields["to_stop_here"] = "CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO=true"
            log.info("scenario over; normal traffic goes on until the twin is stopped", **fields)

    def _update_gauges(self) -> None:
        if self.producer is None:
            return
        totals = self.producer.report.totals()
        UNDELIVERED.set(totals["failed"] + totals["refused"])
        QUEUED.set(len(self.producer))


class _Progress:
    """The short line every ~10 s: simulated time, vehicles, message rate, what is lost."""

    def __init__(self) -> None:
        self.last_wall = time.monotonic()
        self.last_sent = 0
        self.last_step = 0

    def reset(self, sim: Simulation, producer: Producer) -> None:
        self.last_wall = time.monotonic()
        self.last_sent = producer.report.totals()["sent"]
        self.last_step = sim.step

    def maybe_log(self, sim: Simulation, producer: Producer, lag_s: float) -> None:
        now = time.monotonic()
        elapsed = now - self.last_wall
        census = sim.fleet.census()
        for state, count in census.items():
            VEHICLES.labels(state).set(count)
        LAG.set(lag_s)
        if elapsed < PROGRESS_EVERY_S:
            return
        totals = producer.report.totals()
        steps_per_s = (sim.step - self.last_step) / elapsed
        STEP_RATE.set(steps_per_s)
        UNDELIVERED.set(totals["failed"] + totals["refused"])
        QUEUED.set(len(producer))
        fields: dict[str, Any] = {
            "sim_time": _iso(sim.t_ms),
            **census,
            "msgs_per_s": round((totals["sent"] - self.last_sent) / elapsed),
            "undelivered": totals["failed"] + totals["refused"],
            "awaiting_broker": len(producer),  # not the census's queued vehicles
            "steps_per_s": round(steps_per_s, 1),
        }
        if lag_s > 1.0:
            fields["behind_s"] = round(lag_s, 1)
        log.info("simulating", **fields)
        self.last_wall, self.last_sent, self.last_step = now, totals["sent"], sim.step


def _iso(t_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ms / 1000))
