"""The floor: what the processor's latency would be if its stages did no work.

Two queries of the processor's session and settings read a probe topic while a producer
writes to it at the fleet's rate (one record per taxi per second); each record's latency is
the time the sink (``foreachBatch``, on the driver) holds it minus the time the broker
appended it (the topic's timestamps are ``LogAppendTime``, so the producer's own queue is
not counted — as in the processor's figure, which starts when its evidence fix is on the
broker):

``stateful``  the processor's shape with nothing in it — Spark's Kafka source → coalesce to
    the read tasks → a Python ``mapInArrow`` that only passes the timestamps on → event-time
    watermark → ``applyInPandasWithState`` over the same number of buckets, keeping a small
    state and emitting its rows → ``foreachBatch`` collecting them.
``stateless``  Spark's Kafka source → ``foreachBatch`` collecting the timestamps: what the
    micro-batch engine and the connector cost alone.

Each latency figure of the processor is given with its ratio to the stateful floor.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import orjson

from casatwin.bus.topics import TopicSpec
from casatwin.config import Settings
from casatwin.logs import get_logger

log = get_logger("bench")

PROBE_TOPIC = "casatwin-bench.floor"
# The telemetry's partitions (the same read tasks); the broker's append time as timestamps.
PROBE = TopicSpec(
    PROBE_TOPIC, True, 600_000, "the latency floor's probe",
    config=(("message.timestamp.type", "LogAppendTime"),),
)  # fmt: skip
PROBE_RATE = 500  # records per second: the latency benchmarks' 500 taxis, one fix a second
WARMUP_S = 10  # the first batches pay for the JIT and the Python workers' start


def floor(
    spark: Any, settings: Settings, seconds: float, warmup_s: float = WARMUP_S
) -> dict[str, Any]:
    """Both floors in turn, ``seconds`` each after ``warmup_s``, on ``spark`` with
    ``settings`` (its ``kafka`` must be allowed to create and read :data:`PROBE_TOPIC`: the
    bench's admin)."""
    from casatwin.bus.admin import ensure_topics

    ensure_topics(settings.kafka, specs=[PROBE])
    found = {}
    for shape in ("stateful", "stateless"):
        found[shape] = _measure(spark, settings, shape, seconds, warmup_s)
        log.info("latency floor measured", shape=shape, **found[shape]["latency_ms"])
    return found


def ratio(figure_ms: float, floor_ms: float | None) -> float | None:
    """``figure_ms`` over ``floor_ms`` (None without a floor)."""
    return round(figure_ms / floor_ms, 2) if floor_ms else None


def _measure(
    spark: Any, settings: Settings, shape: str, seconds: float, warmup_s: float
) -> dict[str, Any]:
    from casatwin.processor.bench import first_batch_done, percentiles
    from casatwin.processor.session import query_conf, timer_conf
    from casatwin.processor.source import kafka_records

    latencies: list[float] = []
    since_ms = float("inf")  # nothing counts before the probe's warm-up is over

    def sink(frame: Any, _batch_id: int) -> None:
        now_ms = time.time() * 1000
        latencies.extend(
            now_ms - row[0] for row in frame.select("timestamp_ms").collect() if row[0] >= since_ms
        )

    variant = settings.replace(processor={"starting_offsets": "latest"})
    records = kafka_records(spark, variant, [PROBE_TOPIC], f"floor-{shape}")
    rows = _stateful(records, settings) if shape == "stateful" else records
    with tempfile.TemporaryDirectory(prefix=f"casatwin-floor-{shape}-") as checkpoint:
        with query_conf(spark, timer_conf(settings)):  # as the infractions query
            query = (
                rows.writeStream.foreachBatch(sink)
                .option("checkpointLocation", checkpoint)
                .trigger(processingTime=f"{settings.processor.trigger_ms} milliseconds")
                .start()
            )
        try:
            first_batch_done(query)
            since_ms = time.time() * 1000 + warmup_s * 1000
            _probe(settings, seconds + warmup_s)
            time.sleep(2)  # the last records' batch
            progress = [p for p in query.recentProgress if p["numInputRows"]]
        finally:
            query.stop()
    batches = [p["durationMs"]["triggerExecution"] for p in progress[len(progress) // 3 :]]
    return {
        "latency_ms": percentiles(latencies),
        "records": len(latencies),
        "batch_ms_median": statistics.median(batches) if batches else None,
        "what": _WHAT[shape],
    }


_WHAT = {
    "stateful": "Kafka source → mapInArrow passing timestamps → applyInPandasWithState "
    "doing nothing → foreachBatch collect",
    "stateless": "Kafka source → foreachBatch collect",
}


def _stateful(records: Any, settings: Settings) -> Any:
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention
    from pyspark.sql.streaming.state import GroupStateTimeout

    p = settings.processor
    tasks = p.read_tasks or records.sparkSession.sparkContext.defaultParallelism
    return (
        records.coalesce(tasks)
        .mapInArrow(_pass_timestamps, "key binary, timestamp_ms long")
        .withColumn("event_time", F.timestamp_millis("timestamp_ms"))
        .withWatermark("event_time", f"{int(p.watermark_delay_s * 1000)} milliseconds")
        .withColumn("bucket", F.pmod(F.xxhash64("key"), F.lit(p.state_buckets)))
        .groupBy("bucket")
        .applyInPandasWithState(
            _keep_nothing,
            outputStructType="timestamp_ms long",
            stateStructType="s binary",
            outputMode="append",
            timeoutConf=GroupStateTimeout.EventTimeTimeout,
        )
    )


def _pass_timestamps(batches: Iterator[Any]) -> Iterator[Any]:
    for batch in batches:
        yield batch.select(["key", "timestamp_ms"])


def _keep_nothing(key: Any, frames: Iterator[Any], state: Any) -> Iterator[Any]:
    """A stateful step that reads its rows, keeps a small state and emits the rows'
    timestamps (so that the sink can time them)."""
    import pandas as pd

    stamps = [frame["timestamp_ms"] for frame in frames]
    state.update((b"x" * 100,))
    if stamps:
        yield pd.DataFrame({"timestamp_ms": pd.concat(stamps, ignore_index=True)})


def _probe(settings: Settings, seconds: float) -> None:
    """:data:`PROBE_RATE` records a second for ``seconds`` (a tenth of a second's worth at
    a time), keyed like the fleet's fixes."""
    from casatwin.bus.producer import Producer

    producer = Producer(settings.kafka, "bench-floor-probe")
    step = PROBE_RATE // 10
    started, sent = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        time.sleep(max(started + sent / PROBE_RATE - time.monotonic(), 0))
        for n in range(sent, sent + step):
            producer.send(PROBE_TOPIC, orjson.dumps({"n": n}), key=b"probe-%d" % (n % PROBE_RATE))
        producer.poll(0)
        sent += step
    producer.flush(30)
