"""The processor's benchmarks (``make bench``): latency and sustained throughput.

``processor-latency``  500 taxis of the simulator in real time (with more violators than
    usual, for samples); for every infraction, the time from its evidence fix reaching
    ``casatwin.telemetry`` to the infraction reaching ``casatwin.infractions``, both seen
    by one consumer of the two topics (so its own fetch delay cancels out). p50/p95/p99.
    References in the same run: the same consumer's delay for the fixes themselves
    (producer's timestamp to arrival: what the broker alone costs), and the floor on the
    same session (:mod:`casatwin.processor.floor`) with the ratio of the p95 to it (target:
    within 1.5x the stateful floor).
``processor-latency-settings``  the same, shorter, for a few settings in turn (trigger,
    state buckets, state store, shuffle partitions, checkpoint on tmpfs, the fair
    scheduler), to show what moves the latency; each p95 over the floor of the defaults.
``processor-throughput``  a recorded simulation (3,000 taxis, as fast as possible) is
    drained from the broker by both queries, after a warm-up recording; then re-timed copies
    are replayed at a fixed rate (target 50,000 msg/s) while each query's lag is sampled.
    Kafka records per second of batch time, per query. Reference: the raw consume rate of
    the same connector on the same records, in the same run — a stateless query with
    Spark's ``format("kafka")`` (same options, same session) that only counts the rows.

Each prepares the registry first (migrations, the fleet's drivers) and runs the processor
in this process, on its own Spark session (``local[*]``).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import orjson

from casatwin.bus import topics
from casatwin.bus.ranges import OffsetMap, backlog, count, read_values, to_map
from casatwin.config import KafkaSettings, Settings
from casatwin.logs import get_logger
from casatwin.processor.floor import floor, ratio
from casatwin.processor.kafka_offsets import from_progress

log = get_logger("bench")

LATENCY_TAXIS = 500
LATENCY_SECONDS = 150
FLOOR_SECONDS = 45
WARMUP_S = 30  # infractions whose evidence arrived in the first seconds are not counted
SWEEP_SECONDS = 180  # ~130 infractions per variant: p95 moved by ±150 ms with 40
RECORD_TAXIS = 3000
WARMUP_RECORD_SECONDS = 20
RECORD_SECONDS = 100
REPLAY_RATE = 50_000
REPLAY_SECONDS = 60
START_MS = 1_800_000_000_000


# -- shared ----------------------------------------------------------------------------------


def prepare_registry(settings: Settings) -> None:
    from casatwin.registry.setup import prepare

    prepare(settings.replace(registry={"drivers": 13_000}))


def own_checkpoints(settings: Settings, name: str) -> Settings:
    """``settings`` with processor checkpoints of this benchmark's own, empty: benchmarks share
    one set of servers and data directory, and one that resumed another's checkpoint would
    start on its offsets (the throughput benchmark leaves a backlog of hundreds of thousands
    of records)."""
    where = settings.general.data_dir / "bench-checkpoints" / name
    shutil.rmtree(where, ignore_errors=True)
    return settings.replace(processor={"checkpoint_dir": str(where)})


def run_simulator(settings: Settings, *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
    """``casatwin simulator ARGS`` against the bench's servers."""
    env = {**os.environ, **settings.as_env(), "CASATWIN_SIMULATOR_METRICS_PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "casatwin.cli", "simulator", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if wait:
        _, err = process.communicate(timeout=900)
        if process.returncode != 0:
            raise RuntimeError(f"the simulator failed: {err.decode()[-2000:]}")
    return process


@contextmanager
def running_processor(
    settings: Settings, spark: Any = None, queries: tuple[str, ...] | None = None
) -> Iterator[Any]:
    """The processor application in this process (its queries, or ``queries`` only); yields
    the running app."""
    from casatwin.processor.app import QUERY_NAMES, ProcessorApp, default_queries

    app = ProcessorApp(
        settings, spark=spark, queries=default_queries(settings, queries or QUERY_NAMES)
    )
    stop = threading.Event()
    app.start()
    supervisor = threading.Thread(target=app.run_until, args=(stop, 30.0), daemon=True)
    supervisor.start()
    try:
        yield app
    finally:
        stop.set()
        supervisor.join(30)
        app.stop()


@contextmanager
def congestion_apart(settings: Settings, nice: int) -> Iterator[None]:
    """The congestion query in a process of its own (``casatwin processor --queries
    congestion``), ``nice`` steps below this one's CPU priority, from its first batch on: the
    kernel then gives a core to the infractions query's tasks first, which Spark's scheduler
    pools cannot do for tasks already running."""
    from casatwin.processor.app import checkpoint_root
    from casatwin.waiting import wait_until

    first_batch = checkpoint_root(settings) / "congestion" / "spark" / "commits" / "0"
    env = {**os.environ, **settings.as_env(), "CASATWIN_PROCESSOR_METRICS_PORT": "0"}
    command = [sys.executable, "-m", "casatwin.cli", "processor", "--queries", "congestion"]
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            ["nice", "-n", str(nice), *command], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            wait_until(lambda: first_batch.exists() or process.poll() is not None, 300, 0.5)
            if not first_batch.exists():
                err.seek(0)
                raise RuntimeError(
                    f"the congestion query's process ran no batch: {err.read().decode()[-2000:]}"
                )
            yield
        finally:
            process.terminate()
            process.wait(120)


def ends(settings: Settings, topic: str) -> OffsetMap:
    from casatwin.bus.watermarks import EndOffsets

    offsets = EndOffsets(settings.kafka, "bench-ends")
    try:
        return to_map(offsets.ends([topic]))
    finally:
        offsets.close()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1)}


