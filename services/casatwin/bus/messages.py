"""Message contracts of every topic (design: "Kafka topics and message contracts").

Values are JSON objects encoded with orjson; times are epoch milliseconds UTC. The
TypedDicts document the shapes for type checkers and readers; :data:`CONTRACTS` states the
required fields with their types and ranges, and :func:`check` validates a decoded message
against them so that every consumer rejects bad input the same way, with a reason.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import numpy as np
import orjson

from casatwin.bus import topics

VehicleKind = Literal["taxi_petit", "taxi_grand", "police", "private"]
VEHICLE_KINDS: tuple[str, ...] = ("taxi_petit", "taxi_grand", "police", "private")
InfractionType = Literal["speeding", "red_light", "illegal_parking"]
INFRACTION_TYPES: tuple[str, ...] = ("speeding", "red_light", "illegal_parking")
DispatchStatus = Literal["assigned", "en_route", "on_scene", "closed", "queued", "cancelled"]
DISPATCH_STATUSES: tuple[str, ...] = (
    "queued",
    "assigned",
    "en_route",
    "on_scene",
    "closed",
    "cancelled",
)
CongestionLevel = Literal["clear", "light", "moderate", "severe"]
CONGESTION_LEVELS: tuple[str, ...] = ("clear", "light", "moderate", "severe")
SignalPhase = Literal["green", "yellow", "red"]


class Telemetry(TypedDict):
    vehicle_id: str
    kind: VehicleKind
    ts: int
    lat: float
    lon: float
    speed_kmh: float
    heading_deg: float
    source: Literal["sim", "device"]


class IntersectionReading(TypedDict):
    intersection_id: str
    ts: int
    window_s: float
    vehicles: int
    queue_len: int
    max_wait_s: float
    phase: str  # the active phase's name, e.g. "A" (the approaches it serves are in the plan)


class HighwayReading(TypedDict):
    station_id: str
    ts: int
    speed_kmh: float
    volume: int
    occupancy_pct: float


# "class" is a Python keyword, hence the functional form.
Decision = TypedDict(
    "Decision",
    {
        "class": int,
        "fine_mad": int,
        "reduced_24h": int,
        "reduced_15d": int,
        "points": int,
        "court": bool,
        "legal_basis": str,
    },
)


class Infraction(TypedDict):
    infraction_id: str
    type: InfractionType
    event_ts: int
    detected_ts: int
    published_ts: NotRequired[int]
    lat: float
    lon: float
    # Where: the road (speeding; a red light's approach; the road an illegal parker stands
    # on, absent from parking infractions published before it was added); a red light's
    # junction; an illegal parker's no-parking zone and its kind.
    segment_id: NotRequired[str]
    intersection_id: NotRequired[str]
    zone_id: NotRequired[str]
    parking_kind: NotRequired[str]
    measured: float
    limit: float
    vehicle: dict[str, Any]
    driver: dict[str, Any]
    decision: Decision
    dispatch_required: bool


class DispatchEvent(TypedDict):
    dispatch_id: str
    infraction_id: str
    unit_id: str
    status: DispatchStatus
    ts: int
    eta_s: NotRequired[float]
    route: NotRequired[list[list[float]]]  # [[lat, lon], ...]
    # assigned: what the simulator needs to drive the unit there and keep it on scene
    segments: NotRequired[list[str]]  # segment ids from the unit's segment to the incident's
    target_offset_m: NotRequired[float]  # where the incident lies along the last segment
    handling_s: NotRequired[float]
    incident_ts: NotRequired[int]  # the offence's time, from which the response is counted
    response_s: NotRequired[float]  # on_scene: from the offence to the unit on scene


class CongestionWindow(TypedDict):
    key: str  # segment or intersection id
    scope: Literal["segment", "intersection", "station"]
    window_start: int
    window_end: int
    count: int
    avg_speed_kmh: float
    min_speed_kmh: float
    max_speed_kmh: float
    level: CongestionLevel
    anomaly: bool
    # Segments: the free-flow speed (the limit) and avg / free-flow; intersections: their
    # queues and waits (their speed fields are 0). ``hour``: UTC hour of window_end.
    free_flow_kmh: NotRequired[float]
    speed_ratio: NotRequired[float]
    avg_queue: NotRequired[float]
    peak_queue: NotRequired[int]
    avg_wait_s: NotRequired[float]
    peak_wait_s: NotRequired[float]
    hour: NotRequired[int]


class DeadLetter(TypedDict):
    topic: str
    partition: int
    offset: int
    key: str | None
    error: str
    stage: str
    payload_b64: str
    ts: int


# ---------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class Field:
    """A required (or optional) field: its JSON type and, for numbers, its range."""

    types: tuple[type, ...]
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = True


NUMBER = (int, float)
# Epoch ms; floats are refused so that keys stay exact, and the bound (2^53, some 285,000
# years) keeps every time exact in a float and inside a 64-bit column.
TS = Field((int,), low=0, high=2**53)

CONTRACTS: dict[str, dict[str, Field]] = {
    topics.TELEMETRY: {
        "vehicle_id": Field((str,)),
        "kind": Field((str,), choices=VEHICLE_KINDS),
        "ts": TS,
        "lat": Field(NUMBER, -90, 90),
        "lon": Field(NUMBER, -180, 180),
        "speed_kmh": Field(NUMBER, 0, 400),
        "heading_deg": Field(NUMBER, 0, 360),
        "source": Field((str,), choices=("sim", "device")),
    },
    topics.SENSORS_INTERSECTION: {
        "intersection_id": Field((str,)),
        "ts": TS,
        "window_s": Field(NUMBER, 0, 3600),
        "vehicles": Field((int,), 0, 100_000),
        "queue_len": Field((int,), 0, 10_000),
        "max_wait_s": Field(NUMBER, 0, 3600),
        "phase": Field((str,)),
    },
    topics.SENSORS_HIGHWAY: {
        "station_id": Field((str,)),
        "ts": TS,
        "speed_kmh": Field(NUMBER, 0, 300),
        "volume": Field((int,), 0, 100_000),
        "occupancy_pct": Field(NUMBER, 0, 100),
    },
    topics.INFRACTIONS: {
        "infraction_id": Field((str,)),
        "type": Field((str,), choices=INFRACTION_TYPES),
        "event_ts": TS,
        "detected_ts": TS,
        "lat": Field(NUMBER, -90, 90),
        "lon": Field(NUMBER, -180, 180),
        "measured": Field(NUMBER),
        "limit": Field(NUMBER),
        "vehicle": Field((dict,)),
        "driver": Field((dict,)),
        "decision": Field((dict,)),
        "dispatch_required": Field((bool,)),
        "segment_id": Field((str,), required=False),
        "intersection_id": Field((str,), required=False),
    },
    topics.DISPATCH: {
        "dispatch_id": Field((str,)),
        "infraction_id": Field((str,)),
        "unit_id": Field((str,)),
        "status": Field((str,), choices=DISPATCH_STATUSES),
        "ts": TS,
        "eta_s": Field(NUMBER, 0, None, required=False),
        "route": Field((list,), required=False),
        "segments": Field((list,), required=False),
        "target_offset_m": Field(NUMBER, 0, None, required=False),
        "handling_s": Field(NUMBER, 0, None, required=False),
        "incident_ts": Field((int,), low=0, required=False),
        "response_s": Field(NUMBER, None, None, required=False),
    },
    topics.CONGESTION: {
        "key": Field((str,)),
        "scope": Field((str,), choices=("segment", "intersection", "station")),
        "window_start": TS,
        "window_end": TS,
        "count": Field((int,), 0),
        "avg_speed_kmh": Field(NUMBER, 0),
        "min_speed_kmh": Field(NUMBER, 0),
        "max_speed_kmh": Field(NUMBER, 0),
        "level": Field((str,), choices=CONGESTION_LEVELS),
        "anomaly": Field((bool,)),
        "free_flow_kmh": Field(NUMBER, 0, None, required=False),
        "speed_ratio": Field(NUMBER, 0, None, required=False),
        "avg_queue": Field(NUMBER, 0, None, required=False),
        "peak_queue": Field((int,), 0, None, required=False),
        "avg_wait_s": Field(NUMBER, 0, None, required=False),
        "peak_wait_s": Field(NUMBER, 0, None, required=False),
        "hour": Field((int,), 0, 23, required=False),
    },
}


class InvalidMessage(ValueError):
    """A message that breaks its topic's contract; ``str()`` says exactly how."""


