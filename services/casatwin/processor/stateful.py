"""Spark's side of the detectors: per-vehicle state in the state store, event-time timers.

``applyInPandasWithState`` groups the fixes by vehicle; for each vehicle with fixes in the
micro-batch (or whose timer is due) :func:`detect_group` loads its :class:`VehicleState`
from the state store (one binary column holding JSON), runs the pure
:class:`~casatwin.processor.detectors.Detectors` and stores the state back with its next
deadline as an event-time timeout, so timers fire when the watermark passes them even if
the vehicle never reports again. State travels with the data in Arrow batches: no call
back to the JVM per key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pyspark.sql.streaming.state import GroupState

from casatwin.processor.detectors import Detection, DetectorConfig, Detectors, Fix, VehicleState
from casatwin.processor.network import for_pack

STATE_SCHEMA = "state binary"

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


@lru_cache(maxsize=4)
def detectors_for(pack: str, config: DetectorConfig) -> Detectors:
    """One :class:`Detectors` per pack and configuration in each Python worker."""
    return Detectors(for_pack(pack), config)


def detection_function(pack: str, config: DetectorConfig) -> Any:
    """The function ``applyInPandasWithState`` calls, bound to a pack and a configuration
    (small and picklable: the network is built in each worker, once)."""

    def detect(
        key: tuple[str], frames: Iterator[pd.DataFrame], state: GroupState
    ) -> Iterator[pd.DataFrame]:
        return detect_group(detectors_for(pack, config), key[0], frames, state)

    return detect


def detect_group(
    detectors: Detectors, vehicle_id: str, frames: Iterator[pd.DataFrame], state: GroupState
) -> Iterator[pd.DataFrame]:
    vehicle = VehicleState.from_dict(orjson.loads(state.get[0])) if state.exists else VehicleState()
    watermark = state.getCurrentWatermarkMs()
    if state.hasTimedOut:
        found = detectors.on_time(vehicle_id, vehicle, watermark)
        if detectors.forgettable(vehicle, watermark):
            state.remove()
            yield _frame(found, vehicle)
            return
    else:
        fixes = pd.concat(list(frames), ignore_index=True)
        fixes = fixes.sort_values(["ts", "partition", "offset"], kind="stable")
        vehicle.kind = str(fixes["kind"].iat[-1])
        found = detectors.on_fixes(vehicle_id, vehicle.kind, vehicle, _fixes(fixes))
    state.update((orjson.dumps(vehicle.to_dict()),))
    # Spark refuses a timeout at or before the current watermark.
    state.setTimeoutTimestamp(max(detectors.deadline(vehicle), watermark + 1))
    yield _frame(found, vehicle)


def _fixes(frame: pd.DataFrame) -> list[Fix]:
    columns = [frame[name].to_numpy() for name in ("ts", "lat", "lon", "x", "y", "speed_kmh")]
    segment = frame["segment"].to_numpy(dtype=np.int64)
    along = frame["along_m"].to_numpy()
    zone = frame["zone"].to_numpy(dtype=np.int64)
    return [
        Fix(int(ts), float(lat), float(lon), float(x), float(y), float(v), int(s), float(a), int(z))
        for ts, lat, lon, x, y, v, s, a, z in zip(*columns, segment, along, zone)
    ]


def _frame(found: list[Detection], vehicle: VehicleState) -> pd.DataFrame:
    now_ms = int(time.time() * 1000)
    rows = [{**d.__dict__, "kind": vehicle.kind, "detected_ts": now_ms} for d in found]
    return pd.DataFrame(rows, columns=DETECTION_COLUMNS)
