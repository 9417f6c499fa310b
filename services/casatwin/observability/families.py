"""Metric families shared by several services (one declaration, many call sites).

A service's own families stay next to the code that updates them (``gateway/service.py``,
``dashboard/fanout.py``...); :mod:`casatwin.observability.catalog` lists, per service, every
module that declares what it exports.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Latency between two points of the pipeline, as seen from the second: an infraction's
# ``event_ts`` (when the taxi did it) to when it was published, to when the dashboard read
# it... Buckets around the design's target (p95 <= 200 ms, p99 <= 300 ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30)

HOP_SECONDS = Histogram(
    "casatwin_hop_seconds",
    "Latency from a message's event_ts to a point of the pipeline (hop: event_to_published, "
    "event_to_dashboard, event_to_dispatch)",
    ["hop"],
    buckets=LATENCY_BUCKETS,
)

# Every DELIVERY_SAMPLE-th acknowledged message: quantiles stay true at a sixteenth of the cost
# (the callback runs for every message, up to ~250k/s).
DELIVERY_SAMPLE = 16
DELIVERY_SECONDS = Histogram(
    "casatwin_bus_delivery_seconds",
    f"From produce() to the broker's acknowledgement (librdkafka's latency), one delivery in "
    f"{DELIVERY_SAMPLE}",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)

CONSUMED = Counter(
    "casatwin_bus_consumed_total", "Messages read from the bus by this process", ["topic"]
)
CONSUMER_ERRORS = Counter(
    "casatwin_bus_consumer_errors_total",
    "Transport errors the Kafka client reported while reading (non-fatal)",
    ["reason"],
)

REGISTRY_LOOKUP_SECONDS = Histogram(
    "casatwin_registry_lookup_seconds",
    "Duration of one registry lookup call (a batch of vehicle ids or plates)",
    ["key"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
REGISTRY_LOOKUP_KEYS = Counter(
    "casatwin_registry_lookup_keys_total", "Keys looked up in the registry", ["key"]
)

SPARK_BATCH_SECONDS = Histogram(
    "casatwin_processor_batch_seconds",
    "Duration of a Spark micro-batch (StreamingQueryProgress.batchDuration)",
    ["query"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
)
SPARK_BATCH_ROWS = Counter(
    "casatwin_processor_batch_rows_total", "Rows read by Spark micro-batches", ["query"]
)
SPARK_PROCESSED_RATE = Gauge(
    "casatwin_processor_processed_rows_per_second",
    "Rows per second the last micro-batch processed",
    ["query"],
)

WS_QUEUED = Gauge(
    "casatwin_dashboard_queued_messages", "Messages waiting in WebSocket clients' queues (all)"
)
WS_QUEUE_MAX = Gauge(
    "casatwin_dashboard_queue_depth_max", "Longest WebSocket client queue (messages)"
)


def observe_event_latency(
    hop: str, messages: Iterable[Mapping[str, Any]], now_ms: int | None = None
) -> None:
    """Observe ``now - event_ts`` for every message that carries an ``event_ts`` (ms)."""
    now = time.time() * 1000 if now_ms is None else now_ms
    histogram = HOP_SECONDS.labels(hop)
    for message in messages:
        event_ts = message.get("event_ts")
        if isinstance(event_ts, int | float):
            histogram.observe(max(0.0, (now - event_ts) / 1000))


def count_consumed(topics: Iterable[str]) -> None:
    """Count messages read, by topic (one label lookup per topic, not per message)."""
    counts: dict[str, int] = {}
    for topic in topics:
        counts[topic] = counts.get(topic, 0) + 1
    for topic, count in counts.items():
        CONSUMED.labels(topic).inc(count)
