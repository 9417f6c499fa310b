"""``casatwin dispatch bench``: choosing and assigning a unit, per infraction.

100 units at random places on the Casablanca graph, infractions at random places; each
timed step is what the dispatcher does for one infraction — put it on the map, read the
free units from MariaDB, one reverse Dijkstra, choose, write the ``assigned`` order and
book the unit with it in a transaction.
Two references, alternated with it in the same run: the reverse Dijkstra alone (the floor
of any road-distance choice) and the smallest durable transaction on the same database
(one row updated, committed: the floor of any booking, set by the disk's flush). Each
assignment is closed (untimed) so that every infraction finds all units free.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np

from casatwin.city.load import load_city
from casatwin.config import Settings
from casatwin.dispatch import store
from casatwin.dispatch.nearest import Place
from casatwin.dispatch.planner import Planner
from casatwin.dispatch.service import assigned_event, book
from casatwin.logs import get_logger
from casatwin.registry import db, loader, schema
from casatwin.registry.loader import PoliceUnit

log = get_logger("dispatch.bench")

TARGET_MS = 10.0
DATABASE = "casatwin_dispatch_bench"


def benchmark(settings: Settings, infractions: int = 500, units: int = 100) -> dict[str, Any]:
    pack = load_city(settings.city)
    planner = Planner(pack)
    rng = np.random.default_rng(6)
    unit_ids = [f"BENCH-{i:03d}" for i in range(units)]
    planner.place_units(
        {u: Place(int(s), 0.0) for u, s in zip(unit_ids, rng.integers(0, pack.n_segments, units))}
    )
    conn = _bench_database(settings, pack, unit_ids)
    log.info("dispatch benchmark", city=pack.name, units=units, infractions=infractions,
             segments=pack.n_segments)  # fmt: skip
    timed, reference, commits = [], [], []
    segments = rng.integers(0, pack.n_segments, infractions)
    try:
        for i, segment in enumerate(segments.tolist()):
            lat, lon = planner.latlon(Place(segment, 0.0))
            infraction = {
                "infraction_id": f"BENCH-{time.time_ns()}-{i}",
                "type": "red_light",
                "event_ts": int(time.time() * 1000),
                "lat": lat,
                "lon": lon,
                "segment_id": pack.segment_ids[segment],
                "decision": {"class": 2},
            }
            t0 = time.perf_counter()
            incident = planner.incident(infraction)
            now_ms = int(time.time() * 1000)
            dispatch_id = store.dispatch_id_of(incident.infraction_id)
            order = partial(assigned_event, planner, settings, dispatch_id, incident, now_ms=now_ms)
            booked = book(conn, planner, incident, now_ms, order)
            t1 = time.perf_counter()
            planner.router.times_to(int(pack.seg_from[segment]))
            t2 = time.perf_counter()
            db.transaction(conn, _touch)
            t3 = time.perf_counter()
            if booked is None:
                raise RuntimeError(f"no unit could reach segment {pack.segment_ids[segment]}")
            timed.append((t1 - t0) * 1000)
            reference.append((t2 - t1) * 1000)
            commits.append((t3 - t2) * 1000)
            store.record_status(conn, booked[0], "closed", int(time.time() * 1000))
    finally:
        conn.close()
    figures = _percentiles(timed)
    floor = _percentiles(reference)
    commit = _percentiles(commits)
    return {
        "city": pack.name,
        "segments": pack.n_segments,
        "units": units,
        "infractions": infractions,
        "choose_and_assign_ms": figures,
        "reference_reverse_dijkstra_ms": floor,
        "ratio_p50": round(figures["p50"] / floor["p50"], 2),
        "reference_one_row_commit_ms": commit,
        "ratio_to_commit_p50": round(figures["p50"] / commit["p50"], 2),
        "target_ms": TARGET_MS,
        "meets_target": figures["p95"] <= TARGET_MS,
    }


def _touch(cursor: db.Cursor) -> None:
    cursor.execute("UPDATE police_units SET on_duty = TRUE WHERE unit_id = 'BENCH-000'")


def _percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def _bench_database(settings: Settings, pack: Any, unit_ids: list[str]) -> db.Connection:
    """A scratch database with the benchmark's units (the registry's is left alone)."""
    admin = db.open_connection(settings.mariadb, database=None)
    cursor = admin.cursor()
    cursor.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
    cursor.execute(f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4")
    admin.close()
    bench_db = settings.replace(mariadb={"database": DATABASE}).mariadb
    conn = db.open_connection(bench_db)
    schema.migrate(conn)
    stations = pack.police_stations
    units = [
        PoliceUnit(unit, s.id, s.name, s.lat, s.lon, s.node)
        for unit, s in ((u, stations[i % len(stations)]) for i, u in enumerate(unit_ids))
    ]
    cursor = conn.cursor()
    loader._police(cursor, units)
    cursor.close()
    return conn


def bench_dispatch(settings: Settings) -> dict[str, Any]:
    """The ``casatwin bench`` entry."""
    return benchmark(settings)
