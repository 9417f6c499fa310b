"""Simulator benchmark: pure stepping, stepping + publishing, and the raw producer rate.

Three measurements in one run, each for ``seconds`` of wall-clock time:

1. ``updates_per_s`` — vehicle-updates per second of :meth:`Fleet.step` alone;
2. ``publish_rate_per_s`` — messages delivered per second by the service running as fast
   as possible (stepping, telemetry encoding, producing, waiting for acknowledgements);
3. ``raw_produce_per_s`` — the reference: the same :class:`Producer` (same settings,
   same client library) sending already-encoded telemetry values of the same sizes.

The ratio of 2 to 3 says how much of the producer's capacity the simulation leaves; the
real-time verdict says whether the fleet at its telemetry rate fits in a wall-clock second.
Publishing goes to private benchmark topics (same partitions) that are deleted afterwards,
so a running twin never sees benchmark traffic.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from casatwin import fleet as taxi_fleet
from casatwin.bus.admin import admin_client, wait_for_broker
from casatwin.bus.producer import Producer
from casatwin.city.load import load_city
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.simulator.service import BACKPRESSURE_FILL, SimulatorService
from casatwin.simulator.simulation import Simulation
from casatwin.simulator.traffic import Fleet, FleetConfig

log = get_logger("simulator")

BENCH_TELEMETRY = "casatwin.bench.telemetry"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: benchmark runs are reproducible


def benchmark(settings: Settings) -> dict[str, Any]:
    """``casatwin bench simulator``: the whole Casablanca fleet for 10 s per measurement."""
    return measure(settings, vehicles=taxi_fleet.FLEET_SIZE, seconds=10.0)


def measure(settings: Settings, vehicles: int, seconds: float) -> dict[str, Any]:
    wait_for_broker(settings.kafka)
    settings = settings.replace(simulator={"taxis": vehicles, "metrics_port": 0})
    pack = load_city(settings.city)
    load_before = os.getloadavg()[0]

    log.info("benchmark: pure stepping", vehicles=vehicles, seconds=seconds)
    stepping = _stepping(settings, pack, seconds)
    _create_topic(settings)
    try:
        log.info("benchmark: stepping and publishing", seconds=seconds)
        publishing, samples = _publishing(settings, pack, seconds)
        log.info("benchmark: raw producer rate (reference)", seconds=seconds)
        raw = _raw_produce(settings, samples, seconds)
    finally:
        _delete_topic(settings)

    hz = settings.simulator.telemetry_hz
    needed = vehicles * hz
    return {
        "city": pack.name,
        "vehicles": stepping["vehicles"],
        "step_s": settings.simulator.step_s,
        "updates_per_s": round(stepping["updates_per_s"]),
        "steps_per_s": round(stepping["steps_per_s"], 1),
        "publish_rate_per_s": round(publishing["rate"]),
        "raw_produce_per_s": round(raw["rate"]),
        "publish_vs_raw": round(publishing["rate"] / raw["rate"], 3) if raw["rate"] else None,
        "sim_speed_x_realtime": round(publishing["speed"], 2),
        "realtime_msgs_needed_per_s": round(needed),
        "fits_realtime": publishing["speed"] >= 1.0 and publishing["rate"] >= needed,
        "message_bytes": round(raw["bytes"], 1),
        "undelivered": publishing["undelivered"] + raw["undelivered"],
        "cpus": os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
    }


def _stepping(settings: Settings, pack: Any, seconds: float) -> dict[str, float]:
    fleet = Fleet.create(pack, FleetConfig.from_settings(settings.simulator))
    dt = settings.simulator.step_s
    t = START_MS / 1000
    for _ in range(20):  # let the initial placement settle into traffic
        fleet.step(t, dt)
        t += dt
    steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            fleet.step(t, dt)
            t += dt
        steps += 10
    elapsed = time.perf_counter() - started
    return {
        "vehicles": len(fleet),
        "updates_per_s": steps * len(fleet) / elapsed,
        "steps_per_s": steps / elapsed,
    }


def _publishing(
    settings: Settings, pack: Any, seconds: float
) -> tuple[dict[str, float], list[tuple[bytes, bytes]]]:
    simulation = Simulation(pack, settings.simulator, START_MS)
    service = SimulatorService(
        settings,
        simulation,
        realtime=False,
        client_id="casatwin-simulator-bench",
        telemetry_topic=BENCH_TELEMETRY,
        sensor_topic=BENCH_TELEMETRY,
    )
    service.start()
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    started = time.perf_counter()
    timer.start()
    try:
        service.run_until(stop)
    finally:
        timer.cancel()
    service.drain(timeout_s=30.0)
    elapsed = time.perf_counter() - started
    assert service.producer is not None
    totals = service.producer.report.totals()
    samples: list[tuple[bytes, bytes]] = []
    while len(samples) < 20_000:  # the reference sends values of the same sizes
        fix = simulation.tick().fix
        keys = [service.encoder.keys[v] for v in fix.vehicles.tolist()]
        samples += zip(keys, service.encoder.encode(fix))
    return {
        "rate": totals["delivered"] / elapsed,
        "speed": simulation.elapsed_s / elapsed,
        "undelivered": totals["failed"] + totals["refused"],
    }, samples


def _raw_produce(
    settings: Settings, samples: list[tuple[bytes, bytes]], seconds: float
) -> dict[str, float]:
    producer = Producer(settings.kafka, "casatwin-simulator-bench-raw")
    limit = settings.kafka.queue_max_messages * BACKPRESSURE_FILL
    n = len(samples)
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for k in range(1000):
            key, value = samples[(sent + k) % n]
            producer.send(BENCH_TELEMETRY, value, key=key)
        sent += 1000
        producer.poll(0)
        while len(producer) > limit:
            producer.poll(0.01)
    producer.flush(30.0)
    elapsed = time.perf_counter() - started
    totals = producer.report.totals()
    return {
        "rate": totals["delivered"] / elapsed,
        "bytes": sum(len(v) for _, v in samples) / max(n, 1),
        "undelivered": totals["failed"] + totals["refused"],
    }


def _create_topic(settings: Settings) -> None:
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings.kafka)
    futures = admin.create_topics(
        [NewTopic(BENCH_TELEMETRY, num_partitions=settings.kafka.partitions, replication_factor=-1)]
    )
    for future in futures.values():
        try:
            future.result(15)
        except Exception as exc:  # already there from an interrupted run is fine
            log.debug("benchmark topic not created", reason=str(exc))


def _delete_topic(settings: Settings) -> None:
    admin = admin_client(settings.kafka)
    for future in admin.delete_topics([BENCH_TELEMETRY]).values():
        try:
            future.result(15)
        except Exception as exc:  # a broker without deletion keeps it; harmless
            log.debug("benchmark topic not deleted", reason=str(exc))
