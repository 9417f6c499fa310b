"""Infraction detectors: per-vehicle state machines over map-matched fixes. Pure.

Spark only orchestrates (``stateful.py`` keeps a :class:`VehicleState` per vehicle in its
state store and calls :meth:`Detectors.on_fixes` / :meth:`Detectors.on_time`); everything
that decides what an infraction is lives here, with time as a parameter (event time, epoch
ms), so the same input always gives the same infractions with the same ids.

* **Speeding** — a fix is *over* when its speed exceeds its segment's limit (plus an
  optional tolerance). An episode starts at the first over fix and ends at the first matched
  fix that is not over, or after ``episode_gap_s`` without a matched fix (a timer: the
  vehicle may stop reporting). An episode of at least ``min_over_fixes`` consecutive over
  fixes is one infraction carrying its maximum excess; a single over fix is a GPS spike.
* **Red light** — a crossing of an approach's stop line between two consecutive matched
  fixes (the vehicle continues on the approach past the line, or onto a segment leaving the
  junction). The crossing time is interpolated along the path; if the approach's signal is
  red at that instant (``SignalTable``), it is an infraction. Yellow is not.
* **Illegal parking** — stationary (speed under ``stationary_kmh``, within
  ``stationary_radius_m`` of where it stopped) inside a no-parking zone for ``dwell_s``;
  a timer fires it at ``since + dwell_s`` even if the vehicle has stopped reporting. One
  infraction per stop. It names the zone and the road the car stands on (the segment of
  the stop's first map-matched fix), where a police unit is sent.

Unmatched fixes (off the road network) neither continue nor break a speeding episode and
never count as a crossing. Police vehicles are exempt (they drive to incidents).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from casatwin.city.signals import RED
from casatwin.processor.network import RoadNetwork

SPEEDING, RED_LIGHT, ILLEGAL_PARKING = "speeding", "red_light", "illegal_parking"
ID_PREFIX = {SPEEDING: "SPD", RED_LIGHT: "RED", ILLEGAL_PARKING: "PRK"}


@dataclass(frozen=True)
class DetectorConfig:
    min_over_fixes: int = 2
    speed_tolerance_kmh: float = 0.0
    episode_gap_s: float = 10.0
    dwell_s: float = 120.0
    stationary_kmh: float = 3.0
    stationary_radius_m: float = 15.0
    red_light_min_speed_kmh: float = 5.0
    stop_line_tolerance_m: float = 1.0
    max_fix_gap_s: float = 10.0  # two fixes further apart than this tell nothing of a crossing
    idle_state_s: float = 600.0  # a vehicle silent this long is forgotten
    exempt_kinds: tuple[str, ...] = ("police",)


class Fix(NamedTuple):
    """One map-matched fix (``segment`` -1 when off the network, ``zone`` -1 outside every
    no-parking zone); ``x``/``y`` are metres in the city's projection. A tuple: the
    processor makes tens of thousands per second."""

    ts: int
    lat: float
    lon: float
    x: float
    y: float
    speed_kmh: float
    segment: int
    along_m: float
    zone: int


@dataclass(frozen=True)
class Detection:
    """An infraction as detected, before enrichment and decision."""

    infraction_id: str
    type: str
    vehicle_id: str
    event_ts: int  # when it happened
    evidence_ts: int  # the fix (or timer) after which it could be decided
    lat: float
    lon: float
    measured: float
    limit: float
    segment_id: str | None = None
    intersection_id: str | None = None
    zone_id: str | None = None
    parking_kind: str | None = None


def infraction_id(kind: str, vehicle_id: str, anchor_ts: int) -> str:
    """Deterministic and readable: ``SPD-TX-00042-1795322664000``."""
    return f"{ID_PREFIX[kind]}-{vehicle_id}-{anchor_ts}"


def vehicle_of(infraction_id: str) -> str:
    """The vehicle an :func:`infraction_id` names: for tools that see only the public view,
    which leaves the vehicle's id out (the latency benchmark's screen)."""
    return infraction_id.split("-", 1)[1].rsplit("-", 1)[0]


@dataclass
class VehicleState:
    """What a vehicle's detectors remember between fixes (kept in Spark's state store)."""

    kind: str = ""
    last_seen_ts: int = 0
    last: dict[str, Any] | None = None  # last matched fix: ts, segment, along_m, speed_kmh
    episode: dict[str, Any] | None = None  # open speeding episode
    parked: dict[str, Any] | None = None  # current stop in a no-parking zone
    extra: dict[str, Any] = field(default_factory=dict)  # room for later detectors

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # JSON-ready: the nested dicts are plain values

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VehicleState:
        return cls(**raw)


class Detectors:
    def __init__(self, network: RoadNetwork, config: DetectorConfig | None = None) -> None:
        self.net = network
        self.config = config or DetectorConfig()
        # Python lists: indexing them is several times faster than NumPy scalars, per fix.
        self._limit = network.limit_kmh.tolist()
        self._stop_along = network.stop_along_m.tolist()
        self._length = network.length_m.tolist()

    # -- events ----------------------------------------------------------------------------

    def on_fixes(
        self, vehicle_id: str, kind: str, state: VehicleState, fixes: list[Fix]
    ) -> list[Detection]:
        """Advance ``state`` over ``fixes`` (in time order); the infractions they complete.

        Before each fix, the vehicle's timers due by then fire (:meth:`on_time`): a timer
        gives the same result whether event time reaches it through this vehicle's next fix
        or through the watermark while the vehicle is silent.
        """
        out: list[Detection] = []
        exempt = kind in self.config.exempt_kinds
        for fix in fixes:
            if fix.ts < state.last_seen_ts:
                continue  # out of order: older than what this vehicle already told us
            out += self.on_time(vehicle_id, state, fix.ts)
            if not exempt:
                out += self._speeding(vehicle_id, state, fix)
                out += self._red_light(vehicle_id, state, fix)
                out += self._parking(vehicle_id, state, fix)
            state.last_seen_ts = fix.ts
            if fix.segment >= 0:
                state.last = {
                    "ts": fix.ts,
                    "segment": fix.segment,
                    "along_m": fix.along_m,
                    "speed_kmh": fix.speed_kmh,
                }
        return out

    def on_time(self, vehicle_id: str, state: VehicleState, now_ms: int) -> list[Detection]:
        """Timers due at event time ``now_ms``; each fires with its own due time as evidence
        time, so the result does not depend on when it was noticed."""
        out = []
        episode = state.episode
        if episode:
            due = episode["last_ts"] + int(self.config.episode_gap_s * 1000)
            if now_ms >= due:
                out += self._close_episode(vehicle_id, state, due)
        parked = state.parked
        if parked and not parked["reported"]:
            due = parked["since"] + int(self.config.dwell_s * 1000)
            if now_ms >= due:
                out.append(self._parking_detection(vehicle_id, parked, due))
                parked["reported"] = True
        return out

    def deadline(self, state: VehicleState) -> int:
        """The event time at which :meth:`on_time` has something to do (at worst, forget
        the vehicle)."""
        times = [state.last_seen_ts + int(self.config.idle_state_s * 1000)]
        if state.episode:
            times.append(state.episode["last_ts"] + int(self.config.episode_gap_s * 1000))
        if state.parked and not state.parked["reported"]:
            times.append(state.parked["since"] + int(self.config.dwell_s * 1000))
        return min(times)

    def forgettable(self, state: VehicleState, now_ms: int) -> bool:
        """True when the vehicle has been silent long enough and nothing is pending."""
        idle = now_ms >= state.last_seen_ts + self.config.idle_state_s * 1000
        pending = state.episode is not None or (
            state.parked is not None and not state.parked["reported"]
        )
        return idle and not pending

    # -- speeding --------------------------------------------------------------------------

    def _speeding(self, vehicle_id: str, state: VehicleState, fix: Fix) -> list[Detection]:
        out: list[Detection] = []
        episode = state.episode
        if fix.segment < 0:
            return out
        limit = self._limit[fix.segment]
        excess = fix.speed_kmh - limit
        if excess > self.config.speed_tolerance_kmh:
            if episode is None:
                state.episode = episode = {"start_ts": fix.ts, "count": 0, "max_excess": -1.0}
            episode["count"] += 1
            episode["last_ts"] = fix.ts
            if excess > episode["max_excess"]:
                episode.update(
                    max_excess=excess,
                    at_ts=fix.ts,
                    lat=fix.lat,
                    lon=fix.lon,
                    segment=fix.segment,
                    speed=fix.speed_kmh,
                    limit=limit,
                )
        elif episode:
            out += self._close_episode(vehicle_id, state, fix.ts)
        return out

    def _close_episode(
        self, vehicle_id: str, state: VehicleState, evidence_ts: int
    ) -> list[Detection]:
        episode, state.episode = state.episode, None
        if not episode or episode["count"] < self.config.min_over_fixes:
            return []
        return [
            Detection(
                infraction_id=infraction_id(SPEEDING, vehicle_id, episode["start_ts"]),
                type=SPEEDING,
                vehicle_id=vehicle_id,
                event_ts=episode["at_ts"],
                evidence_ts=evidence_ts,
                lat=episode["lat"],
                lon=episode["lon"],
                measured=round(episode["speed"], 1),
                limit=episode["limit"],
                segment_id=self.net.segment_ids[episode["segment"]],
            )
        ]

    # -- red light -------------------------------------------------------------------------

    def _red_light(self, vehicle_id: str, state: VehicleState, fix: Fix) -> list[Detection]:
        prev = state.last
        if prev is None or fix.segment < 0:
            return []
        approach = prev["segment"]
        stop_at = self._stop_along[approach]
        dt_ms = fix.ts - prev["ts"]
        if math.isnan(stop_at) or dt_ms <= 0 or dt_ms > self.config.max_fix_gap_s * 1000:
            return []
        # A fix less than the tolerance past the line is not a crossing (GPS jitter of a car
        # waiting at the line). When the previous fix fell there, the crossing is judged
        # where the tolerance ends: else a run whose first fix past the line fell within it
        # went unseen, and a car that waited there through the red and left on green would
        # be dated back into the red.
        tolerance = self.config.stop_line_tolerance_m
        line = stop_at if prev["along_m"] < stop_at else stop_at + tolerance
        before = line - prev["along_m"]
        if before < 0:
            return []  # already past the line at the previous fix
        if fix.segment == approach:
            if fix.along_m < stop_at + tolerance:
                return []
            travelled = fix.along_m - prev["along_m"]
        elif self._leaves_junction(approach, fix.segment):
            travelled = (self._length[approach] - prev["along_m"]) + fix.along_m
        else:
            return []
        if travelled / (dt_ms / 1000) * 3.6 < self.config.red_light_min_speed_kmh:
            return []  # creeping: GPS noise around a stopped vehicle, not a crossing
        crossed_ms = prev["ts"] + dt_ms * (before / travelled)
        crossed_s = crossed_ms / 1000
        if int(self.net.signals.colour(approach, crossed_s)) != RED:
            return []
        return [
            Detection(
                infraction_id=infraction_id(RED_LIGHT, vehicle_id, fix.ts),
                type=RED_LIGHT,
                vehicle_id=vehicle_id,
                event_ts=round(crossed_ms),
                evidence_ts=fix.ts,
                lat=float(self.net.stop_lat[approach]),
                lon=float(self.net.stop_lon[approach]),
                measured=round(self._seconds_into_red(approach, crossed_s), 1),
                limit=0.0,
                segment_id=self.net.segment_ids[approach],
                intersection_id=self.net.intersection_ids[approach],
            )
        ]

    def _leaves_junction(self, approach: int, segment: int) -> bool:
        """True if ``segment`` leaves the junction ``approach`` ends at, or the one after it
        (short segments: one fix can skip a whole one)."""
        junction = self.net.to_node[approach]
        if self.net.from_node[segment] == junction:
            return self.net.to_node[segment] != self.net.from_node[approach]  # not a U-turn
        after = self.net.pack.segments_from(int(junction))
        return bool(np.any(self.net.to_node[after] == self.net.from_node[segment]))

    def _seconds_into_red(self, approach: int, t_s: float) -> float:
        table = self.net.signals
        in_cycle = (t_s - table.offset_s[approach]) % table.cycle_s[approach]
        return float((in_cycle - table.yellow_end_s[approach]) % table.cycle_s[approach])

    # -- illegal parking -------------------------------------------------------------------

    def _parking(self, vehicle_id: str, state: VehicleState, fix: Fix) -> list[Detection]:
        if fix.speed_kmh >= self.config.stationary_kmh or fix.zone < 0:
            state.parked = None
            return []
        parked = state.parked
        if (
            parked is None
            or parked["zone"] != fix.zone
            or math.hypot(fix.x - parked["x"], fix.y - parked["y"])
            > self.config.stationary_radius_m
        ):
            state.parked = {
                "since": fix.ts,
                "zone": fix.zone,
                "x": fix.x,
                "y": fix.y,
                "lat": fix.lat,
                "lon": fix.lon,
                "segment": fix.segment,  # -1: not matched yet
                "reported": False,
            }
            return []
        if parked.get("segment", -1) < 0 and fix.segment >= 0:
            parked["segment"] = fix.segment  # the stop's first fix was off the road
        return []  # still parked: the dwell timer (on_time) decides

    def _parking_detection(
        self, vehicle_id: str, parked: dict[str, Any], evidence_ts: int
    ) -> Detection:
        zone = self.net.zones[parked["zone"]]
        # A stop recorded before the segment was kept has no "segment": no segment id.
        segment = parked.get("segment", -1)
        return Detection(
            infraction_id=infraction_id(ILLEGAL_PARKING, vehicle_id, parked["since"]),
            type=ILLEGAL_PARKING,
            vehicle_id=vehicle_id,
            event_ts=parked["since"],
            evidence_ts=evidence_ts,
            lat=parked["lat"],
            lon=parked["lon"],
            measured=round((evidence_ts - parked["since"]) / 1000, 1),  # the dwell, in s
            limit=self.config.dwell_s,
            segment_id=self.net.segment_ids[segment] if segment >= 0 else None,
            zone_id=zone.id,
            parking_kind=zone.parking_kind,
        )
