"""``congestion``: the processor's second query — sliding windows per segment and intersection.

    casatwin.telemetry (fixes, map-matched,   ─┐  union  ─▶ window(5 min, every 1 min)
      folded into panes as they are decoded)   │           per (scope, key), watermark 10 min
    casatwin.sensors.intersection (readings)  ─┘
        ─▶ foreachBatch (driver): level, anomaly ─▶ casatwin.congestion, read model

The decoding stage folds a vehicle's fixes on a segment within one pane (a minute: no window
boundary falls inside it) into one row of count, speed sum, minimum and maximum
(:func:`~casatwin.processor.telemetry.panes`): the windows come out as from the fixes
themselves, from about a tenth of the rows. Fixes off the road network have no segment and
no window.

A segment's window has its distinct vehicles, average/min/max speed and the ratio of the
average to the free-flow speed (the limit); an intersection's has its vehicles (sum of the
readings), average and peak queue, average and peak wait. Output mode ``update``: a window
is emitted when data arrives for it, again when late data (inside the watermark) changes
it; a reading (or pane) whose windows have all closed is dropped by Spark and counted
(``numRowsDroppedByWatermark``: one per window it would have entered) in the progress line
and ``casatwin_congestion_late_rows_total``. The two inputs have a watermark each; the query
follows the more advanced one (``multipleWatermarkPolicy=max``). Re-emitted windows
overwrite: the read model is keyed by ``scope:key:window_start`` and consumers keep the
latest message per window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from casatwin.bus import topics
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.processor import levels
from casatwin.processor.stages import SinkTimes

log = get_logger("processor")

WINDOWS = Counter("casatwin_congestion_windows_total", "Congestion windows published", ["scope"])
LATE_ROWS = Counter(
    "casatwin_congestion_late_rows_total",
    "Window rows dropped because their reading came after the watermark",
)
PRUNE_EVERY_S = 600.0


def intersection_schema() -> Any:
    from pyspark.sql.types import (
        DoubleType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    return StructType(
        [
            StructField("intersection_id", StringType()),
            StructField("ts", LongType()),
            StructField("vehicles", IntegerType()),
            StructField("queue_len", IntegerType()),
            StructField("max_wait_s", DoubleType()),
        ]
    )


def window_rows(spark: Any, settings: Settings) -> Any:
    """The windowed aggregates, one row per (scope, key, window) updated in a batch."""
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    from casatwin.processor import pipeline
    from casatwin.processor.source import kafka_records

    c = settings.congestion
    watermark = f"{c.watermark_s} seconds"
    none = F.lit(None)
    pane_ms = math.gcd(c.window_s, c.slide_s) * 1000  # no window boundary inside a pane
    fixes = pipeline.segment_panes(spark, settings, "congestion", pane_ms, c.watermark_s).select(
        F.lit("segment").alias("scope"),
        F.col("segment").cast("string").alias("key"),
        "event_time",
        "vehicle_id",
        "fixes",
        "speed_sum",
        "speed_min",
        "speed_max",
        none.cast("int").alias("vehicles"),
        none.cast("int").alias("queue"),
        none.cast("double").alias("wait_s"),
    )
    readings = (
        kafka_records(spark, settings, [topics.SENSORS_INTERSECTION], "congestion-sensors")
        .select(F.from_json(F.col("value").cast("string"), intersection_schema()).alias("r"))
        .where(F.col("r.intersection_id").isNotNull() & F.col("r.ts").isNotNull())
        .select(
            F.lit("intersection").alias("scope"),
            F.col("r.intersection_id").alias("key"),
            F.timestamp_millis("r.ts").alias("event_time"),
            none.cast("string").alias("vehicle_id"),
            none.cast("int").alias("fixes"),
            none.cast("double").alias("speed_sum"),
            none.cast("double").alias("speed_min"),
            none.cast("double").alias("speed_max"),
            F.col("r.vehicles").alias("vehicles"),
            F.col("r.queue_len").alias("queue"),
            F.col("r.max_wait_s").alias("wait_s"),
        )
        .withWatermark("event_time", watermark)
    )
    window = F.window("event_time", f"{c.window_s} seconds", f"{c.slide_s} seconds")
    return (
        fixes.unionByName(readings)
        .groupBy("scope", "key", window)
        .agg(
            F.size(F.collect_set("vehicle_id")).alias("distinct_vehicles"),
            F.sum("vehicles").alias("sensed_vehicles"),
            (F.sum("speed_sum") / F.sum("fixes")).alias("avg_speed_kmh"),
            F.min("speed_min").alias("min_speed_kmh"),
            F.max("speed_max").alias("max_speed_kmh"),
            F.avg("queue").alias("avg_queue"),
            F.max("queue").alias("peak_queue"),
            F.avg("wait_s").alias("avg_wait_s"),
            F.max("wait_s").alias("peak_wait_s"),
        )
        .withColumn("window_start", F.unix_millis(F.col("window.start")))
        .withColumn("window_end", F.unix_millis(F.col("window.end")))
        .drop("window")
    )


def window_message(row: dict[str, Any], settings: Settings, network: Any) -> dict[str, Any]:
    """One aggregated row → a ``CongestionWindow`` (level set, anomaly not yet)."""
    c = settings.congestion
    common = {
        "scope": row["scope"],
        "window_start": int(row["window_start"]),
        "window_end": int(row["window_end"]),
        "anomaly": False,
        "hour": levels.hour_of(int(row["window_end"])),
    }
    if row["scope"] == "segment":
        index = int(row["key"])
        free_flow = float(network.limit_kmh[index])
        ratio = float(row["avg_speed_kmh"]) / free_flow if free_flow > 0 else 1.0
        return common | {
            "key": str(network.segment_ids[index]),
            "count": int(row["distinct_vehicles"]),
            "avg_speed_kmh": round(float(row["avg_speed_kmh"]), 2),
            "min_speed_kmh": round(float(row["min_speed_kmh"]), 2),
            "max_speed_kmh": round(float(row["max_speed_kmh"]), 2),
            "free_flow_kmh": free_flow,
            "speed_ratio": round(ratio, 3),
            "level": levels.segment_level(ratio, c),
        }
    avg_queue, peak_wait = float(row["avg_queue"] or 0), float(row["peak_wait_s"] or 0)
    return common | {
        "key": row["key"],
        "count": int(row["sensed_vehicles"] or 0),
        "avg_speed_kmh": 0.0,
        "min_speed_kmh": 0.0,
        "max_speed_kmh": 0.0,
        "avg_queue": round(avg_queue, 2),
        "peak_queue": int(row["peak_queue"] or 0),
        "avg_wait_s": round(float(row["avg_wait_s"] or 0), 2),
        "peak_wait_s": peak_wait,
        "level": levels.intersection_level(avg_queue, peak_wait, c),
    }


class CongestionSink:
    """``foreachBatch``: level and anomaly, then ``casatwin.congestion`` and the read model."""

    def __init__(self, settings: Settings) -> None:
        from casatwin.readmodel.store import CONGESTION, Retention

        self.settings = settings
        self._db: Any = None
        self._producer: Any = None
        self._network: Any = None
        self._retention = Retention(
            CONGESTION, "window_end", settings.congestion.retention_days, PRUNE_EVERY_S
        )
        self.published = 0
        self.times = SinkTimes()  # the driver's work per batch, for the limiting stage

    def start(self) -> None:
        from casatwin.bus.producer import Producer
        from casatwin.processor.network import for_city
        from casatwin.readmodel.store import CONGESTION, connect, ensure_indexes

        self._network = for_city(self.settings.city)
        self._db = connect(self.settings.mongo)
        ensure_indexes(self._db, [CONGESTION])
        client = f"{self.settings.processor.client_id}-congestion"
        self._producer = Producer(self.settings.kafka, client)

    def stop(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._db is not None:
            self._db.client.close()
            self._db = None

    def __call__(self, frame: Any, batch_id: int) -> None:
        from casatwin.processor.sink import collect_rows

        rows = collect_rows(frame)  # runs the batch's tasks
        with self.times.timing(batch_id):
            if rows:
                self.write([window_message(r, self.settings, self._network) for r in rows])

    def write(self, windows: list[dict[str, Any]]) -> None:
        """Flag anomalies, publish (all acknowledged, or the batch fails and is re-run), index."""
        from casatwin.readmodel.store import upsert_congestion

        self._flag_anomalies(windows)
        lost_before = self._producer.lost()
        for w in windows:
            self._producer.send_json(topics.CONGESTION, w, key=f"{w['scope']}:{w['key']}")
        self._producer.confirm(lost_before, 30.0, "casatwin.congestion, this batch's windows")
        upsert_congestion(self._db, windows)
        for w in windows:
            WINDOWS.labels(w["scope"]).inc()
        self.published += len(windows)
        self._prune(max(w["window_end"] for w in windows))

    def _flag_anomalies(self, windows: list[dict[str, Any]]) -> None:
        """The baseline: the segment's windows of the same hour on earlier days (read model)."""
        from casatwin.readmodel.store import CONGESTION

        c = self.settings.congestion
        segments = [w for w in windows if w["scope"] == "segment"]
        if not segments:
            return
        newest = max(w["window_start"] for w in segments)
        cursor = self._db[CONGESTION].find(
            {
                "scope": "segment",
                "key": {"$in": sorted({w["key"] for w in segments})},
                "hour": {"$in": sorted({w["hour"] for w in segments})},
                "window_start": {
                    "$gte": newest - c.baseline_days * levels.DAY_MS,
                    "$lt": newest - 2 * levels.HOUR_MS,  # earlier days only, not today's hour
                },
            },
            {"key": 1, "hour": 1, "avg_speed_kmh": 1, "_id": 0},
        )
        past: dict[tuple[str, int], list[float]] = {}
        for doc in cursor:
            past.setdefault((doc["key"], doc["hour"]), []).append(doc["avg_speed_kmh"])
        for w in segments:
            w["anomaly"] = levels.is_anomaly(
                w["avg_speed_kmh"], past.get((w["key"], w["hour"]), []), c
            )

    def _prune(self, newest_end_ms: int) -> None:
        removed = self._retention.apply(self._db, newest_end_ms)
        if removed:
            log.info("old congestion windows removed", windows=removed,
                     retention_days=self._retention.days)  # fmt: skip


