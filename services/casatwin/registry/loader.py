"""``casatwin registry load``: generate the synthetic registry and bulk-load it.

The pipeline, for 10 million drivers on two cores:

1. a worker process generates files of 1M rows (NumPy, :mod:`identities`) as TSV
   while this process streams the previous file to MariaDB with ``LOAD DATA LOCAL
   INFILE`` — generation and the server's parsing overlap;
2. rows arrive sorted by primary key, and a table that is empty when the load starts has
   its secondary indexes dropped first and rebuilt at the end (one sort instead of
   millions of random B-tree inserts); the drivers' indexes are rebuilt by a second
   connection while the vehicles load;
3. the small tables (taxis and their current drivers, police units) are upserted.

Idempotent and resumable: the registry remembers its seed and day in ``registry_meta``;
loading the same count again does nothing, a larger count adds only the missing rows, and
a load that stopped half way continues where it stopped (each file commits on its own and
the deferred indexes are listed in ``registry_deferred_indexes`` until rebuilt).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from casatwin import fleet
from casatwin.city.model import CityPack
from casatwin.config import MariaDBSettings
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.registry import db, identities, schema, shifts
from casatwin.registry.identities import Spec

log = get_logger("registry")

FILE_ROWS = 1 << 20  # rows per LOAD DATA statement (and per generated file)
AHEAD = 2  # files generated ahead of the one loading: bounded memory and disk
ER_LOCAL_INFILE_DISABLED = (1148, 3948, 4166)
REGISTRY_TABLES = ("drivers", "vehicles")
# Deleted by --replace, children first.
ALL_TABLES = (
    "dispatch_assignments", "points_ledger", "infractions", "taxi_shifts", "vehicles",
    "police_units", "drivers", "registry_meta", "registry_deferred_indexes",
)  # fmt: skip


@dataclass
class LoadReport:
    drivers: int
    private_vehicles: int
    taxis: int
    police_units: int
    added_drivers: int = 0
    added_private_vehicles: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows this load wrote to the two big tables."""
        return self.added_drivers + self.added_private_vehicles


@dataclass(frozen=True)
class PoliceUnit:
    unit_id: str
    station_id: str
    station_name: str
    lat: float
    lon: float
    node: str


def police_units_of(pack: CityPack) -> list[PoliceUnit]:
    return [
        PoliceUnit(unit, s.id, s.name, s.lat, s.lon, s.node)
        for s in pack.police_stations
        for unit in s.units
    ]


def load(
    settings: MariaDBSettings,
    drivers: int,
    *,
    seed: int,
    as_of: dt.date | None = None,
    police_units: list[PoliceUnit] | None = None,
    replace: bool = False,
    require_empty: bool = False,
    at_least: bool = False,
    workdir: Path | None = None,
) -> LoadReport:
    """Make the registry hold ``drivers`` drivers (and their vehicles); see the module doc.

    ``police_units=None`` leaves the police units as they are. ``require_empty`` refuses a
    registry that already has drivers (benchmarks measure a load from scratch). With
    ``at_least``, a registry that holds more drivers is kept as it is instead of refused
    (``make run`` and the benchmarks need *a* registry, not one of an exact size).
    """
    if not fleet.FLEET_SIZE <= drivers <= identities.MAX_DRIVERS:
        raise UserError(
            f"cannot generate {drivers:,} drivers",
            hint=f"choose from {fleet.FLEET_SIZE:,} (one per taxi of the fleet) to "
            f"{identities.MAX_DRIVERS:,} (the CIN numbers of {len(identities.CIN_PREFIXES)} "
            "prefixes)",
        )
    started = time.monotonic()
    conn = db.open_connection(settings, local_infile=True)
    try:
        schema.require_current(conn, settings.database)
        cursor = conn.cursor()
        if replace:
            _wipe(cursor)
        spec = _spec(cursor, seed, as_of)
        have_drivers = _count(cursor, "SELECT COUNT(*) FROM drivers")
        if require_empty and have_drivers:
            raise UserError(
                f"the registry already holds {have_drivers:,} drivers; a benchmark measures a "
                "load from scratch",
                hint="add --replace to empty it first (this deletes the ledgers too)",
            )
        if drivers < have_drivers and at_least:
            drivers = have_drivers
        if drivers < have_drivers:
            raise UserError(
                f"the registry already holds {have_drivers:,} drivers, more than {drivers:,}",
                hint="a registry only grows; use --replace to generate a smaller one",
            )
        want_private = identities.private_vehicles_for(drivers)
        have_private = _count(cursor, "SELECT COUNT(*) FROM vehicles WHERE vehicle_id LIKE 'PV-%%'")
        report = LoadReport(drivers, want_private, fleet.FLEET_SIZE, 0)
        pending_indexes = _count(cursor, "SELECT COUNT(*) FROM registry_deferred_indexes")
        if have_drivers == drivers and have_private == want_private and not pending_indexes:
            log.info(
                "registry already loaded",
                drivers=drivers,
                private_vehicles=want_private,
                seed=spec.seed,
                as_of=str(spec.as_of),
            )
        else:
            log.info(
                "loading the registry",
                drivers=f"{have_drivers:,} → {drivers:,}",
                private_vehicles=f"{have_private:,} → {want_private:,}",
                seed=spec.seed,
                as_of=str(spec.as_of),
            )
            _bulk(
                settings, conn, spec, report,
                drivers=(have_drivers, drivers),
                private=(have_private, want_private),
                workdir=workdir,
            )  # fmt: skip
        phase = time.monotonic()
        _taxis(cursor, spec)
        if police_units is not None:
            _police(cursor, police_units)
        report.police_units = _count(cursor, "SELECT COUNT(*) FROM police_units WHERE active")
        cursor.execute(
            "UPDATE registry_meta SET drivers = %s, private_vehicles = %s, loaded_ms = %s",
            (drivers, want_private, int(time.time() * 1000)),
        )
        report.phases["small_tables_s"] = round(time.monotonic() - phase, 2)
    finally:
        conn.close()
    report.seconds = round(time.monotonic() - started, 2)
    log.info(
        "registry ready",
        drivers=report.drivers,
        private_vehicles=report.private_vehicles,
        taxis=report.taxis,
        police_units=report.police_units,
        added=report.rows,
        seconds=report.seconds,
    )
    return report


