"""The latest position of every vehicle, and the binary frames that carry them to browsers.

Positions are the bulk of the traffic (13,000 vehicles at 2 Hz), so they travel as one
binary WebSocket frame per tick, encoded once and shared by every client that is up to
date. Vehicle ids travel once, in a JSON ``vehicles`` message that gives each id a small
integer index; frames then carry indices.

Frame layout (little endian), struct-of-arrays so that the browser reads it through typed
array views without copying::

    header  24 bytes  u8 type (1) | u8 version (1) | u16 reserved | u32 count
                      | f64 frame_ts (epoch ms) | u32 tick | u32 reserved
    index   u32 × count     vehicle index
    lat     f32 × count     degrees
    lon     f32 × count     degrees
    speed   u8  × count     km/h, capped at 255
    heading u8  × count     degrees × 256 / 360
    flags   u8  × count     FLAG_* bits

A frame holds the vehicles updated after a given tick (``since``): healthy clients get the
changes of the last tick; a client that fell behind gets everything it missed in one frame
(latest position wins), and a new client gets every vehicle (``since=-1``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from casatwin.bus.messages import VEHICLE_KINDS

FRAME_POSITIONS = 1
FRAME_VERSION = 1
HEADER = struct.Struct("<BBHIdII")
assert HEADER.size == 24

FLAG_SPEEDING = 1  # a speeding infraction in the last few minutes
FLAG_INFRACTION = 2  # any other infraction in the last few minutes

KIND_CODE: dict[str, int] = {kind: code for code, kind in enumerate(VEHICLE_KINDS)}


@dataclass
class TelemetryBatch:
    """Decoded telemetry, ready to apply: one entry per good message, in arrival order."""

    vehicle_ids: list[str]
    kinds: list[str]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    speed_kmh: NDArray[np.float64]
    heading_deg: NDArray[np.float64]
    invalid: int = 0  # messages that broke the contract and were skipped

    def __len__(self) -> int:
        return len(self.vehicle_ids)


@dataclass
class PositionTable:
    """Every vehicle's latest position, indexed by a small integer that never changes."""

    ttl_s: float = 120.0
    capacity: int = 1024
    ids: list[str] = field(default_factory=list)
    index_of: dict[str, int] = field(default_factory=dict)
    tick: int = 0
    announced: int = 0  # vehicles [0, announced) have been sent in a `vehicles` message
    now_s: float = 0.0  # the time of the last tick (flags are judged against it)

    def __post_init__(self) -> None:
        n = self.capacity
        self.lat = np.zeros(n, np.float32)
        self.lon = np.zeros(n, np.float32)
        self.speed = np.zeros(n, np.uint8)
        self.heading = np.zeros(n, np.uint8)
        self.kind = np.zeros(n, np.uint8)
        self.flag_until = np.zeros((n, 2), np.float64)  # seconds: speeding, other infraction
        self.last_seen = np.zeros(n, np.float64)
        self.updated_tick = np.full(n, -1, np.int64)
        self.alive = np.zeros(n, np.bool_)
        self.dirty = np.zeros(n, np.bool_)
        self._frames: dict[int, bytes] = {}  # since → frame, for the current tick

    # -- updates -------------------------------------------------------------------------

    def index(self, vehicle_id: str, kind: str) -> int:
        """The vehicle's index, registering it on first sight."""
        i = self.index_of.get(vehicle_id)
        if i is None:
            i = len(self.ids)
            if i == self.capacity:
                self._grow()
            self.ids.append(vehicle_id)
            self.index_of[vehicle_id] = i
            self.kind[i] = KIND_CODE.get(kind, KIND_CODE["private"])
        return i

    def apply(self, batch: TelemetryBatch, now_s: float) -> None:
        """Take a batch of telemetry (later messages of a vehicle win)."""
        if not len(batch):
            return
        idx = np.fromiter(
            (self.index(v, k) for v, k in zip(batch.vehicle_ids, batch.kinds)),
            dtype=np.int64,
            count=len(batch),
        )
        # Fancy assignment keeps the last value for repeated indices: latest wins.
        self.lat[idx] = batch.lat
        self.lon[idx] = batch.lon
        self.speed[idx] = np.clip(np.rint(batch.speed_kmh), 0, 255).astype(np.uint8)
        self.heading[idx] = (
            np.rint(batch.heading_deg * (256 / 360)).astype(np.int64) % 256
        ).astype(np.uint8)
        self.last_seen[idx] = now_s
        self.alive[idx] = True
        self.dirty[idx] = True

    def flag(self, vehicle_id: str, speeding: bool, until_s: float) -> None:
        """Highlight a vehicle (after an infraction) until ``until_s``."""
        i = self.index_of.get(vehicle_id)
        if i is None:
            return
        self.flag_until[i, 0 if speeding else 1] = until_s
        self.dirty[i] = True

    def advance(self, now_s: float) -> tuple[list[list[int | str]], list[int]]:
        """Close the current tick: (vehicles to announce, vehicles gone quiet)."""
        self.tick += 1
        self._frames.clear()
        n = len(self.ids)
        new = [[i, self.ids[i], int(self.kind[i])] for i in range(self.announced, n)]
        self.announced = n
        expired = self.alive[:n] & (self.last_seen[:n] < now_s - self.ttl_s)
        gone = np.flatnonzero(expired)
        self.alive[gone] = False
        self.dirty[gone] = False
        changed = np.flatnonzero(self.dirty[:n])
        self.updated_tick[changed] = self.tick
        self.dirty[:n] = False
        self.now_s = now_s
        return new, gone.tolist()

    # -- reading -------------------------------------------------------------------------

    def registry(self) -> list[list[int | str]]:
        """``[index, id, kind code]`` of every announced vehicle (for a client's snapshot)."""
        return [[i, self.ids[i], int(self.kind[i])] for i in range(self.announced)]

    def count_alive(self) -> int:
        return int(self.alive[: len(self.ids)].sum())

    def frame(self, since: int, frame_ts_ms: float) -> bytes:
        """The vehicles updated after tick ``since``, encoded once per tick and ``since``."""
        cached = self._frames.get(since)
        if cached is not None:
            return cached
        n = self.announced
        selected = np.flatnonzero(self.alive[:n] & (self.updated_tick[:n] > since))
        until = self.flag_until[selected]
        flags = (until[:, 0] > self.now_s) * FLAG_SPEEDING + (
            until[:, 1] > self.now_s
        ) * FLAG_INFRACTION
        data = encode_frame(
            self.tick,
            frame_ts_ms,
            selected.astype("<u4"),
            self.lat[selected],
            self.lon[selected],
            self.speed[selected],
            self.heading[selected],
            flags.astype(np.uint8),
        )
        self._frames[since] = data
        return data

    def _grow(self) -> None:
        old = self.capacity
        self.capacity = old * 2
        for name in ("lat", "lon", "speed", "heading", "kind", "last_seen", "alive", "dirty"):
            array = getattr(self, name)
            grown = np.zeros(self.capacity, array.dtype)
            grown[:old] = array
            setattr(self, name, grown)
        flags = np.zeros((self.capacity, 2), np.float64)
        flags[:old] = self.flag_until
        self.flag_until = flags
        ticks = np.full(self.capacity, -1, np.int64)
        ticks[:old] = self.updated_tick
        self.updated_tick = ticks


