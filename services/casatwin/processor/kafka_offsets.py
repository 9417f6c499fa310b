"""Offset arithmetic of the Kafka source: pure functions, no broker, no Spark.

An *offset map* is what Spark keeps in its checkpoint for the source: ``{topic:
{partition: next offset to read}}`` with partitions as strings (Spark stores offsets as JSON
objects, whose keys are strings). A micro-batch reads ``[start, end)`` of every partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

# The partition ids of a topic as JSON keys: {"casatwin.telemetry": {"0": 42, "1": 40}}
OffsetMap = dict[str, dict[str, int]]
# (topic, partition) → (earliest offset kept, true end offset)
Bounds = Mapping[tuple[str, int], tuple[int, int]]

EARLIEST = "earliest"
LATEST = "latest"


class OffsetSpecError(ValueError):
    """A ``startingOffsets`` option that cannot be understood."""


@dataclass(frozen=True)
class OffsetRange:
    """Records ``[start, end)`` of one partition: what one Spark task reads."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.start


def parse_starting_offsets(spec: str) -> str | OffsetMap:
    """``earliest``, ``latest`` or a JSON offset map such as ``{"t": {"0": 15, "1": -2}}``.

    In a JSON map, ``-2`` means the earliest offset of that partition and ``-1`` the latest,
    as in Spark's own Kafka source.
    """
    text = spec.strip()
    if text.lower() in (EARLIEST, LATEST):
        return text.lower()
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise OffsetSpecError(
            f"startingOffsets={spec!r} is neither earliest, latest nor a JSON offset map"
        ) from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise OffsetSpecError(f'startingOffsets={spec!r} should look like {{"topic": {{"0": 42}}}}')
    out: OffsetMap = {}
    for topic, partitions in raw.items():
        out[topic] = {}
        for partition, offset in partitions.items():
            if not str(partition).isdigit() or not isinstance(offset, int) or offset < -2:
                raise OffsetSpecError(
                    f"startingOffsets: {topic}/{partition}={offset!r} is not a partition "
                    "number with an offset (or -2 for earliest, -1 for latest)"
                )
            out[topic][str(partition)] = offset
    return out


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


def initial_offsets(spec: str | OffsetMap, bounds: Bounds) -> OffsetMap:
    """Where a new query starts, for every partition the broker has now.

    Partitions a JSON spec does not mention start at the earliest offset.
    """
    positions = {}
    for (topic, partition), (low, end) in bounds.items():
        if spec == EARLIEST:
            positions[(topic, partition)] = low
        elif spec == LATEST:
            positions[(topic, partition)] = end
        else:
            wanted = get(spec, topic, partition)  # type: ignore[arg-type]
            if wanted is None or wanted == -2:
                positions[(topic, partition)] = low
            elif wanted == -1:
                positions[(topic, partition)] = end
            else:
                positions[(topic, partition)] = min(max(wanted, low), end)
    return to_map(positions)


@dataclass(frozen=True)
class Resumed:
    """Where the next micro-batch starts, and what had to be adjusted to get there."""

    start: dict[tuple[str, int], int]
    new_partitions: list[tuple[str, int]]
    lost: dict[tuple[str, int], int]  # partition → records deleted before they were read
    rewound: dict[tuple[str, int], int] = field(default_factory=dict)  # → previous end


def resume(previous_end: OffsetMap, bounds: Bounds) -> Resumed:
    """The start of the next batch: the previous end, plus partitions created since (read
    from their earliest offset), moved past records the broker no longer keeps.

    ``bounds`` must be exact (true ends, not the embedded broker's lagging watermarks): a
    partition whose true end is before the previous end has been emptied (a memory-only
    broker restarted, or the topic was re-created) and is read again from its start,
    instead of waiting for the new log to pass the old offsets and skipping everything
    before them."""
    start: dict[tuple[str, int], int] = {}
    new, lost, rewound = [], {}, {}
    for key, (low, end) in sorted(bounds.items()):
        previous = get(previous_end, *key)
        if previous is None:
            new.append(key)
            start[key] = low
        elif previous > end:
            rewound[key] = previous
            start[key] = low
        elif previous < low:
            lost[key] = low - previous
            start[key] = low
        else:
            start[key] = previous
    # A partition the broker no longer reports (a deleted topic) keeps its position.
    for key, offset in from_map(previous_end).items():
        start.setdefault(key, offset)
    return Resumed(start, new, lost, rewound)