def _spec(cursor: db.Cursor, seed: int, as_of: dt.date | None) -> Spec:
    """The registry's generation parameters; written before any row so a resume knows them."""
    cursor.execute("SELECT seed, as_of, generator FROM registry_meta")
    row = cursor.fetchone()
    if row is None:
        spec = Spec(seed, as_of or dt.datetime.now(dt.UTC).date())
        cursor.execute(
            "INSERT INTO registry_meta (id, seed, as_of, generator, drivers, private_vehicles,"
            " loaded_ms) VALUES (1, %s, %s, %s, 0, 0, 0)",
            (spec.seed, spec.as_of.isoformat(), identities.GENERATOR_VERSION),
        )
        return spec
    have_seed, have_as_of, generator = row
    have_as_of = dt.date.fromisoformat(str(have_as_of))
    if have_seed != seed or generator != identities.GENERATOR_VERSION:
        raise UserError(
            f"the registry was generated with seed {have_seed} (generator {generator}); "
            f"loading with seed {seed} (generator {identities.GENERATOR_VERSION}) would mix "
            "two registries",
            hint=f"use --seed {have_seed} (CASATWIN_REGISTRY_SEED), or --replace to start over",
        )
    if as_of is not None and as_of != have_as_of:
        raise UserError(
            f"the registry is as of {have_as_of}, not {as_of}",
            hint="drop --as-of to extend it, or --replace to generate it again",
        )
    return Spec(have_seed, have_as_of)


def _count(cursor: db.Cursor, sql: str) -> int:
    return int(db.scalar(cursor, sql))


def _wipe(cursor: db.Cursor) -> None:
    log.warning("emptying the registry and the ledgers (--replace)")
    cursor.execute("SET SESSION foreign_key_checks = 0")
    try:
        for table in ALL_TABLES:
            cursor.execute(f"TRUNCATE TABLE {table}")
    finally:
        cursor.execute("SET SESSION foreign_key_checks = 1")
    # Indexes dropped by an interrupted load come back before the tables fill again.
    for table in REGISTRY_TABLES:
        _restore_indexes(cursor, table)


# ---------------------------------------------------------------------------------------
# The bulk pipeline


@dataclass(frozen=True)
class _Job:
    table: str  # drivers | vehicles
    start: int
    stop: int


