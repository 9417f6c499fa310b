"""``casatwin db`` (the schema) and ``casatwin registry`` (drivers, vehicles, lookups)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import orjson

from casatwin.config import Settings
from casatwin.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    dbp = subparsers.add_parser(
        "db",
        help="the MariaDB schema (migrations)",
        description="Create or upgrade the system of record's schema in MariaDB.",
    )
    db_actions = dbp.add_subparsers(title="actions", metavar="ACTION", required=True)
    migrate = db_actions.add_parser(
        "migrate",
        help="apply the pending migrations (idempotent)",
        description="Create the database if needed and apply every pending migration in order.",
    )
    migrate.add_argument("--to", type=int, metavar="VERSION", help="stop at this version")
    migrate.set_defaults(handler=run_migrate)
    status = db_actions.add_parser("status", help="applied and pending migrations")
    status.set_defaults(handler=run_status)

    reg = subparsers.add_parser(
        "registry",
        help="the driver registry: load, look up, benchmark",
        description="The national registry of drivers and vehicles the processor enriches from.",
    )
    actions = reg.add_subparsers(title="actions", metavar="ACTION", required=True)
    load = actions.add_parser(
        "load",
        help="generate and bulk-load synthetic drivers and vehicles (idempotent)",
        description=(
            "Generate deterministic synthetic Moroccan drivers, their vehicles, every taxi "
            "of the fleet with its current driver, and the city's police units, and load "
            "them. Running it again loads only what is missing."
        ),
    )
    load.add_argument(
        "--drivers",
        type=int,
        help="drivers the registry should hold (default: CASATWIN_REGISTRY_DRIVERS)",
    )
    load.add_argument("--seed", type=int, help="random seed (default: CASATWIN_REGISTRY_SEED)")
    load.add_argument(
        "--as-of", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
        help="the day licences and points are as of (default: today, at the first load)",
    )  # fmt: skip
    load.add_argument(
        "--city", metavar="PACK", help="city pack of the police units (default: CASATWIN_CITY_PACK)"
    )
    load.add_argument(
        "--replace",
        action="store_true",
        help="empty the registry AND the ledgers first, then generate from scratch",
    )
    load.add_argument(
        "--bench",
        action="store_true",
        help="measure a load into an empty registry; print one JSON object",
    )
    load.set_defaults(handler=run_load)

    driver = actions.add_parser(
        "driver",
        help="show a driver: licence, points history, infractions",
        description="Show a driver's file, found by CIN, licence number, plate or vehicle id.",
    )
    driver.add_argument(
        "key",
        help="CIN (BE123456), licence (06/00012345), plate (12345-B-6) or vehicle id (TX-00042)",
    )
    driver.set_defaults(handler=run_driver)

    bench = actions.add_parser(
        "bench-lookup",
        help="p50/p95/p99 of batched vehicle lookups (JSON)",
        description="Time batched lookups (loading 10M drivers first if the registry has fewer).",
    )
    bench.add_argument("--batch", type=int, default=1000, help="keys per batch (default 1000)")
    bench.add_argument("--batches", type=int, default=300, help="batches to time (default 300)")
    bench.add_argument(
        "--drivers", type=int, default=10_000_000, help="registry size to measure on (default 10M)"
    )
    bench.set_defaults(handler=run_bench_lookup)


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.registry import schema

    applied, version = schema.migrate_database(settings.mariadb, target=args.to)
    if applied:
        print(f"applied {len(applied)} migration(s); schema version {version}")
    else:
        print(f"schema is up to date (version {version})")
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.registry import db, schema

    conn = db.open_connection(settings.mariadb)
    try:
        rows = schema.status(conn)
    finally:
        conn.close()
    for migration, applied in rows:
        print(f"{migration.version:04d}  {'applied' if applied else 'PENDING'}  {migration.name}")
    return 0 if all(applied for _, applied in rows) else 1


def run_load(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.registry import bench, loader

    drivers = args.drivers if args.drivers is not None else settings.registry.drivers
    seed = args.seed if args.seed is not None else settings.registry.seed
    settings = settings.replace(registry={"seed": seed})
    if args.bench:
        result = bench.bench_load(settings, drivers=drivers, replace=args.replace)
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    report = loader.load(
        settings.mariadb,
        drivers,
        seed=seed,
        as_of=args.as_of,
        police_units=police_units(args.city or settings.city.pack),
        replace=args.replace,
    )
    print(
        f"registry: {report.drivers:,} drivers, {report.private_vehicles:,} private vehicles, "
        f"{report.taxis:,} taxis, {report.police_units} police units "
        f"({report.rows:,} rows added in {report.seconds:.1f} s)"
    )
    return 0


def police_units(pack_name: str) -> list:
    """The police units of a city pack (bundled name or file)."""
    from casatwin.city.load import load as load_pack
    from casatwin.registry.loader import police_units_of

    return police_units_of(load_pack(pack_name))


def run_driver(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.registry import db, sheet

    conn = db.connect(settings.mariadb)
    try:
        found = sheet.find(conn, args.key)
    finally:
        conn.close()
    print(sheet.render(found, today=dt.datetime.now(dt.UTC).date()))
    return 0


def run_bench_lookup(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.registry import bench

    if args.batch < 1 or args.batches < 5:
        raise UserError("--batch must be at least 1 and --batches at least 5")
    result = bench.bench_lookup(
        settings, batch=args.batch, batches=args.batches, drivers=args.drivers
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0
