"""``casatwin dispatcher`` (the service) and ``casatwin dispatch ...`` (operating it)."""

from __future__ import annotations

import argparse

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    service = subparsers.add_parser(
        "dispatcher",
        help="run the police dispatcher (nearest unit by road, in MariaDB, on casatwin.dispatch)",
        description=(
            "Consume casatwin.infractions in a consumer group; send the unit that arrives "
            "first by road to each infraction that needs one (queue it when none is free); "
            "record the units' arrival and close. Stops cleanly on Ctrl-C/SIGTERM."
        ),
    )
    service.set_defaults(handler=run_service)

    dispatch = subparsers.add_parser(
        "dispatch", help="police units and incidents: status, duty, benchmark"
    )
    commands = dispatch.add_subparsers(dest="dispatch_command", required=True)
    status = commands.add_parser("status", help="the units and the open incidents")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.set_defaults(handler=run_status)
    for name, on_duty, text in (
        ("off-duty", False, "take units off duty (an assignment in progress is finished)"),
        ("on-duty", True, "put units back on duty (they take queued incidents at once)"),
    ):
        duty = commands.add_parser(name, help=text, description=text)
        duty.add_argument("units", nargs="+", metavar="UNIT", help="unit ids, e.g. PU-ANFA-1")
        duty.set_defaults(handler=run_duty, on_duty=on_duty)
    bench = commands.add_parser(
        "bench",
        help="time choosing and assigning a unit (100 units, the Casablanca graph)",
        description="Needs MariaDB (CASATWIN_MARIADB_*); `casatwin bench dispatch` brings its own.",
    )
    bench.add_argument("--infractions", type=int, default=500, help="infractions timed")
    bench.add_argument("--units", type=int, default=100, help="police units to choose from")
    bench.set_defaults(handler=run_bench)


def run_service(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.for_service("dispatcher")  # its own Kafka principal
    import signal
    import threading

    from casatwin.city.load import load_city
    from casatwin.dispatch.service import serve

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve(settings, load_city(settings.city), stop)
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    import time

    import orjson

    from casatwin.dispatch import store
    from casatwin.registry import db

    conn = db.connect(settings.mariadb)
    try:
        units = store.units(conn)
        incidents = store.open_incidents(conn)
    finally:
        conn.close()
    if args.json:
        body = {"units": [u.__dict__ for u in units], "incidents": [i.__dict__ for i in incidents]}
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0
    now_ms = int(time.time() * 1000)
    free = sum(u.status == "available" for u in units)
    print(f"{len(units)} units: {free} available, "
          f"{sum(u.status == 'off_duty' for u in units)} off duty, "
          f"{sum(u.dispatch_id is not None for u in units)} busy")  # fmt: skip
    print(f"{'UNIT':<16} {'STATION':<16} {'STATUS':<10} DISPATCH")
    for u in units:
        print(f"{u.unit_id:<16} {u.station_id:<16} {u.status:<10} {u.dispatch_id or ''}")
    queued = sum(i.status == "queued" for i in incidents)
    print(f"\n{len(incidents)} open incidents ({queued} queued)")
    print(f"{'DISPATCH':<28} {'TYPE':<16} {'SEV':>3} {'STATUS':<9} {'UNIT':<16} {'AGE':>7} ETA")
    for i in incidents:
        age = f"{max(0, now_ms - i.created_ms) / 1000:.0f}s"
        eta = f"{i.eta_s:.0f}s" if i.eta_s is not None else ""
        print(f"{i.dispatch_id:<28} {i.infraction_type:<16} {i.severity:>3} {i.status:<9} "
              f"{i.unit_id or '':<16} {age:>7} {eta}")  # fmt: skip
    return 0


def run_duty(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.dispatch import store
    from casatwin.registry import db

    units = list(dict.fromkeys(args.units))  # a unit named twice is reported once
    conn = db.connect(settings.mariadb)
    try:
        changed = store.set_on_duty(conn, units, args.on_duty)
    finally:
        conn.close()
    state = "on duty" if args.on_duty else "off duty"
    same = [u for u in units if u not in changed]
    if changed:
        print(f"{', '.join(changed)}: now {state}")
    if same:
        print(f"{', '.join(same)}: already {state}")
    return 0


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from casatwin.dispatch.bench import benchmark

    result = benchmark(settings, infractions=args.infractions, units=args.units)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0
