"""Offset maps, and the records between two of them read back from the broker.

An *offset map* is ``{topic: {partition: offset}}`` with partitions as strings: the JSON shape
in which Spark's Kafka connector keeps its offsets and reports them in a query's progress
(``{"casatwin.telemetry": {"0": 42, "1": 40}}``). The records of partition *p* between two
maps are ``[start, end)``. :func:`read_values` reads them with a group-less consumer (the
processor's publication journal, the benchmarks and the tests read topics back so).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import confluent_kafka

from casatwin.bus.producer import client_config
from casatwin.config import KafkaSettings

OffsetMap = dict[str, dict[str, int]]


@dataclass(frozen=True)
class OffsetRange:
    """Records ``[start, end)`` of one partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.start


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def get(offsets: OffsetMap, topic: str, partition: int) -> int | None:
    return offsets.get(topic, {}).get(str(partition))


def to_map(positions: Mapping[tuple[str, int], int]) -> OffsetMap:
    """``{(topic, partition): offset}`` → an offset map with sorted, stable keys."""
    out: OffsetMap = {}
    for (topic, partition), offset in sorted(positions.items()):
        out.setdefault(topic, {})[str(partition)] = offset
    return out


def from_map(offsets: OffsetMap) -> dict[tuple[str, int], int]:
    return {(t, int(p)): o for t, parts in offsets.items() for p, o in parts.items()}


def plan_ranges(start: OffsetMap, end: OffsetMap) -> list[OffsetRange]:
    """The non-empty ranges from ``start`` to ``end``, one per partition. A partition
    missing from ``start`` is new: it starts at 0 (the reader moves to the earliest record
    the broker kept)."""
    ranges = []
    for (topic, partition), stop in sorted(from_map(end).items()):
        begin = get(start, topic, partition) or 0
        if begin < stop:
            ranges.append(OffsetRange(topic, partition, begin, stop))
    return ranges


def count(start: OffsetMap, end: OffsetMap) -> int:
    """Offsets from ``start`` to ``end`` in all partitions (records, but for any the broker
    deleted)."""
    return sum(r.count for r in plan_ranges(start, end))


def backlog(end: OffsetMap, latest: OffsetMap) -> int:
    """Records on the broker beyond ``end`` (a consumer's lag when ``end`` is its position)."""
    return sum(
        max(0, offset - (get(end, topic, int(p)) or 0))
        for topic, parts in latest.items()
        for p, offset in parts.items()
    )


# One consumer per process and client id: a connected consumer saves the connection set-up
# of every read.
_CONSUMERS: dict[tuple[str, str, str], confluent_kafka.Consumer] = {}


def cached_consumer(settings: KafkaSettings, client_id: str) -> confluent_kafka.Consumer:
    """A group-less consumer for :func:`read_ranges`, kept for the life of the process."""
    key = (settings.bootstrap, settings.principal(), client_id)
    if key not in _CONSUMERS:
        _CONSUMERS[key] = confluent_kafka.Consumer(
            client_config(settings, client_id)
            | {
                "group.id": f"{client_id}-unused",  # librdkafka insists; no group is joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                # Records deleted by retention: start from the earliest one kept.
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.fetch_wait_max_ms,
                "queued.max.messages.kbytes": 16384,
            }
        )
    return _CONSUMERS[key]


def read_ranges(
    consumer: confluent_kafka.Consumer, ranges: list[OffsetRange], timeout_s: float
) -> list[Record]:
    """The records of ``ranges`` (at most one per partition), partition by partition in
    (topic, partition) order, each in offset order — the same records in the same order
    every time, however the broker interleaves its answers.

    Raises :class:`TimeoutError` if the broker does not deliver them within ``timeout_s``;
    offsets the log does not hold (deleted by retention) are skipped.
    """
    wanted = {(r.topic, r.partition): r for r in ranges}
    if len(wanted) < len(ranges):
        raise ValueError("read_ranges takes at most one range per partition")
    next_offset = {key: r.start for key, r in wanted.items()}
    pending = {key for key, r in wanted.items() if r.count > 0}
    rows: dict[tuple[str, int], list[Record]] = {key: [] for key in wanted}
    consumer.assign([confluent_kafka.TopicPartition(t, p, r.start) for (t, p), r in wanted.items()])
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            # consume() waits for as many messages as asked (or the timeout): ask for what
            # is still missing, so that a small read returns as soon as it is complete.
            missing = sum(wanted[key].end - next_offset[key] for key in pending)
            messages = consumer.consume(max(1, min(missing, 10_000)), 0.05)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise confluent_kafka.KafkaException(error)
                    continue
                key = (message.topic(), message.partition())
                offset = message.offset()
                if key not in pending or offset < next_offset[key]:
                    continue
                if offset < wanted[key].end:
                    rows[key].append(Record(*key, offset, message.key(), message.value()))
                    next_offset[key] = offset + 1
                if offset + 1 >= wanted[key].end:
                    pending.discard(key)
            if not messages and pending:
                _skip_missing_offsets(consumer, wanted, next_offset, pending)
                if pending and time.monotonic() > deadline:
                    late = ", ".join(f"{t}/{p}@{next_offset[(t, p)]}" for t, p in sorted(pending))
                    raise TimeoutError(f"records not delivered within {timeout_s:.0f} s: {late}")
    finally:
        consumer.unassign()
    return [record for key in sorted(rows) for record in rows[key]]


def read_values(
    settings: KafkaSettings, client_id: str, start: OffsetMap, end: OffsetMap, timeout_s: float
) -> list[bytes | None]:
    """The values of the records from ``start`` to ``end`` (see :func:`read_ranges`)."""
    ranges = plan_ranges(start, end)
    if not ranges:
        return []
    return [r.value for r in read_ranges(cached_consumer(settings, client_id), ranges, timeout_s)]


def _skip_missing_offsets(
    consumer: confluent_kafka.Consumer,
    wanted: dict[tuple[str, int], OffsetRange],
    next_offset: dict[tuple[str, int], int],
    pending: set[tuple[str, int]],
) -> None:
    """Offsets with no record (deleted, or control records): the position moves past them."""
    positions = consumer.position([confluent_kafka.TopicPartition(t, p) for t, p in pending])
    for tp in positions:
        key = (tp.topic, tp.partition)
        if tp.offset > next_offset[key]:
            next_offset[key] = min(tp.offset, wanted[key].end)
            if next_offset[key] >= wanted[key].end:
                pending.discard(key)