# -- latency --------------------------------------------------------------------------------


class Watcher:
    """One consumer of the telemetry and the infractions, noting when each message arrives."""

    def __init__(self, settings: Settings) -> None:
        from casatwin.bus import consumer

        self.reader = consumer.reader(
            settings.kafka,
            [topics.TELEMETRY, topics.INFRACTIONS],
            "bench-watcher",
            start="latest",
            **{"fetch.wait.max.ms": 5},
        )
        self.fix_seen: dict[tuple[str, int], float] = {}
        self.fix_delay_ms: list[float] = []  # arrival − producer's timestamp: the reference
        self.infractions: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.reader.close()

    def _run(self) -> None:
        import confluent_kafka

        from casatwin.bus import consumer

        while not self._stop.is_set():
            for message in consumer.messages(self.reader, max_messages=5000, timeout_s=0.05):
                now_ms = time.time() * 1000
                value = orjson.loads(message.value())
                if message.topic() == topics.TELEMETRY:
                    self.fix_seen[(value["vehicle_id"], value["ts"])] = now_ms
                    kind, produced_ms = message.timestamp()
                    if kind == confluent_kafka.TIMESTAMP_CREATE_TIME:
                        self.fix_delay_ms.append(now_ms - produced_ms)
                else:
                    self.infractions.append((now_ms, value))

    def latencies(self, since_ms: float) -> tuple[list[float], dict[str, int]]:
        out, by_type = [], {}
        for seen_ms, infraction in self.infractions:
            fix_ms = self.fix_seen.get((infraction["vehicle_id"], infraction["evidence_ts"]))
            if fix_ms is None or fix_ms < since_ms or fix_ms > seen_ms:
                continue  # decided by a timer (its evidence is no fix), or during the warm-up
            out.append(seen_ms - fix_ms)
            by_type[infraction["type"]] = by_type.get(infraction["type"], 0) + 1
        return out, by_type


def measure_latency(
    settings: Settings, seconds: int, spark: Any = None, congestion_nice: int | None = None
) -> dict[str, Any]:
    """The infractions' latency with the processor in this process; with ``congestion_nice``
    its congestion query runs apart (:func:`congestion_apart`)."""
    settings = settings.replace(
        simulator={"speeder_share": 0.1, "red_light_runner_share": 0.05, "realtime": True},
        processor={"starting_offsets": "latest"},
    )
    with ExitStack() as apart:
        if congestion_nice is not None:
            apart.enter_context(congestion_apart(settings, congestion_nice))
        return _measure_latency(
            settings, seconds, spark, ("infractions",) if congestion_nice is not None else None
        )


def _measure_latency(
    settings: Settings, seconds: int, spark: Any, queries: tuple[str, ...] | None
) -> dict[str, Any]:
    with running_processor(settings, spark, queries) as app:
        query = app.running[0].query
        first_batch_done(query)
        watcher = Watcher(settings)
        watcher.start()
        started_ms = time.time() * 1000
        run_simulator(settings, "--realtime", "--taxis", str(LATENCY_TAXIS), "--seconds",
                      str(seconds))  # fmt: skip
        time.sleep(5)
        watcher.stop()
        progress = query.recentProgress
    latencies, by_type = watcher.latencies(started_ms + WARMUP_S * 1000)
    batches = [p for p in progress if p["numInputRows"]]
    return {
        "infractions_measured": len(latencies),
        "by_type": by_type,
        "latency_ms": percentiles(latencies),
        "reference_fix_delay_ms": percentiles(watcher.fix_delay_ms),
        "batch_ms_median": statistics.median(p["durationMs"]["triggerExecution"] for p in batches)
        if batches
        else None,
        "telemetry_msgs": len(watcher.fix_seen),
    }