def limit_offsets(
    start: Mapping[tuple[str, int], int],
    available: Mapping[tuple[str, int], int],
    max_records: int | None,
) -> dict[tuple[str, int], int]:
    """End offsets that admit at most ``max_records`` records in all, shared in proportion
    to each partition's backlog (largest remainders first, ties by partition), so that no
    partition starves. ``None`` admits everything available."""
    end = {key: max(available.get(key, offset), offset) for key, offset in start.items()}
    backlog = {key: end[key] - start[key] for key in start}
    total = sum(backlog.values())
    if max_records is None or total <= max_records:
        return end
    shares = {key: max_records * b / total for key, b in backlog.items()}
    take = {key: int(share) for key, share in shares.items()}
    spare = max_records - sum(take.values())
    by_remainder = sorted(shares, key=lambda k: (-(shares[k] - take[k]), k))
    for key in by_remainder[:spare]:
        take[key] += 1
    return {key: start[key] + take[key] for key in start}


def plan_ranges(
    start: OffsetMap, end: OffsetMap, max_per_range: int | None = None
) -> list[OffsetRange]:
    """The non-empty ranges of a batch, split so that none holds more than
    ``max_per_range`` records. A partition missing from ``start`` is new: it starts at 0
    (the reader moves to the earliest record the broker kept)."""
    ranges = []
    for (topic, partition), stop in sorted(from_map(end).items()):
        begin = get(start, topic, partition) or 0
        if begin > stop:  # the log went back (see resume): read it again from its start
            begin = 0
        step = max_per_range or max(stop - begin, 1)
        for lo in range(begin, stop, step):
            ranges.append(OffsetRange(topic, partition, lo, min(lo + step, stop)))
    return ranges


def plan_tasks(
    start: OffsetMap, end: OffsetMap, records_per_task: int, max_tasks: int
) -> list[list[OffsetRange]]:
    """The ranges of a batch grouped into Spark tasks.

    A small batch is one task (one consumer fetching every partition at once: the least
    scheduling for the lowest latency); a large one is split into tasks of about
    ``records_per_task`` records, at most ``max_tasks`` of them, for parallelism.
    """
    ranges = plan_ranges(start, end, records_per_task)
    if not ranges:
        return []
    total = sum(r.count for r in ranges)
    n_tasks = max(1, min(max_tasks, len(ranges), -(-total // records_per_task)))
    tasks: list[list[OffsetRange]] = [[] for _ in range(n_tasks)]
    loads = [0] * n_tasks
    for r in sorted(ranges, key=lambda r: (-r.count, r.topic, r.partition, r.start)):
        lightest = loads.index(min(loads))
        tasks[lightest].append(r)
        loads[lightest] += r.count
    return [merge_contiguous(t) for t in tasks]


def merge_contiguous(ranges: list[OffsetRange]) -> list[OffsetRange]:
    """Sorted ranges, with a range that ends where the next one of its partition starts
    merged into it."""
    out: list[OffsetRange] = []
    for r in sorted(ranges, key=lambda r: (r.topic, r.partition, r.start)):
        last = out[-1] if out else None
        if last and (last.topic, last.partition, last.end) == (r.topic, r.partition, r.start):
            out[-1] = OffsetRange(r.topic, r.partition, last.start, r.end)
        else:
            out.append(r)
    return out


def rounds(ranges: list[OffsetRange]) -> list[list[OffsetRange]]:
    """Ranges in rounds with at most one range per partition each: a consumer reads one
    position per partition at a time."""
    out: list[list[OffsetRange]] = []
    for r in ranges:
        for round_ in out:
            if all((x.topic, x.partition) != (r.topic, r.partition) for x in round_):
                round_.append(r)
                break
        else:
            out.append([r])
    return out


def from_progress(value: object) -> OffsetMap | None:
    """A source's offsets as a query's progress gives them: a map, its JSON text, or
    nothing (the first batch)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def backlog(end: OffsetMap, latest: OffsetMap) -> int:
    """Records on the broker beyond ``end`` (the consumer lag of the query)."""
    return sum(
        max(0, offset - (get(end, topic, int(p)) or 0))
        for topic, parts in latest.items()
        for p, offset in parts.items()
    )


def topics_of(spec: str) -> list[str]:
    """``"a, b"`` → ``["a", "b"]``."""
    return [t.strip() for t in spec.split(",") if t.strip()]
