"""``casatwin simulator``: the fleet simulator (and its benchmark)."""

from __future__ import annotations

import argparse
from pathlib import Path

from casatwin.config import Settings

DESCRIPTION = """\
Simulate the city's taxis, police units and intersection sensors, and publish their
telemetry (casatwin.telemetry) and readings (casatwin.sensors.intersection) to Kafka.
Runs until Ctrl-C/SIGTERM (or --seconds of simulated time), then flushes and stops. When
a scenario's duration_s is over it says so and goes on with normal traffic (its taxis drive
on, law-abiding), unless told to stop there (--stop-after-scenario).
Settings: CASATWIN_SIMULATOR_* (see `casatwin config`); the options below override them.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser(
        "simulator",
        help="run the fleet simulator",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = sim.add_mutually_exclusive_group()
    mode.add_argument(
        "--afap",
        action="store_true",
        help="as fast as possible, with simulated timestamps (CASATWIN_SIMULATOR_REALTIME=false)",
    )
    mode.add_argument(
        "--realtime", action="store_true", help="in real time, wall-clock timestamps (default)"
    )
    sim.add_argument("--seconds", type=float, metavar="N", help="stop after N simulated seconds")
    sim.add_argument(
        "--start-ms",
        type=int,
        metavar="MS",
        help="simulated clock's start, epoch ms (with --afap; default: now)",
    )
    sim.add_argument("--seed", type=int, help="random seed (CASATWIN_SIMULATOR_SEED)")
    sim.add_argument(
        "--vehicles",
        "--taxis",
        dest="taxis",
        type=int,
        metavar="N",
        help="taxis to simulate (CASATWIN_SIMULATOR_TAXIS; up to 13000)",
    )
    sim.add_argument(
        "--scenario",
        metavar="FILE",
        help="scenario to play (CASATWIN_SIMULATOR_SCENARIO; see docs/scenarios.md)",
    )
    end = sim.add_mutually_exclusive_group()
    end.add_argument(
        "--stop-after-scenario",
        dest="stop_after_scenario",
        action="store_const",
        const=True,
        help="stop when the scenario's duration_s is over "
        "(CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO=true)",
    )
    end.add_argument(
        "--continue-after-scenario",
        dest="stop_after_scenario",
        action="store_const",
        const=False,
        help="when the scenario is over, go on with normal traffic until stopped "
        "(default: CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO=false)",
    )
    sim.add_argument(
        "--ground-truth",
        type=Path,
        metavar="FILE",
        help="write the scripted infractions (JSON) there when the run ends",
    )
    sim.add_argument(
        "--bench",
        action="store_true",
        help="measure stepping and publishing rates and print one JSON object",
    )
    sim.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.for_service("simulator")  # its own Kafka principal
    if args.bench:
        return _bench(args, settings)
    import signal
    import threading
    import time

    from casatwin.city.load import load_city
    from casatwin.errors import UserError
    from casatwin.simulator import scenario as scenarios
    from casatwin.simulator.service import SimulatorService
    from casatwin.simulator.simulation import Simulation

    realtime = settings.simulator.realtime
    if args.afap or args.realtime:
        realtime = args.realtime
    if args.start_ms is not None and realtime:
        raise UserError(
            "--start-ms fixes a simulated clock, but real-time mode follows the wall clock",
            hint="add --afap (or set CASATWIN_SIMULATOR_REALTIME=false)",
        )
    if args.seconds is not None and args.seconds <= 0:
        raise UserError(f"--seconds {args.seconds:g} should be positive")
    scenario_path = args.scenario or settings.simulator.scenario
    scenario = scenarios.load(scenario_path) if scenario_path else None
    pack = load_city(settings.city)
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    simulation = Simulation(
        pack, settings.simulator, start_ms, scenario, taxis=args.taxis, seed=args.seed
    )
    service = SimulatorService(
        settings,
        simulation,
        realtime,
        args.seconds,
        args.ground_truth,
        stop_after_scenario=_stop_after_scenario(args, settings),
    )

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    bridge = None
    if settings.dispatcher.simulate:
        from casatwin.simulator.dispatching import DispatchBridge

        bridge = DispatchBridge(service)
        bridge.start()
    try:
        service.run_until(stop)
    finally:
        if bridge is not None:
            bridge.stop()
        service.drain()
    return 0


def _stop_after_scenario(args: argparse.Namespace, settings: Settings) -> bool:
    """The option if given, else CASATWIN_SIMULATOR_STOP_AFTER_SCENARIO."""
    if args.stop_after_scenario is not None:
        return bool(args.stop_after_scenario)
    return settings.simulator.stop_after_scenario


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    import orjson

    from casatwin import fleet
    from casatwin.simulator.bench import measure

    result = measure(
        settings,
        vehicles=args.taxis or fleet.FLEET_SIZE,
        seconds=args.seconds or 10.0,
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0
