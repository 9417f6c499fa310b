"""The registry's benchmarks: the 10M-driver load and batched lookups on it.

Each measures a reference with the same client in the same run:

* ``registry-load``: the whole pipeline (generate, load, index) for 10,000,000 drivers
  against the raw ``LOAD DATA`` rate of one pre-generated drivers file into a table without
  secondary indexes, i.e. what the server alone does with ready data;
* ``registry-lookup``: batches of 1,000 vehicle ids through :func:`lookup_vehicles`
  (vehicle, open shift, driver, recorded offences) against a plain ``SELECT`` of 1,000
  drivers by primary key, made the cheapest way found (sorted keys through ``JSON_TABLE``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from casatwin import fleet
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.registry import db, identities, loader, schema
from casatwin.registry.lookup import json_keys, keys_table, lookup_plates, lookup_vehicles

log = get_logger("registry")

BENCH_DRIVERS = 10_000_000
LOAD_TARGET_S = 120.0
LOOKUP_TARGET_P95_MS = 20.0


def bench_load(
    settings: Settings, drivers: int = BENCH_DRIVERS, replace: bool = False
) -> dict[str, Any]:
    """Generate and load ``drivers`` drivers into an empty registry; then the raw reference."""
    _migrate(settings)
    load_before = os.getloadavg()
    report = loader.load(
        settings.mariadb,
        drivers,
        seed=settings.registry.seed,
        replace=replace,
        require_empty=True,
    )
    raw = raw_load_rate(settings, rows=min(loader.FILE_ROWS, drivers))
    rows_per_s = report.rows / report.seconds
    return {
        "rows": report.rows,
        "seconds": report.seconds,
        "rows_per_s": round(rows_per_s),
        "drivers": report.added_drivers,
        "private_vehicles": report.added_private_vehicles,
        "target_s": LOAD_TARGET_S,
        "phases": report.phases,
        "reference": "raw LOAD DATA of a pre-generated 1M-row drivers file, no secondary index",
        "reference_rows_per_s": round(raw),
        "ratio_to_reference": round(rows_per_s / raw, 3),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }


def raw_load_rate(settings: Settings, rows: int = loader.FILE_ROWS) -> float:
    """rows/s of ``LOAD DATA`` alone: a ready drivers file into a copy of the table."""
    spec = identities.Spec(settings.registry.seed, dt.datetime.now(dt.UTC).date())
    conn = db.open_connection(settings.mariadb, local_infile=True)
    try:
        cursor = conn.cursor()
        cursor.execute("DROP TABLE IF EXISTS bench_raw_drivers")
        cursor.execute("CREATE TABLE bench_raw_drivers LIKE drivers")
        cursor.execute("ALTER TABLE bench_raw_drivers DROP INDEX uq_drivers_licence")
        with tempfile.TemporaryDirectory(prefix="casatwin-bench-") as tmp:
            path = Path(tmp) / "drivers.tsv"
            path.write_bytes(identities.drivers_tsv(spec, 0, rows))
            started = time.monotonic()
            cursor.execute(
                "LOAD DATA LOCAL INFILE %s INTO TABLE bench_raw_drivers CHARACTER SET utf8mb4"
                " FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'"
                f" ({', '.join(identities.DRIVER_COLUMNS)})",
                (str(path),),
            )
            seconds = time.monotonic() - started
        cursor.execute("DROP TABLE bench_raw_drivers")
    finally:
        conn.close()
    return rows / seconds


def bench_lookup(
    settings: Settings, batch: int = 1000, batches: int = 300, drivers: int = BENCH_DRIVERS
) -> dict[str, Any]:
    """p50/p95/p99 of batched vehicle lookups on a registry of ``drivers`` drivers.

    Keys are drawn before the clock starts; the lookups and the reference alternate, so
    that both see the same machine.
    """
    _migrate(settings)
    conn = db.connect(settings.mariadb)
    try:
        have = db.scalar(conn.cursor(), "SELECT drivers FROM registry_meta") or 0
        if have < drivers:
            conn.close()
            loader.load(settings.mariadb, drivers, seed=settings.registry.seed)
            conn = db.connect(settings.mariadb)
            have = drivers
        private = identities.private_vehicles_for(have)
        rng = random.Random(7)

        def sample(population: int, k: int) -> list[int]:
            return rng.sample(range(population), min(population, k))

        def vehicle_keys() -> list[str]:
            # Distinct keys: mostly private vehicles spread over the whole table, some taxis.
            cars = sample(private, batch * 9 // 10)
            return [identities.private_vehicle_id(k) for k in cars] + [
                fleet.taxi_id(t) for t in sample(fleet.FLEET_SIZE, batch - len(cars))
            ]

        rounds = [
            (
                vehicle_keys(),
                [identities.cin(i) for i in sample(have, batch)],
                [identities.plate(fleet.FLEET_SIZE + k) for k in sample(private, batch)],
                [fleet.taxi_id(t) for t in sample(fleet.FLEET_SIZE, batch)],
            )
            for _ in range(batches + 20)
        ]
        cursor = conn.cursor()

        def plain_select(keys: list[str]) -> int:
            # The cheapest way found to fetch 1,000 rows by key with this client.
            cursor.execute(
                f"SELECT d.cin, d.points FROM {keys_table()} JOIN drivers d ON d.cin = k.id",
                (json_keys(sorted(keys)),),
            )
            return len(cursor.fetchall())

        load_before = os.getloadavg()
        samples: dict[str, list[float]] = {"lookup": [], "reference": [], "plates": [], "taxis": []}
        found = []
        for i, (vehicles, cins, plates, taxis) in enumerate(rounds):
            timed = {
                "lookup": lambda v=vehicles: found.append(len(lookup_vehicles(conn, v))),
                "reference": lambda c=cins: plain_select(c),
                "plates": lambda p=plates: lookup_plates(conn, p),
                "taxis": lambda t=taxis: lookup_vehicles(conn, t),
            }
            for name, fn in timed.items():
                started = time.perf_counter()
                fn()
                if i >= 20:  # the first rounds warm the caches
                    samples[name].append((time.perf_counter() - started) * 1000)
        lookup, reference, plates_ms, taxis_ms = (_percentiles(samples[k]) for k in samples)
    finally:
        conn.close()
    return {
        "drivers": have,
        "batch": batch,
        "batches": batches,
        "found_per_batch": round(float(np.mean(found[20:])), 1),
        **{f"{k}_ms": v for k, v in lookup.items()},
        "target_p95_ms": LOOKUP_TARGET_P95_MS,
        "plates_p95_ms": plates_ms["p95"],
        "fleet_taxis_p95_ms": taxis_ms["p95"],
        "reference": f"plain SELECT of {batch} drivers by primary key (sorted, JSON_TABLE),"
        " same client",
        **{f"reference_{k}_ms": v for k, v in reference.items()},
        "ratio_p95_to_reference": round(lookup["p95"] / reference["p95"], 2),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}


def _migrate(settings: Settings) -> None:
    schema.migrate_database(settings.mariadb)