def _windows(table: str, start: int, stop: int) -> Iterator[_Job]:
    """Aligned windows of :data:`FILE_ROWS` rows (the first may be the part still missing)."""
    at = start
    while at < stop:
        end = min(stop, (at // FILE_ROWS + 1) * FILE_ROWS)
        yield _Job(table, at, end)
        at = end


def generate(job: _Job, spec: Spec, path: str) -> str:
    """Write one job's TSV file (runs in the worker process)."""
    write = identities.drivers_tsv if job.table == "drivers" else identities.private_vehicles_tsv
    Path(path).write_bytes(write(spec, job.start, job.stop))
    return path


class _Inline:
    """A stand-in executor for loads too small to be worth a worker process."""

    def submit(self, fn: Callable[..., str], *args: Any) -> Future[str]:
        future: Future[str] = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        pass


def _bulk(
    settings: MariaDBSettings,
    conn: db.Connection,
    spec: Spec,
    report: LoadReport,
    *,
    drivers: tuple[int, int],
    private: tuple[int, int],
    workdir: Path | None,
) -> None:
    cursor = conn.cursor()
    cursor.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
    # Tables empty at the start get their secondary indexes rebuilt once at the end.
    for table, (have, want) in (("drivers", drivers), ("vehicles", private)):
        if have == 0 and want > 0 and _count(cursor, f"SELECT COUNT(*) FROM {table}") == 0:
            _defer_indexes(cursor, table)
    jobs = [*_windows("drivers", *drivers), *_windows("vehicles", *private)]
    totals = {"drivers": drivers[1] - drivers[0], "vehicles": private[1] - private[0]}
    done = {"drivers": 0, "vehicles": 0}
    big = sum(totals.values()) > FILE_ROWS
    executor = ProcessPoolExecutor(1, mp_context=get_context("spawn")) if big else _Inline()
    rebuild: threading.Thread | None = None
    rebuild_error: list[BaseException] = []
    phase_started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="casatwin-registry-", dir=workdir) as tmp:
        try:
            queue: deque[tuple[_Job, Future[str]]] = deque()
            upcoming = iter(jobs)

            def refill() -> None:
                while len(queue) < AHEAD:
                    job = next(upcoming, None)
                    if job is None:
                        return
                    path = str(Path(tmp) / f"{job.table}-{job.start}.tsv")
                    queue.append((job, executor.submit(generate, job, spec, path)))

            refill()
            while queue:
                job, future = queue.popleft()
                path = future.result()
                refill()
                _load_file(cursor, job.table, path)
                Path(path).unlink()
                done[job.table] += job.stop - job.start
                elapsed = time.monotonic() - phase_started
                log.info(
                    f"loaded {job.table}",
                    rows=f"{done[job.table]:,}/{totals[job.table]:,}",
                    percent=round(100 * done[job.table] / totals[job.table]),
                    rows_per_s=round(done[job.table] / max(elapsed, 1e-9)),
                )
                if job.table == "drivers" and done["drivers"] == totals["drivers"]:
                    report.phases["drivers_s"] = round(time.monotonic() - phase_started, 2)
                    phase_started = time.monotonic()
                    # Rebuild the drivers' indexes on a second connection (the other core)
                    # while the vehicles load.
                    rebuild = threading.Thread(
                        target=_rebuild_in_background,
                        args=(settings, "drivers", rebuild_error),
                        name="registry-index-rebuild",
                    )
                    rebuild.start()
            if totals["vehicles"]:
                report.phases["vehicles_s"] = round(time.monotonic() - phase_started, 2)
        finally:
            executor.shutdown(cancel_futures=True)
    phase = time.monotonic()
    _restore_indexes(cursor, "vehicles")
    if rebuild is not None:
        rebuild.join()
        if rebuild_error:
            raise rebuild_error[0]
    _restore_indexes(cursor, "drivers")  # no-op unless there was no drivers job
    report.phases["indexes_s"] = round(time.monotonic() - phase, 2)
    report.added_drivers = totals["drivers"]
    report.added_private_vehicles = totals["vehicles"]
    cursor.execute("SET SESSION unique_checks = 1, foreign_key_checks = 1")


def _load_file(cursor: db.Cursor, table: str, path: str) -> None:
    columns = identities.DRIVER_COLUMNS if table == "drivers" else identities.VEHICLE_COLUMNS
    try:
        cursor.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4"
            " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
            f" ({', '.join(columns)})",
            (path,),
        )
    except db.Error as exc:
        if db.error_code(exc) in ER_LOCAL_INFILE_DISABLED:
            raise UserError(
                f"MariaDB refuses LOAD DATA LOCAL INFILE: {exc.args[-1]}",
                hint="enable local_infile on the server (the devstack and the Ansible role do)",
            ) from None
        raise
    # LOCAL turns row errors into warnings: a warning means the generator wrote a bad row.
    if cursor.connection.warning_count():
        cursor.execute("SHOW WARNINGS LIMIT 5")
        shown = "; ".join(f"{w[2]}" for w in cursor.fetchall())
        raise RuntimeError(f"loading {table} from {path} produced warnings: {shown}")


# ---------------------------------------------------------------------------------------
# Deferred secondary indexes


