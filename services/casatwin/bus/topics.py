"""Topic names and how each topic is created."""

from __future__ import annotations

from dataclasses import dataclass

TELEMETRY = "casatwin.telemetry"
SENSORS_INTERSECTION = "casatwin.sensors.intersection"
SENSORS_HIGHWAY = "casatwin.sensors.highway"
INFRACTIONS = "casatwin.infractions"
DISPATCH = "casatwin.dispatch"
CONGESTION = "casatwin.congestion"
DLQ = "casatwin.dlq"
TIMERS = "casatwin.processor.timers"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    high_rate: bool  # high-rate topics get `kafka.partitions` partitions, the others fewer
    retention_ms: int
    purpose: str
    config: tuple[tuple[str, str], ...] = ()  # more of the topic's settings (frozen: hashable)


HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(TELEMETRY, True, 6 * HOUR_MS, "vehicle positions and speeds, 1 Hz per vehicle"),
    TopicSpec(SENSORS_INTERSECTION, True, DAY_MS, "intersection counts, queues and phases"),
    TopicSpec(SENSORS_HIGHWAY, False, DAY_MS, "urban motorway detector stations"),
    TopicSpec(INFRACTIONS, False, 7 * DAY_MS, "detected infractions with their decision"),
    TopicSpec(DISPATCH, False, 7 * DAY_MS, "police unit assignments and their progress"),
    TopicSpec(CONGESTION, False, DAY_MS, "rolling-window congestion per segment/intersection"),
    TopicSpec(DLQ, False, 7 * DAY_MS, "messages that could not be processed, with the reason"),
    TopicSpec(
        TIMERS,
        False,
        HOUR_MS,
        "the processor's requests for a batch when timers are due and the telemetry is silent",
    ),
)

LOW_RATE_PARTITIONS = 3


def spec(name: str) -> TopicSpec:
    for topic in TOPICS:
        if topic.name == name:
            return topic
    raise KeyError(name)


def partitions_for(topic: TopicSpec, high_rate_partitions: int) -> int:
    return high_rate_partitions if topic.high_rate else LOW_RATE_PARTITIONS
