"""The stateless stage: Kafka records → validated, map-matched fixes (+ dead letters). Pure.

:func:`parse` decodes and validates each record against the telemetry contract
(``bus.messages.check``, the same rules every consumer applies) and the city's bounds;
whatever fails becomes a dead letter with the reason. :func:`locate` map-matches the good
fixes and finds the no-parking zone each lies in, vectorised over the whole batch;
:func:`panes` folds them into per-segment, per-vehicle partial aggregates for the congestion
windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from casatwin.bus import topics
from casatwin.bus.messages import decode_many
from casatwin.processor.network import RoadNetwork

STAGE = "processor.parse"
POLICE = "police"  # the telemetry contract's kind of a police unit


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
    the ``contract`` of a topic (in bulk: :func:`~casatwin.bus.messages.decode_many`) and
    the city's bounds."""
    decoded = decode_many(contract, batch.column("value").to_pylist())
    reasons = decoded.reasons
    where = decoded.positions  # row of each good message in the batch
    columns = {name: decoded.columns.get(name, []) for name in ("vehicle_id", "kind", *_NUMBERS)}
    outside = _outside(columns["lat"], columns["lon"], bounds)
    if outside:
        for k in outside:
            lat, lon = columns["lat"][k], columns["lon"][k]
            south, west, north, east = bounds
            reasons[where[k]] = (
                f"position ({lat}, {lon}) is outside the city "
                f"(south {south}, west {west}, north {north}, east {east})"
            )
        keep = sorted(set(range(len(where))) - set(outside))
        columns = {name: [col[k] for k in keep] for name, col in columns.items()}
        where = [where[k] for k in keep]
    partitions = batch.column("partition").to_pylist()
    offsets = batch.column("offset").to_pylist()
    if len(where) == batch.num_rows:  # the common case: every record is good
        columns["partition"], columns["offset"] = partitions, offsets
    else:
        columns["partition"] = [partitions[r] for r in where]
        columns["offset"] = [offsets[r] for r in where]
    rejected = []
    if reasons:
        keys, record_topics = batch.column("key").to_pylist(), batch.column("topic").to_pylist()
        values = batch.column("value").to_pylist()
        for row, reason in sorted(reasons.items()):
            key = keys[row]
            rejected.append(
                Rejected(
                    values[row],
                    reason,
                    record_topics[row],
                    partitions[row],
                    offsets[row],
                    key.decode("utf-8", "replace") if key is not None else None,
                )
            )
    return Parsed(columns, rejected)


def _outside(lat: list[float], lon: list[float], bounds: tuple[float, ...]) -> list[int]:
    """Positions of the points outside the bounds (south, west, north, east)."""
    if not lat:
        return []
    south, west, north, east = bounds
    y, x = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    return np.flatnonzero((y < south) | (y > north) | (x < west) | (x > east)).tolist()


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


PANE_FIELDS: list[tuple[str, pa.DataType]] = [
    ("segment", pa.int32()),
    ("vehicle_id", pa.string()),
    ("ts", pa.int64()),  # the pane's latest fix: its event time
    ("fixes", pa.int32()),
    ("speed_sum", pa.float64()),
    ("speed_min", pa.float64()),
    ("speed_max", pa.float64()),
]
PANE_SCHEMA = pa.schema([pa.field(name, typ) for name, typ in PANE_FIELDS])


def panes(fixes: pa.RecordBatch, pane_ms: int) -> pa.RecordBatch:
    """The matched fixes folded into one row per segment, vehicle and pane of ``pane_ms``.

    A pane is a slice of event time that no window boundary cuts (its length divides the
    windows' length and slide), so a pane's fixes enter exactly the same windows: its count,
    speed sum, minimum and maximum, and its vehicle, aggregate into those windows as the
    fixes would, with an order of magnitude fewer rows (a taxi spends seconds on a segment,
    reporting every second). Fixes off the road network are left out, and so are police
    units': they wait at their stations for minutes at 0 km/h and drive with priority, so
    they say nothing of the traffic (counted, they kept every station's street "severe").
    """
    segment = fixes.column("segment").to_numpy()
    police = fixes.column("kind").to_numpy(zero_copy_only=False) == POLICE
    on_road = np.flatnonzero((segment >= 0) & ~police)
    if len(on_road) == 0:
        return pa.RecordBatch.from_pylist([], schema=PANE_SCHEMA)
    segment = segment[on_road]
    ts = fixes.column("ts").to_numpy()[on_road]
    speed = fixes.column("speed_kmh").to_numpy()[on_road]
    vehicles = fixes.column("vehicle_id").take(pa.array(on_road)).dictionary_encode()
    vehicle = vehicles.indices.to_numpy(zero_copy_only=False)
    pane = ts // pane_ms
    order = np.lexsort((pane, vehicle, segment))
    segment, vehicle, pane = segment[order], vehicle[order], pane[order]
    ts, speed = ts[order], speed[order]
    starts = np.flatnonzero(
        np.r_[True, (segment[1:] != segment[:-1]) | (vehicle[1:] != vehicle[:-1])
              | (pane[1:] != pane[:-1])]
    )  # fmt: skip
    arrays = [
        pa.array(segment[starts], pa.int32()),
        vehicles.dictionary.take(pa.array(vehicle[starts])),
        pa.array(np.maximum.reduceat(ts, starts), pa.int64()),
        pa.array(np.diff(np.r_[starts, len(order)]).astype(np.int32)),
        pa.array(np.add.reduceat(speed, starts)),
        pa.array(np.minimum.reduceat(speed, starts)),
        pa.array(np.maximum.reduceat(speed, starts)),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=PANE_SCHEMA)