def encode_frame(
    tick: int,
    frame_ts_ms: float,
    index: NDArray[np.uint32],
    lat: NDArray[np.float32],
    lon: NDArray[np.float32],
    speed: NDArray[np.uint8],
    heading: NDArray[np.uint8],
    flags: NDArray[np.uint8],
) -> bytes:
    header = HEADER.pack(FRAME_POSITIONS, FRAME_VERSION, 0, len(index), frame_ts_ms, tick, 0)
    return b"".join(
        (
            header,
            index.astype("<u4").tobytes(),
            lat.astype("<f4").tobytes(),
            lon.astype("<f4").tobytes(),
            speed.tobytes(),
            heading.tobytes(),
            flags.tobytes(),
        )
    )


@dataclass
class Frame:
    """A decoded positions frame (tests and the benchmark's clients read frames back)."""

    tick: int
    frame_ts_ms: float
    index: NDArray[np.uint32]
    lat: NDArray[np.float32]
    lon: NDArray[np.float32]
    speed: NDArray[np.uint8]
    heading: NDArray[np.uint8]
    flags: NDArray[np.uint8]


def decode_frame(data: bytes) -> Frame:
    kind, version, _, count, frame_ts, tick, _ = HEADER.unpack_from(data)
    if kind != FRAME_POSITIONS or version != FRAME_VERSION:
        raise ValueError(f"not a positions frame (type {kind}, version {version})")
    offset = HEADER.size
    arrays = []
    for dtype in ("<u4", "<f4", "<f4", "u1", "u1", "u1"):
        size = np.dtype(dtype).itemsize * count
        arrays.append(np.frombuffer(data, dtype, count, offset))
        offset += size
    return Frame(tick, frame_ts, *arrays)


def frame_header(data: bytes) -> tuple[int, float, int]:
    """(count, frame_ts_ms, tick) of a positions frame, without decoding the arrays."""
    _, _, _, count, frame_ts, tick, _ = HEADER.unpack_from(data)
    return count, frame_ts, tick
