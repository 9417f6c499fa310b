"""The offsets of Spark's Kafka connector as the processor handles them: where a new query
starts (``startingOffsets``) and what a query's progress says it read. Pure: no broker, no
Spark.

Offsets are offset maps (:mod:`casatwin.bus.ranges`): ``{topic: {partition: offset}}``, the
JSON the connector keeps in the checkpoint and reports in ``startOffset``, ``endOffset`` and
``latestOffset`` of each source of a batch's progress.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from casatwin.bus.ranges import OffsetMap

EARLIEST = "earliest"
LATEST = "latest"
# In the connector's JSON offsets: the earliest offset kept, the end of the log.
EARLIEST_OFFSET = -2
LATEST_OFFSET = -1


class OffsetSpecError(ValueError):
    """A ``startingOffsets`` setting that cannot be understood."""


def parse_starting_offsets(spec: str) -> str | OffsetMap:
    """``earliest``, ``latest`` or a JSON offset map such as ``{"t": {"0": 15, "1": -2}}``
    (``-2``: the partition's earliest offset, ``-1``: its latest, as the connector has it)."""
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


def starting_offsets(
    spec: str, topics: list[str], partitions: Callable[[list[str]], list[tuple[str, int]]]
) -> str:
    """The connector's ``startingOffsets`` for a source reading ``topics``, from the
    processor's setting (``earliest``, ``latest`` or an offset map over any topics).

    The connector wants a map to name every partition of the topics it reads, and only
    those: the map is cut down to ``topics`` and completed with the earliest offset of each
    partition it does not name, of a topic it names or not (``partitions(topics)`` lists
    them, from the broker). A map that names none of ``topics`` starts them at the earliest
    offset.
    """
    parsed = parse_starting_offsets(spec)
    if isinstance(parsed, str):
        return parsed
    if not any(t in parsed for t in topics):
        return EARLIEST
    out: OffsetMap = {}
    for topic, partition in partitions(topics):
        offset = parsed.get(topic, {}).get(str(partition), EARLIEST_OFFSET)
        out.setdefault(topic, {})[str(partition)] = offset
    return orjson.dumps(out).decode() if out else EARLIEST


def from_progress(value: object) -> OffsetMap | None:
    """A source's offsets as a query's progress gives them: a map, its JSON text, or
    nothing (the first batch has no start)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None