def latency(settings: Settings) -> dict[str, Any]:
    from casatwin.processor.session import build_session

    prepare_registry(settings)
    settings = own_checkpoints(settings, "processor-latency")
    spark = build_session(settings)
    try:
        result = measure_latency(settings, LATENCY_SECONDS, spark)
        result["floor"] = floor(spark, settings, FLOOR_SECONDS)
    finally:
        spark.stop()
    floor_p95 = result["floor"]["stateful"]["latency_ms"]["p95"]
    result["p95_vs_floor"] = ratio(result["latency_ms"]["p95"], floor_p95)
    result["target_vs_floor"] = 1.5  # the processor's p95 within 1.5x the stateful floor
    result["settings"] = _described(settings)
    result["machine_load_1m"] = os.getloadavg()[0]
    return result


SWEEP: list[tuple[str, dict[str, Any]]] = [
    ("defaults (fair scheduler, timers asked for when the telemetry is silent)", {}),
    ("trigger 250 ms", {"trigger_ms": 250}),
    ("trigger 1000 ms", {"trigger_ms": 1000}),
    ("8 state buckets, 2 shuffle partitions", {"state_buckets": 8, "shuffle_partitions": 2}),
    ("2 state buckets", {"state_buckets": 2}),
    ("in-memory state store (hdfs)", {"state_store": "hdfs"}),
    ("checkpoints on tmpfs (/dev/shm)", {"checkpoint_dir": "tmpfs"}),
    # Spark's own settings ("spark": set on the session for the variant, then unset).
    (
        "state store checkpoint format v2",
        {"spark": {"spark.sql.streaming.stateStore.checkpointFormatVersion": "2"}},
    ),
    ("Spark's empty batches for the timers", {"timer_batches": True}),
    # Not a setting: the congestion query in a process of its own, at nice 10.
    ("the congestion query in a process of its own, nice 10", {"congestion_nice": 10}),
    # Session-wide settings last: each of these variants gets a Spark session of its own.
    ("FIFO scheduler (no pools)", {"scheduler": "fifo"}),
]
SESSION_WIDE = {"scheduler"}  # read when a SparkContext starts, not per query


def latency_settings(settings: Settings) -> dict[str, Any]:
    """The latency under a few settings in turn, one Spark session for all."""
    from casatwin.processor.session import build_session, query_conf, reconfigure

    prepare_registry(settings)
    spark = build_session(settings)
    floor_p95 = floor(spark, settings, FLOOR_SECONDS)["stateful"]["latency_ms"]["p95"]
    rows = {}
    try:
        for name, change in SWEEP:
            with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
                tmpfs = {"checkpoint_dir": shm} if change.get("checkpoint_dir") == "tmpfs" else {}
                variant = own_checkpoints(settings, f"latency-{name.replace(' ', '-')}")
                ours = {k: v for k, v in change.items() if k not in ("spark", "congestion_nice")}
                variant = variant.replace(processor={**ours, **tmpfs})
                if SESSION_WIDE & set(change):
                    spark.stop()
                    spark = build_session(variant)
                reconfigure(spark, variant)
                with query_conf(spark, change.get("spark", {})):
                    result = measure_latency(
                        variant, SWEEP_SECONDS, spark, change.get("congestion_nice")
                    )
            rows[name] = {
                "p50_ms": result["latency_ms"]["p50"],
                "p95_ms": result["latency_ms"]["p95"],
                "p99_ms": result["latency_ms"]["p99"],
                "batch_ms_median": result["batch_ms_median"],
                "samples": result["infractions_measured"],
                "p95_vs_floor": ratio(result["latency_ms"]["p95"], floor_p95),
                "load_1m": round(os.getloadavg()[0], 1),
            }
            log.info("latency variant measured", variant=name, **rows[name])
    finally:
        spark.stop()
    return {"variants": rows, "seconds_each": SWEEP_SECONDS, "floor_p95_ms": floor_p95}


def _described(settings: Settings) -> dict[str, Any]:
    p = settings.processor
    return {
        "trigger_ms": p.trigger_ms,
        "state_buckets": p.state_buckets,
        "state_store": p.state_store,
        "shuffle_partitions": p.shuffle_partitions,
        "max_records_per_batch": p.max_records_per_batch,
    }


# -- throughput ------------------------------------------------------------------------------