def check(topic: str, message: Any) -> None:
    """Raise :class:`InvalidMessage` naming the first field that breaks the contract."""
    if _conforms(topic)(message):
        return  # the fast yes; the rules below explain a no
    if not isinstance(message, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(message).__name__}")
    for name, spec in CONTRACTS[topic].items():
        if name not in message or message[name] is None:
            if spec.required:
                raise InvalidMessage(f"missing field {name!r}")
            continue
        value = message[name]
        # bool is an int subclass in Python; JSON true is never a valid number here
        if not isinstance(value, spec.types) or (
            isinstance(value, bool) and bool not in spec.types
        ):
            expected = " or ".join(_json_type(t) for t in spec.types)
            raise InvalidMessage(
                f"field {name!r} should be {expected}, got {_json_type(type(value))}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMessage(f"field {name!r} is not a finite number")
        if spec.low is not None and value < spec.low:
            raise InvalidMessage(f"field {name!r}={value} is below {spec.low}")
        if spec.high is not None and value > spec.high:
            raise InvalidMessage(f"field {name!r}={value} is above {spec.high}")
        if spec.choices is not None and value not in spec.choices:
            raise InvalidMessage(f"field {name!r}={value!r} is not one of {list(spec.choices)}")


@functools.cache
def _conforms(topic: str) -> Callable[[Any], bool]:
    """A yes/no test of :data:`CONTRACTS` ``[topic]``, several times faster than the checks
    of :func:`check` (consumers validate tens of thousands of messages a second).

    Exact type tests suffice for decoded JSON (only dict, list, str, int, float, bool and
    None come out of a decoder) and exclude bool from the numbers, as :func:`check` does;
    anything else answers no, and :func:`check` decides.
    """
    fields = [
        (
            name,
            frozenset(spec.types),
            spec.low,
            spec.high,
            frozenset(spec.choices) if spec.choices is not None else None,
            spec.required,
        )
        for name, spec in CONTRACTS[topic].items()
    ]
    isfinite = math.isfinite

    def conforms(message: Any) -> bool:
        if type(message) is not dict:
            return False
        get = message.get
        for name, types, low, high, choices, required in fields:
            value = get(name)
            if value is None:
                if required:
                    return False
                continue
            kind = type(value)
            if kind not in types:
                return False
            if kind is float and not isfinite(value):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
            if choices is not None and value not in choices:
                return False
        return True

    return conforms


def decode(topic: str, raw: bytes | None) -> dict[str, Any]:
    """Decode and validate one message value; :class:`InvalidMessage` says what is wrong."""
    if raw is None:
        raise InvalidMessage("empty message (no value)")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not valid JSON: {exc}") from None
    check(topic, message)
    return message


@dataclass
class Decoded:
    """Many values of one topic, decoded: the good messages' fields as columns (in input
    order), where each good message was in the input, and why each other one was refused."""

    columns: dict[str, list[Any]]  # every field of the topic's contract (None if absent)
    positions: list[int]
    reasons: dict[int, str]

    def __len__(self) -> int:
        return len(self.positions)


def decode_many(topic: str, raws: Sequence[bytes | None]) -> Decoded:
    """Decode and validate many values at once (the bulk of a consumer's input): each is
    parsed on its own, the contract is applied to whole columns (:func:`check_all`), and
    only a batch with a bad message is gone through one by one to say what is wrong."""
    try:
        columns = check_all(topic, [orjson.loads(raw) for raw in raws])  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):  # TypeError: a missing value (None)
        columns = None
    if columns is not None:
        return Decoded(columns, list(range(len(raws))), {})
    good, positions, reasons = [], [], {}
    for position, raw in enumerate(raws):
        try:
            good.append(decode(topic, raw))
        except InvalidMessage as exc:
            reasons[position] = str(exc)
        else:
            positions.append(position)
    return Decoded(check_all(topic, good) or {}, positions, reasons)


