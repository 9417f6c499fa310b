"""Spark's side of the detectors: per-vehicle state in the state store, event-time timers.

``applyInPandasWithState`` groups the fixes by *bucket* — a fixed hash of the vehicle id
into ``state_buckets`` groups — rather than by vehicle: its per-group cost (a pandas frame
in, one out, a state row) then buys a whole bucket of vehicles at once instead of one.
A bucket's state is one JSON object ``{vehicle_id: [deadline, VehicleState]}``, compressed
(zlib, fastest level): Spark pickles the state into every call of the Python function
byte by byte, and JSON of similar records shrinks about fivefold.

For each bucket in a micro-batch, :func:`detect_bucket` runs the pure
:class:`~casatwin.processor.detectors.Detectors` over each vehicle's fixes in event order,
fires the timers of its silent vehicles that the watermark has passed, forgets vehicles
silent for long, stores the bucket back and sets the bucket's event-time timeout to its
earliest deadline, so that a timer fires even when none of its vehicles reports again.
State travels with the data in Arrow batches: no call back to the JVM per vehicle.

The number of buckets must stay the same for the life of a checkpoint (a vehicle's state
lives in its bucket): :func:`checkpoint_buckets` records it with the checkpoint, and a
checkpoint keeps its own whatever the setting says later.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pyspark.sql.streaming.state import GroupState

from casatwin.config import CitySettings
from casatwin.logs import get_logger
from casatwin.processor.detectors import Detection, DetectorConfig, Detectors, Fix, VehicleState
from casatwin.processor.network import for_city

STATE_SCHEMA = "vehicles binary"

DETECTION_SCHEMA = (
    "infraction_id string, type string, vehicle_id string, kind string, event_ts long, "
    "evidence_ts long, detected_ts long, lat double, lon double, measured double, "
    "`limit` double, segment_id string, intersection_id string, zone_id string, "
    "parking_kind string"
)
DETECTION_COLUMNS = [
    "infraction_id", "type", "vehicle_id", "kind", "event_ts", "evidence_ts", "detected_ts",
    "lat", "lon", "measured", "limit", "segment_id", "intersection_id", "zone_id",
    "parking_kind",
]  # fmt: skip
INPUT_COLUMNS = ("vehicle_id", "kind", "ts", "lat", "lon", "x", "y", "speed_kmh", "segment",
                 "along_m", "zone", "partition", "offset")  # fmt: skip

Bucket = dict[str, list[Any]]  # vehicle id → [deadline, VehicleState as a dict]

BUCKETS_FILE = "state-buckets"
LEGACY_BUCKETS = 8  # the count of checkpoints written before it was recorded

log = get_logger("processor")


def checkpoint_buckets(checkpoint: Path, configured: int) -> int:
    """The state buckets of the query checkpointed at ``checkpoint``: those it was started
    with (recorded beside it), or ``configured`` for a new one."""
    recorded = checkpoint / BUCKETS_FILE
    if recorded.exists():
        buckets = int(recorded.read_text())
    elif (checkpoint / "spark" / "offsets").exists():
        buckets = LEGACY_BUCKETS
    else:
        buckets = configured
    if buckets != configured:
        log.warning(
            "the checkpoint keeps the detectors' state in its own number of buckets; "
            "the setting applies to new checkpoints (casatwin processor --reset)",
            checkpoint=str(checkpoint),
            buckets=buckets,
            setting=configured,
        )
    checkpoint.mkdir(parents=True, exist_ok=True)
    recorded.write_text(f"{buckets}\n")
    return buckets


@lru_cache(maxsize=4)
def detectors_for(city: CitySettings, config: DetectorConfig) -> Detectors:
    """One :class:`Detectors` per city and configuration in each Python worker."""
    return Detectors(for_city(city), config)


def detection_function(city: CitySettings, config: DetectorConfig) -> Any:
    """The function ``applyInPandasWithState`` calls, bound to the city and a configuration
    (small and picklable: the network is built in each worker, once)."""

    def detect(
        key: tuple[int], frames: Iterator[pd.DataFrame], state: GroupState
    ) -> Iterator[pd.DataFrame]:
        return detect_bucket(detectors_for(city, config), frames, state)

    return detect


def detect_bucket(
    detectors: Detectors, frames: Iterator[pd.DataFrame], state: GroupState
) -> Iterator[pd.DataFrame]:
    bucket: Bucket = decode_bucket(state.get[0]) if state.exists else {}
    watermark = state.getCurrentWatermarkMs()
    found: list[tuple[Detection, str]] = []
    if not state.hasTimedOut:
        for vehicle_id, fixes, kind in by_vehicle(frames):
            vehicle = _load(bucket.get(vehicle_id))
            vehicle.kind = kind
            hits = detectors.on_fixes(vehicle_id, kind, vehicle, fixes)
            found += [(d, kind) for d in hits]
            bucket[vehicle_id] = [detectors.deadline(vehicle), vehicle.to_dict()]
    # Timers of the bucket's vehicles that event time has passed (silent vehicles).
    for vehicle_id, (deadline, raw) in list(bucket.items()):
        if deadline > watermark:
            continue
        vehicle = VehicleState.from_dict(raw)
        found += [(d, vehicle.kind) for d in detectors.on_time(vehicle_id, vehicle, watermark)]
        if detectors.forgettable(vehicle, watermark):
            del bucket[vehicle_id]
        else:
            bucket[vehicle_id] = [detectors.deadline(vehicle), vehicle.to_dict()]
    if bucket:
        state.update((encode_bucket(bucket),))
        # Spark refuses a timeout at or before the current watermark.
        earliest = min(deadline for deadline, _ in bucket.values())
        state.setTimeoutTimestamp(max(earliest, watermark + 1))
    else:
        state.remove()
    if found:
        yield _frame(found)


def encode_bucket(bucket: Bucket) -> bytes:
    return zlib.compress(orjson.dumps(bucket), 1)


def decode_bucket(raw: bytes) -> Bucket:
    """A bucket's state; plain JSON is the format of checkpoints written before compression."""
    return orjson.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))


def _load(entry: list[Any] | None) -> VehicleState:
    return VehicleState() if entry is None else VehicleState.from_dict(entry[1])


def by_vehicle(frames: Iterator[pd.DataFrame]) -> Iterator[tuple[str, list[Fix], str]]:
    """Each vehicle's fixes in event order (ties: Kafka order), with its latest kind."""
    parts = [f for f in frames if len(f)]
    if not parts:
        return
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    col = {name: frame[name].to_numpy() for name in INPUT_COLUMNS}
    order = np.lexsort((col["offset"], col["partition"], col["ts"], col["vehicle_id"]))
    ids = col["vehicle_id"][order]
    rows = list(
        zip(
            *(col[name][order].tolist() for name in
              ("ts", "lat", "lon", "x", "y", "speed_kmh", "segment", "along_m", "zone")),
            strict=True,
        )
    )  # fmt: skip
    kinds = col["kind"][order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]).tolist()
    ends = [*starts[1:], len(ids)]
    for start, end in zip(starts, ends):
        yield str(ids[start]), [Fix(*row) for row in rows[start:end]], str(kinds[end - 1])


def _frame(found: list[tuple[Detection, str]]) -> pd.DataFrame:
    now_ms = int(time.time() * 1000)
    rows = [{**d.__dict__, "kind": kind, "detected_ts": now_ms} for d, kind in found]
    return pd.DataFrame(rows, columns=DETECTION_COLUMNS)