def raw_consume_rate(spark: Any, settings: Settings, start: OffsetMap, end: OffsetMap) -> float:
    """Records per second of batch time at which Spark's Kafka connector alone reads the
    records from ``start`` to ``end``: a stateless streaming query with the processor's
    options (``maxOffsetsPerTrigger`` included) whose batches only count the rows and their
    bytes — the reference the processor is compared to."""
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    from casatwin.processor.source import kafka_records

    settings = settings.replace(processor={"starting_offsets": orjson.dumps(start).decode()})
    rows = kafka_records(spark, settings, [topics.TELEMETRY], "bench-raw")
    with tempfile.TemporaryDirectory(prefix="casatwin-raw-") as checkpoint:
        query = (
            rows.writeStream.foreachBatch(
                lambda frame, _: frame.agg(F.count("*"), F.sum(F.length("value"))).collect()
            )
            .option("checkpointLocation", checkpoint)
            .trigger(processingTime="0 seconds")
            .start()
        )
        try:
            if not wait_until_read(query, end, 600):
                raise RuntimeError("the raw Kafka query did not read the recording in 10 min")
            progress = list(query.recentProgress)
        finally:
            query.stop()
    return records_rate(progress)


def recorded_values(settings: Settings, start: OffsetMap, end: OffsetMap) -> list[bytes]:
    values = read_values(settings.kafka, "bench-recorded", start, end, 60)
    return [value for value in values if value is not None]


def replay(
    kafka: KafkaSettings, values: list[bytes], shift_ms: int, rate: int, seconds: int
) -> None:
    """Child process: send re-timed copies of ``values`` at ``rate`` msg/s for ``seconds``
    (each lap moves the timestamps on, so event time keeps advancing)."""
    from casatwin.bus.producer import Producer

    producer = Producer(kafka, "bench-replay")
    # Each message split around its timestamp, so that a re-timed copy is one formatting.
    parts = []
    for value in values:
        message = orjson.loads(value)
        head, tail = value.split(b'"ts":%d' % message["ts"], 1)
        parts.append((head + b'"ts":', message["ts"], tail, message["vehicle_id"].encode()))
    # In event-time order, as the fleet made them (the recording is read partition by
    # partition: replayed so, event time would jump back past the watermark).
    parts.sort(key=lambda p: p[1])
    span = max(p[1] for p in parts) - min(p[1] for p in parts) + 1000
    started, sent, lap = time.monotonic(), 0, 0
    while time.monotonic() - started < seconds:
        shift = shift_ms + lap * span
        for k in range(0, len(parts), 1000):
            pause = started + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if time.monotonic() - started >= seconds:
                break
            for head, ts, tail, key in parts[k : k + 1000]:
                producer.send(topics.TELEMETRY, b"%s%d%s" % (head, ts + shift, tail), key=key)
            sent += len(parts[k : k + 1000])
            producer.poll(0)
        lap += 1
    producer.flush(30)


def read_up_to(progress: dict[str, Any] | None) -> OffsetMap | None:
    """The offsets a batch's progress says it read up to."""
    if not progress or not progress["sources"]:
        return None
    return from_progress(progress["sources"][0]["endOffset"])