class CongestionQuery:
    """The congestion windows: a query of the processor application with its own trigger."""

    name = "congestion"
    # Spark's empty batches close the windows: at most one per trigger (15 s), and only
    # when no telemetry came in it, so no fix waits behind one.
    timers_asked = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sink: CongestionSink | None = None
        self.query: Any = None
        self._counted_batch = -1

    def start(self, spark: Any, checkpoint: Path) -> Any:
        from casatwin.processor.session import query_conf

        self.sink = CongestionSink(self.settings)
        self.sink.start()
        # Two inputs, two watermarks: follow the more advanced one, so that a sensor feed
        # that stops (or lags) does not hold every window open. Only this query has two;
        # it keeps the policy it starts with (Spark records it in the checkpoint).
        with query_conf(spark, {"spark.sql.streaming.multipleWatermarkPolicy": "max"}):
            self.query = (
                window_rows(spark, self.settings)
                .writeStream.queryName(self.name)
                .outputMode("update")
                .foreachBatch(self.sink)
                .option("checkpointLocation", str(checkpoint / "spark"))
                .trigger(processingTime=f"{self.settings.congestion.trigger_ms} milliseconds")
                .start()
            )
        return self.query

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.stop()
            self.sink = None
        self.query = None

    def late_rows(self) -> int:
        """Window rows dropped by the watermark in batches not counted yet (adds to the metric)."""
        if self.query is None:
            return 0
        new = [p for p in self.query.recentProgress if p["batchId"] > self._counted_batch]
        if not new:
            return 0
        self._counted_batch = new[-1]["batchId"]
        late = sum(
            op.get("numRowsDroppedByWatermark", 0)
            for p in new
            for op in p.get("stateOperators", [])
        )
        LATE_ROWS.inc(late)
        return late

    def sink_ms(self, batch_id: int) -> float:
        return self.sink.times.get(batch_id) if self.sink else 0.0

    def progress_fields(self, progress: list[dict[str, Any]]) -> dict[str, Any]:
        self.late_rows()
        return {
            "windows": self.sink.published if self.sink else 0,
            "late_rows_total": int(LATE_ROWS._value.get()),
        }