def check_all(topic: str, messages: list[Any]) -> dict[str, list[Any]] | None:
    """The contract of ``topic`` applied to many decoded messages at once, a column at a
    time (twice as fast as :func:`check` on each): their fields as columns if every message
    conforms, else None (:func:`check` then says which message and why)."""
    if any(type(m) is not dict for m in messages):
        return None
    columns = {}
    for name, spec in CONTRACTS[topic].items():
        column = [m.get(name) for m in messages]
        kinds = set(map(type, column))
        allowed = set(spec.types) if spec.required else {*spec.types, type(None)}
        if not kinds <= allowed:
            return None  # bool is not int here, as in check()
        present = column if spec.required else [v for v in column if v is not None]
        if present and (float in spec.types or spec.low is not None or spec.high is not None):
            try:
                values = np.asarray(present, dtype=np.float64)
            except OverflowError:  # an integer beyond any float: check() explains
                return None
            if not np.isfinite(values).all():
                return None
            if spec.low is not None and values.min() < spec.low:
                return None
            if spec.high is not None and values.max() > spec.high:
                return None
        if spec.choices is not None and not set(present) <= set(spec.choices):
            return None
        columns[name] = column
    return columns


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def _json_type(t: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        dict: "an object",
        list: "an array",
        type(None): "null",
    }.get(t, t.__name__)