def wait_until_read(query: Any, end: OffsetMap, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        read = read_up_to(query.lastProgress)
        if read is not None and backlog(read, end) == 0:
            return True
        time.sleep(0.5)
    return False


def throughput(settings: Settings) -> dict[str, Any]:
    from casatwin.processor.session import build_session

    prepare_registry(settings)
    settings = own_checkpoints(settings, "processor-throughput")
    start = ends(settings, topics.TELEMETRY)
    settings = settings.replace(processor={"starting_offsets": orjson.dumps(start).decode()})
    spark = build_session(settings)
    try:
        # A warm-up recording read first, the queries stopped, the session kept: the first
        # batches pay for Spark's JIT, the Python workers' imports and the road network each
        # of them builds, none of which is throughput.
        run_simulator(settings, "--afap", "--taxis", str(RECORD_TAXIS), "--seconds",
                      str(WARMUP_RECORD_SECONDS), "--start-ms", str(START_MS))  # fmt: skip
        before = ends(settings, topics.TELEMETRY)
        with running_processor(settings, spark) as app:
            for running in app.running:
                wait_until_read(running.query, before, 900)
        raw_consume_rate(spark, settings, start, before)  # the same warm-up for the reference
        run_simulator(settings, "--afap", "--taxis", str(RECORD_TAXIS), "--seconds",
                      str(RECORD_SECONDS), "--start-ms",
                      str(START_MS + WARMUP_RECORD_SECONDS * 1000))  # fmt: skip
        after = ends(settings, topics.TELEMETRY)
        records = count(before, after)
        raw_rate = raw_consume_rate(spark, settings, before, after)
        log.info("simulation recorded", records=records, raw_consume_per_s=round(raw_rate))
        values = recorded_values(settings, before, after)
        with running_processor(settings, spark) as app:  # on from the checkpoints
            result = drain_and_sustain(settings, app, after, values)
    finally:
        spark.stop()
    return {
        "records_recorded": records,
        "raw_consume_msgs_per_s": round(raw_rate),
        "drain_msgs_per_s": {name: round(r) for name, r in result["drain"].items()},
        "drain_vs_raw": {name: round(r / raw_rate, 3) for name, r in result["drain"].items()},
        "sustained_offered_msgs_per_s": round(result["offered"]),
        "sustained_processed_msgs_per_s": {
            name: round(r) for name, r in result["sustained"].items()
        },
        "lag_samples": result["lags"],
        "lag_growing": result["growing"],
        "target_msgs_per_s": REPLAY_RATE,
        "settings": _described(settings),
        "machine_load_1m": round(os.getloadavg()[0], 1),
    }


def drain_and_sustain(
    settings: Settings, app: Any, end: OffsetMap, values: list[bytes]
) -> dict[str, Any]:
    """Each query's rate draining the backlog up to ``end``; then re-timed copies of
    ``values`` at :data:`REPLAY_RATE`: the rate offered, each query's rate and lag."""
    queries = {r.spec.name: r.query for r in app.running}
    for query in queries.values():
        wait_until_read(query, end, 900)
    drained = {name: list(q.recentProgress) for name, q in queries.items()}
    drain = {name: records_rate(p) for name, p in drained.items()}
    log.info("backlog drained", **{f"{n}_msgs_per_s": round(r) for n, r in drain.items()})
    replay_from = ends(settings, topics.TELEMETRY)
    child = multiprocessing.get_context("spawn").Process(
        target=replay,
        args=(settings.kafka, values,
              (WARMUP_RECORD_SECONDS + RECORD_SECONDS) * 1000 + 60_000,
              REPLAY_RATE, REPLAY_SECONDS),
    )  # fmt: skip
    started = time.monotonic()
    child.start()
    lags: dict[str, list[int]] = {name: [] for name in queries}
    while child.is_alive() and time.monotonic() - started < REPLAY_SECONDS + 60:
        time.sleep(2)
        latest = ends(settings, topics.TELEMETRY)
        for name, query in queries.items():
            read = read_up_to(query.lastProgress)
            if read is not None:
                lags[name].append(backlog(read, latest))
    child.join(60)
    offered = count(replay_from, ends(settings, topics.TELEMETRY))
    last_drained = {name: p[-1]["batchId"] if p else -1 for name, p in drained.items()}
    limit = settings.processor.max_records_per_batch
    return {
        "drain": drain,
        "offered": offered / (time.monotonic() - started),
        "sustained": {
            name: records_rate(after_batch(q, last_drained[name])) for name, q in queries.items()
        },
        "lags": lags,
        "growing": {name: lag_growing(lag, limit) for name, lag in lags.items()},
    }


def first_batch_done(query: Any, timeout_s: float = 300) -> None:
    """Until ``query`` has finished its first (empty) batch: Spark's start-up is not
    latency."""
    deadline = time.monotonic() + timeout_s
    while not query.recentProgress and time.monotonic() < deadline:
        time.sleep(0.2)


def after_batch(query: Any, batch_id: int) -> list[dict[str, Any]]:
    return [p for p in query.recentProgress if p["batchId"] > batch_id]


def records_rate(progress: list[dict[str, Any]]) -> float:
    """Kafka records per second of batch time over the batches that read any (the
    congestion query's rows are panes, fewer than the records they fold)."""
    from casatwin.processor.telemetry_source import telemetry_records

    busy = [p for p in progress if telemetry_records(p)]
    seconds = sum(p["durationMs"]["triggerExecution"] for p in busy) / 1000
    return sum(telemetry_records(p) for p in busy) / seconds if seconds else 0.0


def lag_growing(lags: list[int], batch_records: int) -> bool:
    """The lag swings by up to a batch as batches start and end: it grows when the last
    third of the samples sits more than a whole batch above the first third."""
    third = len(lags) // 3
    return len(lags) >= 6 and (
        statistics.mean(lags[-third:]) - statistics.mean(lags[:third]) > batch_records
    )