def _defer_indexes(cursor: db.Cursor, table: str) -> None:
    """Record and drop ``table``'s secondary indexes (it is empty: this is instant)."""
    cursor.execute(
        "SELECT index_name, non_unique, column_name, sub_part FROM information_schema.statistics"
        " WHERE table_schema = DATABASE() AND table_name = %s AND index_name <> 'PRIMARY'"
        " ORDER BY index_name, seq_in_index",
        (table,),
    )
    indexes: dict[str, tuple[bool, list[str]]] = {}
    for name, non_unique, column, sub_part in cursor.fetchall():
        unique, columns = indexes.setdefault(name, (not non_unique, []))
        columns.append(f"`{column}`" + (f"({sub_part})" if sub_part else ""))
    for name, (unique, columns) in indexes.items():
        definition = (
            f"{'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS `{name}` ({', '.join(columns)})"
        )
        cursor.execute(
            "INSERT IGNORE INTO registry_deferred_indexes (table_name, index_name, definition)"
            " VALUES (%s, %s, %s)",
            (table, name, definition),
        )
    if indexes:
        drops = ", ".join(f"DROP INDEX `{name}`" for name in indexes)
        cursor.execute(f"ALTER TABLE {table} {drops}")
        log.info(
            "secondary indexes deferred to the end of the load", table=table, indexes=len(indexes)
        )


def _restore_indexes(cursor: db.Cursor, table: str) -> None:
    cursor.execute(
        "SELECT index_name, definition FROM registry_deferred_indexes WHERE table_name = %s",
        (table,),
    )
    rows = cursor.fetchall()
    if not rows:
        return
    started = time.monotonic()
    cursor.execute(f"ALTER TABLE {table} {', '.join(f'ADD {d}' for _, d in rows)}")
    cursor.execute("DELETE FROM registry_deferred_indexes WHERE table_name = %s", (table,))
    log.info(
        "secondary indexes rebuilt",
        table=table,
        indexes=len(rows),
        seconds=round(time.monotonic() - started, 1),
    )


def _rebuild_in_background(
    settings: MariaDBSettings, table: str, errors: list[BaseException]
) -> None:
    try:
        conn = db.open_connection(settings)
        try:
            _restore_indexes(conn.cursor(), table)
        finally:
            conn.close()
    except BaseException as exc:  # handed to the main thread, which re-raises it
        errors.append(exc)


# ---------------------------------------------------------------------------------------
# Small tables: taxis and their drivers, police units


def _taxis(cursor: db.Cursor, spec: Spec) -> None:
    """Every taxi of the fleet, and an open shift for each with its driver (idempotent)."""
    taxis = identities.taxis(spec)
    cursor.executemany(
        # Placeholders only in VALUES: mysqlclient then sends one multi-row INSERT.
        "INSERT IGNORE INTO vehicles (vehicle_id, plate, kind, owner_cin, owner_name)"
        " VALUES (%s, %s, %s, %s, %s)",
        [(t.vehicle_id, t.plate, t.kind, None, t.owner_name) for t in taxis],
    )
    shift_start = int(dt.datetime.combine(spec.as_of, dt.time(0), tzinfo=dt.UTC).timestamp() * 1000)
    # A taxi without an open shift gets its driver back; taxis on a shift keep theirs.
    cursor.execute("SELECT open_vehicle FROM taxi_shifts WHERE open_vehicle IS NOT NULL")
    on_shift = {row[0] for row in cursor.fetchall()}
    cursor.executemany(
        "INSERT IGNORE INTO taxi_shifts (vehicle_id, cin, started_ms) VALUES (%s, %s, %s)",
        [(t.vehicle_id, t.driver_cin, shift_start) for t in taxis if t.vehicle_id not in on_shift],
    )
    shifts.sync_drivers(cursor)


def _police(cursor: db.Cursor, units: list[PoliceUnit]) -> None:
    """Upsert the city pack's police units and their vehicles; retire units it dropped."""
    cursor.executemany(
        "INSERT INTO police_units (unit_id, station_id, station_name, home_lat, home_lon,"
        " home_node, active) VALUES (%s, %s, %s, %s, %s, %s, TRUE)"
        " ON DUPLICATE KEY UPDATE station_id = VALUES(station_id),"
        " station_name = VALUES(station_name), home_lat = VALUES(home_lat),"
        " home_lon = VALUES(home_lon), home_node = VALUES(home_node), active = TRUE",
        [(u.unit_id, u.station_id, u.station_name, u.lat, u.lon, u.node) for u in units],
    )
    ids = [u.unit_id for u in units]
    if ids:
        cursor.execute("UPDATE police_units SET active = FALSE WHERE unit_id NOT IN %s", (ids,))
    cursor.execute("SELECT vehicle_id FROM vehicles WHERE kind = 'police'")
    have = {row[0] for row in cursor.fetchall()}
    new = [u for u in units if u.unit_id not in have]
    number = len(have)
    rows = []
    for unit in new:
        number += 1
        rows.append(
            (
                unit.unit_id,
                identities.police_plate(number),
                "police",
                None,
                f"Sûreté nationale — {unit.station_name}",
            )
        )
    cursor.executemany(
        "INSERT INTO vehicles (vehicle_id, plate, kind, owner_cin, owner_name)"
        " VALUES (%s, %s, %s, %s, %s)",
        rows,
    )
