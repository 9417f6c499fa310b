"""The stateless stage: Kafka records → validated, map-matched fixes (+ dead letters). Pure.

:func:`parse` decodes and validates each record against the telemetry contract
(``bus.messages.check``, the same rules every consumer applies) and the city's bounds;
whatever fails becomes a dead letter with the reason. :func:`locate` map-matches the good
fixes and finds the no-parking zone each lies in, vectorised over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from casatwin.bus import topics
from casatwin.bus.messages import InvalidMessage, check
from casatwin.processor.network import RoadNetwork

STAGE = "processor.parse"


@dataclass(frozen=True)
class Rejected:
    """A record that breaks the contract, with the reason (it goes to the DLQ)."""

    raw: bytes | None
    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None


FIX_FIELDS: list[tuple[str, pa.DataType]] = [
    ("vehicle_id", pa.string()),
    ("kind", pa.string()),
    ("ts", pa.int64()),
    ("lat", pa.float64()),
    ("lon", pa.float64()),
    ("x", pa.float64()),
    ("y", pa.float64()),
    ("speed_kmh", pa.float64()),
    ("heading_deg", pa.float64()),
    ("segment", pa.int32()),
    ("along_m", pa.float64()),
    ("zone", pa.int32()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
]
FIX_SCHEMA = pa.schema([pa.field(name, typ) for name, typ in FIX_FIELDS])


_NUMBERS = ("ts", "lat", "lon", "speed_kmh", "heading_deg")


@dataclass
class Parsed:
    """The good fixes as columns, and the records that were set aside."""

    columns: dict[str, list[Any]]
    rejected: list[Rejected]

    def __len__(self) -> int:
        return len(self.columns["ts"])


def parse(
    batch: pa.RecordBatch,
    bounds: tuple[float, float, float, float],
    contract: str = topics.TELEMETRY,
) -> Parsed:
    """Decode and validate the records of one Arrow batch from the Kafka source against
    the ``contract`` of a topic."""
    south, west, north, east = bounds
    columns: dict[str, list[Any]] = {
        name: [] for name in ("vehicle_id", "kind", *_NUMBERS, "partition", "offset")
    }
    rejected: list[Rejected] = []
    values = batch.column("value").to_pylist()
    keys = batch.column("key").to_pylist()
    partitions = batch.column("partition").to_pylist()
    offsets = batch.column("offset").to_pylist()
    record_topics = batch.column("topic").to_pylist()
    for raw, key, topic, partition, offset in zip(values, keys, record_topics, partitions, offsets):
        try:
            message = orjson.loads(raw) if raw is not None else None
            if message is None:
                raise InvalidMessage("empty message (no value)")
            check(contract, message)
            lat, lon = message["lat"], message["lon"]
            if not (south <= lat <= north and west <= lon <= east):
                raise InvalidMessage(
                    f"position ({lat}, {lon}) is outside the city "
                    f"(south {south}, west {west}, north {north}, east {east})"
                )
        except (orjson.JSONDecodeError, InvalidMessage) as exc:
            reason = (
                f"not valid JSON: {exc}" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            )
            rejected.append(
                Rejected(
                    raw,
                    reason,
                    topic,
                    partition,
                    offset,
                    key.decode("utf-8", "replace") if key is not None else None,
                )
            )
            continue
        columns["vehicle_id"].append(message["vehicle_id"])
        columns["kind"].append(message["kind"])
        for name in _NUMBERS:
            columns[name].append(message[name])
        columns["partition"].append(partition)
        columns["offset"].append(offset)
    return Parsed(columns, rejected)


def locate(parsed: Parsed, network: RoadNetwork) -> pa.RecordBatch:
    """The good fixes with their segment, position along it, projection and zone."""
    c = parsed.columns
    lat = np.asarray(c["lat"], dtype=float)
    lon = np.asarray(c["lon"], dtype=float)
    speed = np.asarray(c["speed_kmh"], dtype=float)
    heading = np.asarray(c["heading_deg"], dtype=float)
    match = network.matcher.match(lat, lon, heading, speed)
    x, y = network.pack.projection.to_xy(lat, lon)
    zone = network.zone_of(x, y)
    arrays = {
        "vehicle_id": pa.array(c["vehicle_id"], pa.string()),
        "kind": pa.array(c["kind"], pa.string()),
        "ts": pa.array(c["ts"], pa.int64()),
        "lat": pa.array(lat),
        "lon": pa.array(lon),
        "x": pa.array(np.atleast_1d(x)),
        "y": pa.array(np.atleast_1d(y)),
        "speed_kmh": pa.array(speed),
        "heading_deg": pa.array(heading),
        "segment": pa.array(match.segment.astype(np.int32)),
        "along_m": pa.array(match.along_m),
        "zone": pa.array(zone.astype(np.int32)),
        "partition": pa.array(c["partition"], pa.int32()),
        "offset": pa.array(c["offset"], pa.int64()),
    }
    return pa.RecordBatch.from_arrays([arrays[name] for name, _ in FIX_FIELDS], schema=FIX_SCHEMA)
