"""The fleet: every vehicle's state as NumPy arrays, advanced one time step at a time.

A step (:meth:`Fleet.step`) is pure computation on arrays — no I/O, no clock: the
simulated time is a parameter. Per step, for all vehicles at once:

1. **leaders** — vehicles are sorted by (segment, lane, position); each one's leader is
   the next in that order, or, for the first vehicle of a lane, the last vehicle of the
   lane it will take on its next segment;
2. **stop lines** — the signal table (the city's single source of truth for phases) says
   which approaches are red or yellow; a vehicle that must stop treats its stop line as a
   standing obstacle. Yellow: go on only if the line is crossed well before red;
3. **car-following** — the Intelligent Driver Model gives each vehicle's acceleration
   towards its desired speed (the limit times a per-driver factor) given the nearest
   obstacle; the update never lets a vehicle advance past its leader or its stop line;
4. **junctions** — vehicles past the end of their segment enter the next one, whose
   successor is looked up in the next-hop table (free trips) or in the vehicle's explicit
   route (police units, scripted vehicles);
5. **events** — stop-line crossings (per intersection, for the sensors; on red, for the
   ground truth), arrivals, parking.

Behaviours: most drivers are law-abiding (desired speed below the limit, stop on red).
Speeders want 1.25–1.6 × the limit; red-light runners ignore signals; illegal parkers
regularly drive to a no-parking zone and stop there for minutes. On multi-lane segments a
vehicle held up by a slower leader overtakes when the next lane has room. Simplification,
on purpose: no yielding at unsignalised junctions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from casatwin import fleet as taxi_fleet
from casatwin.city.model import CityPack
from casatwin.city.routing import Router
from casatwin.city.signals import GREEN, RED, YELLOW
from casatwin.config import SimulatorSettings
from casatwin.simulator.kinematics import DriverModel
from casatwin.simulator.network import RoadNetwork
from casatwin.simulator.routes import HopTable, RouteStore

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

# Vehicle states
OFF, DRIVING, PARKED = 0, 1, 2
# Behaviours
LAW_ABIDING, SPEEDER, RED_LIGHT_RUNNER, ILLEGAL_PARKER, POLICE = 0, 1, 2, 3, 4
BEHAVIOURS = ("law_abiding", "speeder", "red_light_runner", "illegal_parker", "police")
# Police unit tasks
UNIT_AVAILABLE, UNIT_EN_ROUTE, UNIT_ON_SCENE, UNIT_RETURNING = 0, 1, 2, 3
UNIT_TASKS = ("available", "en_route", "on_scene", "returning")

SLOT_M = 14.0  # spacing of the initial placement slots along a lane
QUEUED_BELOW_MS = 1.0  # slower than this on a road counts as queued / waiting
YELLOW_GO_FRACTION = 0.9  # on yellow, go on only if the line is reached in 90 % of what is left
LAW_ABIDING_CAP = 0.99  # law-abiding drivers never exceed 99 % of the limit
ANTICIPATION_M = 25.0  # slow down for a lower limit ahead this far before the junction
ARRIVED_WITHIN_M = 1.5  # a vehicle this close to its goal, nearly stopped, has arrived
PARKING_DWELL_S = (150.0, 420.0)  # how long illegal parkers stay
MAX_DECEL = 9.0  # m/s², what tyres can do
LANE_CHANGE_SLOWER = 0.85  # overtake a leader slower than 85 % of one's desired speed
LANE_CHANGE_END_M = 20.0  # no lane changes this close to the end of a segment
LANE_CHANGE_MIN_MS = 3.0  # queue-hopping at walking pace is not worth modelling


@dataclass(frozen=True)
class FleetConfig:
    """Who drives: the size of the free fleet, the share of each violator kind, the seed."""

    taxis: int = 500
    seed: int = 42
    speeder_share: float = 0.03
    red_light_runner_share: float = 0.01
    illegal_parker_share: float = 0.01
    police: bool = True
    # Fleet indices held back for a scenario's scripted vehicles (off the road until placed).
    reserved: tuple[int, ...] = ()

    @classmethod
    def from_settings(cls, settings: SimulatorSettings, **overrides: object) -> FleetConfig:
        values: dict[str, object] = {
            "taxis": settings.taxis,
            "seed": settings.seed,
            "speeder_share": settings.speeder_share,
            "red_light_runner_share": settings.red_light_runner_share,
            "illegal_parker_share": settings.illegal_parker_share,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def validate(self) -> None:
        if not 0 <= self.taxis <= taxi_fleet.FLEET_SIZE:
            raise ValueError(f"taxis={self.taxis} is outside 0..{taxi_fleet.FLEET_SIZE}")
        shares = (self.speeder_share, self.red_light_runner_share, self.illegal_parker_share)
        if any(not 0 <= s <= 1 for s in shares) or sum(shares) > 1:
            raise ValueError("violator shares must be between 0 and 1 and add up to at most 1")


@dataclass(frozen=True)
class FleetEvent:
    """Something that happened to one vehicle during a step."""

    kind: str  # red_crossing, arrived, parked, unparked
    vehicle: int
    vehicle_id: str
    t_s: float
    segment: int
    offset_m: float
    speed_ms: float = 0.0
    intersection: int = -1
    tag: str | None = None  # the order (dispatch id) an arrival answers


@dataclass(frozen=True)
class UnitStatus:
    """Where a police unit is and what it is doing."""

    unit_id: str
    station_id: str
    task: str  # available, en_route, on_scene, returning
    segment: int
    segment_id: str
    offset_m: float
    lat: float
    lon: float
    speed_kmh: float
    tag: str | None


@dataclass
class StepCounters:
    """Tallies of the steps: per intersection since the sensors last read them
    (``crossings``, ``max_wait_s``), and running totals for the progress lines."""

    crossings: IntArray
    max_wait_s: FloatArray
    red_crossings: int = 0
    trips: int = 0
    steps: int = 0


@dataclass
class Fleet:
    """Vehicle arrays and the step. Build with :meth:`Fleet.create`."""

    net: RoadNetwork
    router: Router
    hops: HopTable
    model: DriverModel
    rng: np.random.Generator
    ids: list[str]
    kinds: list[str]
    behaviour: NDArray[np.int8]
    speed_factor: FloatArray
    state: NDArray[np.int8]
    seg: IntArray
    pos: FloatArray
    v: FloatArray
    lane: IntArray
    next_seg: IntArray
    next_lane: IntArray
    dest: IntArray  # slot in the hop table's destinations
    goal_seg: IntArray  # where to stop (police target, parking spot), or -1
    goal_pos: FloatArray
    goal_dwell_s: FloatArray  # how long to stay once there (inf: until told otherwise)
    park_until: FloatArray
    wait_s: FloatArray
    v0_override: FloatArray  # desired speed imposed by a script (m/s), NaN: none
    overtakes: BoolArray  # weaves past other vehicles (scripted violators)
    ignores_signals: BoolArray
    routes: RouteStore
    counters: StepCounters
    index: dict[str, int] = field(default_factory=dict)
    police_station: dict[int, int] = field(default_factory=dict)  # vehicle → station index
    unit_task: dict[int, int] = field(default_factory=dict)
    tags: dict[int, str | None] = field(default_factory=dict)
    events: list[FleetEvent] = field(default_factory=list)
    # illegal parkers alternate: a trip to a zone, then an ordinary trip
    parker_next_zone: BoolArray = field(init=False)
    # the rearmost vehicle of every (segment, lane), for those about to enter it
    _rear_pos: FloatArray = field(init=False)
    _rear_v: FloatArray = field(init=False)
    _rear_set: IntArray = field(init=False)
    _signalised: IntArray = field(init=False)  # segments that approach a signal

    def __post_init__(self) -> None:
        self.index = {vehicle_id: i for i, vehicle_id in enumerate(self.ids)}
        self.parker_next_zone = np.zeros(len(self.ids), dtype=bool)
        groups = self.net.n_segments * self.net.max_lanes
        self._rear_pos = np.full(groups, np.inf)
        self._rear_v = np.zeros(groups)
        self._rear_set = np.empty(0, dtype=np.int64)
        self._signalised = np.flatnonzero(self.net.has_signal)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def create(cls, pack: CityPack, config: FleetConfig, model: DriverModel | None = None) -> Fleet:
        config.validate()
        rng = np.random.default_rng(config.seed)
        net = RoadNetwork.from_pack(pack)
        router = Router(pack)
        station_nodes = [pack.node_index[s.node] for s in pack.police_stations]
        spot_nodes = [int(pack.seg_from[s.segment]) for s in net.parking_spots]
        hops = HopTable.build(router, rng, must_include=station_nodes + spot_nodes)

        taxi_slots = sorted(set(range(config.taxis)) | set(config.reserved))
        ids = [taxi_fleet.taxi_id(i) for i in taxi_slots]
        kinds = [taxi_fleet.taxi_kind(i) for i in taxi_slots]
        police = []
        if config.police:
            for s, station in enumerate(pack.police_stations):
                police += [(unit, s) for unit in station.units]
        ids += [unit for unit, _ in police]
        kinds += ["police"] * len(police)
        n = len(ids)
        reserved = np.isin(np.array(taxi_slots, dtype=np.int64), list(config.reserved))
        reserved = np.concatenate([reserved, np.zeros(len(police), dtype=bool)])

        behaviour = np.full(n, LAW_ABIDING, dtype=np.int8)
        draw = rng.random(n)
        edges = np.cumsum(
            [config.speeder_share, config.red_light_runner_share, config.illegal_parker_share]
        )
        free_taxi = ~reserved & (np.arange(n) < len(taxi_slots))
        for b, (low, high) in zip(
            (SPEEDER, RED_LIGHT_RUNNER, ILLEGAL_PARKER),
            zip(np.concatenate([[0.0], edges[:-1]]), edges),
        ):
            behaviour[free_taxi & (draw >= low) & (draw < high)] = b
        behaviour[len(taxi_slots) :] = POLICE
        factor = np.clip(rng.normal(0.9, 0.05, n), 0.75, 0.97)
        speeders = behaviour == SPEEDER
        factor[speeders] = rng.uniform(1.25, 1.6, int(speeders.sum()))
        factor[behaviour == POLICE] = 0.95

        fleet = cls(
            net=net,
            router=router,
            hops=hops,
            model=model or DriverModel(),
            rng=rng,
            ids=ids,
            kinds=kinds,
            behaviour=behaviour,
            speed_factor=factor,
            state=np.full(n, OFF, dtype=np.int8),
            seg=np.zeros(n, dtype=np.int64),
            pos=np.zeros(n),
            v=np.zeros(n),
            lane=np.zeros(n, dtype=np.int64),
            next_seg=np.full(n, -1, dtype=np.int64),
            next_lane=np.zeros(n, dtype=np.int64),
            dest=np.zeros(n, dtype=np.int64),
            goal_seg=np.full(n, -1, dtype=np.int64),
            goal_pos=np.zeros(n),
            goal_dwell_s=np.zeros(n),
            park_until=np.full(n, np.inf),
            wait_s=np.zeros(n),
            v0_override=np.full(n, np.nan),
            overtakes=np.zeros(n, dtype=bool),
            ignores_signals=behaviour == RED_LIGHT_RUNNER,
            routes=RouteStore(n),
            counters=StepCounters(
                np.zeros(len(pack.intersections), dtype=np.int64),
                np.zeros(len(pack.intersections)),
            ),
        )
        fleet._place_free_taxis(np.flatnonzero(free_taxi))
        fleet._station_police(police, len(taxi_slots))
        return fleet

    def _place_free_taxis(self, vehicles: IntArray) -> None:
        """Spread taxis over the lanes of the city, at most one per slot, moving."""
        net = self.net
        per_lane = np.maximum((net.length_m // SLOT_M).astype(np.int64), 1)
        slots = per_lane * net.lanes
        slot_seg = np.repeat(np.arange(net.n_segments), slots)
        first = np.concatenate([[0], np.cumsum(slots)[:-1]])
        k = np.arange(len(slot_seg)) - first[slot_seg]
        chosen = self.rng.choice(
            len(slot_seg), size=len(vehicles), replace=len(vehicles) > len(slot_seg)
        )
        seg = slot_seg[chosen]
        self.seg[vehicles] = seg
        self.lane[vehicles] = k[chosen] % net.lanes[seg]
        self.pos[vehicles] = (k[chosen] // net.lanes[seg] + 0.5) * SLOT_M
        self.pos[vehicles] = np.minimum(self.pos[vehicles], net.length_m[seg] - 0.5)
        self.v[vehicles] = 0.5 * net.limit_ms[seg] * self.speed_factor[vehicles]
        self.state[vehicles] = DRIVING
        self.dest[vehicles] = self.rng.integers(0, len(self.hops), len(vehicles))
        self.parker_next_zone[vehicles] = self.behaviour[vehicles] == ILLEGAL_PARKER
        self._plan(vehicles)

    def _station_police(self, police: list[tuple[str, int]], first: int) -> None:
        for k, (_, station) in enumerate(police):
            vehicle = first + k
            self.police_station[vehicle] = station
            self.unit_task[vehicle] = UNIT_AVAILABLE
            self.tags[vehicle] = None
            seg, offset = self.net.pack.station_place(station)
            self._park_at(vehicle, seg, offset, np.inf, t_s=0.0, announce=False)

    # -- the step ------------------------------------------------------------------------

    def step(self, t_s: float, dt: float) -> None:
        """Advance every vehicle from time ``t_s`` to ``t_s + dt`` (seconds since the epoch:
        signal phases are absolute)."""
        net, model = self.net, self.model
        self.counters.steps += 1
        self._unpark(t_s)
        driving = self.state == DRIVING
        pos, v = self.pos, self.v
        limit = net.limit_ms[self.seg]
        v0 = self._desired_speed(limit)

        gap, lead_v = self._leaders(driving, v0)
        gap[self.overtakes] = np.inf
        stop_gap = self._stop_lines(driving, t_s, dt)
        stop_gap = np.minimum(stop_gap, self._goal_gaps(driving))

        accel = np.minimum(
            model.acceleration(v, v0, gap, v - lead_v),
            model.acceleration(v, v0, stop_gap + model.min_gap_m - 0.5, v),
        )
        accel = np.maximum(accel, -MAX_DECEL)
        room = np.minimum(gap, stop_gap) - model.safety_margin_m
        distance, v_new = model.advance(v, accel, room, dt)
        lawful = (self.behaviour != SPEEDER) & np.isnan(self.v0_override)
        v_new = np.where(lawful, np.minimum(v_new, LAW_ABIDING_CAP * limit), v_new)
        distance[~driving] = 0.0
        v_new[~driving] = 0.0

        pos_new = pos + distance
        self._record_stop_line_crossings(driving, pos_new, distance, t_s, dt)
        self.v = v_new
        self.pos = pos_new
        slow = driving & (v_new < QUEUED_BELOW_MS)
        self.wait_s[slow] += dt
        self._cross_junctions(driving, t_s + dt)
        # onto a slower road: the anticipation above nearly always did it; make it certain
        self.v = np.where(
            lawful, np.minimum(self.v, LAW_ABIDING_CAP * net.limit_ms[self.seg]), self.v
        )
        self._arrive(t_s + dt)

    def _desired_speed(self, limit: FloatArray) -> FloatArray:
        """The limit times each driver's factor (or a script's speed), lowered ahead of a
        junction into a slower road so that the new limit is met on arrival."""
        net, pos, v, nxt = self.net, self.pos, self.v, self.next_seg
        scripted = ~np.isnan(self.v0_override)
        v0 = np.where(scripted, self.v0_override, limit * self.speed_factor)
        ahead = np.flatnonzero((nxt >= 0) & (net.limit_ms[np.maximum(nxt, 0)] < limit) & ~scripted)
        if len(ahead):
            v0_next = net.limit_ms[nxt[ahead]] * self.speed_factor[ahead]
            room = net.length_m[self.seg[ahead]] - pos[ahead]
            brake = (v[ahead] ** 2 - v0_next**2) / (2 * self.model.comfort_decel)
            near = room < np.maximum(brake, 0) + ANTICIPATION_M
            v0[ahead[near]] = np.minimum(v0[ahead[near]], v0_next[near])
        return np.maximum(v0, 0.1)

    def _leaders(self, driving: BoolArray, v0: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Bumper-to-bumper gap to, and speed of, each vehicle's leader (inf, 0: none),
        after the lane changes of vehicles held up by a slower leader."""
        n = len(self.seg)
        lanes = self.net.max_lanes
        group = self.seg * lanes + self.lane
        key = np.where(driving, group * 1e5 + self.pos, np.inf)
        order = np.argsort(key, kind="stable")[: int(driving.sum())]
        g = group[order]
        same = g[:-1] == g[1:]
        follower, leader = order[:-1][same], order[1:][same]
        gap = np.full(n, np.inf)
        lead_v = np.zeros(n)
        length = self.model.vehicle_length_m
        gap[follower] = self.pos[leader] - self.pos[follower] - length
        lead_v[follower] = self.v[leader]
        if len(order) == 0:
            return gap, lead_v
        # The rearmost vehicle of every lane, for the vehicles about to enter that lane.
        first = np.concatenate([[True], ~same])
        self._rear_pos[self._rear_set] = np.inf
        self._rear_set = g[first]
        self._rear_pos[self._rear_set] = self.pos[order[first]]
        self._rear_v[self._rear_set] = self.v[order[first]]
        last = np.concatenate([~same, [True]])
        tail = order[last]
        tail = tail[self.next_seg[tail] >= 0]
        into = self.next_seg[tail] * lanes + self.next_lane[tail]
        gap[tail] = (
            self.net.length_m[self.seg[tail]] - self.pos[tail] + self._rear_pos[into] - length
        )
        lead_v[tail] = self._rear_v[into]
        self._change_lanes(driving, order, key[order], gap, lead_v, v0)
        return gap, lead_v

    def _change_lanes(
        self,
        driving: BoolArray,
        order: IntArray,
        sorted_key: FloatArray,
        gap: FloatArray,
        lead_v: FloatArray,
        v0: FloatArray,
    ) -> None:
        """Overtaking: a vehicle held up by a slower leader moves to the next lane when it
        gains room there and the gaps are safe — ahead, its own following distance;
        behind, a second of the follower's speed (the follower sees it from the next step).
        Updates ``lane``, ``gap`` and ``lead_v`` of the vehicles that change."""
        net, model, v, pos = self.net, self.model, self.v, self.pos
        lanes = net.lanes[self.seg]
        held_up = driving & (lanes > 1) & ~self.overtakes & (v > LANE_CHANGE_MIN_MS)
        held_up &= (gap < v * model.headway_s * 2 + 10.0) & (lead_v < LANE_CHANGE_SLOWER * v0)
        held_up &= pos < net.length_m[self.seg] - LANE_CHANGE_END_M
        c = np.flatnonzero(held_up)
        if len(c) == 0:
            return
        max_lanes = net.max_lanes
        group = self.seg * max_lanes + self.lane
        target = np.where(self.lane[c] + 1 < lanes[c], self.lane[c] + 1, self.lane[c] - 1)
        target_group = self.seg[c] * max_lanes + target
        j = np.searchsorted(sorted_key, target_group * 1e5 + pos[c])
        ahead = order[np.minimum(j, len(order) - 1)]
        behind = order[np.maximum(j - 1, 0)]
        has_ahead = (j < len(order)) & (group[ahead] == target_group)
        has_behind = (j > 0) & (group[behind] == target_group)
        length = model.vehicle_length_m
        gap_ahead = np.where(has_ahead, pos[ahead] - pos[c] - length, np.inf)
        gap_behind = np.where(has_behind, pos[c] - pos[behind] - length, np.inf)
        v_ahead = np.where(has_ahead, v[ahead], np.inf)
        v_behind = np.where(has_behind, v[behind], 0.0)
        ok = (gap_ahead > gap[c] + 5.0) & (v_ahead > lead_v[c] + 1.0)
        ok &= gap_ahead > model.min_gap_m + 0.6 * v[c]
        ok &= gap_behind > model.min_gap_m + 1.0 * v_behind
        # two vehicles moving into the same stretch of a lane at once: the first one only
        k = np.flatnonzero(ok)
        k = k[np.argsort(target_group[k] * 1e5 + pos[c[k]], kind="stable")]
        clash = (np.diff(target_group[k]) == 0) & (
            np.diff(pos[c[k]]) < length + model.min_gap_m + 2.0
        )
        k = k[np.concatenate([[True], ~clash])] if len(k) else k
        go = c[k]
        self.lane[go] = target[k]
        gap[go] = gap_ahead[k]
        lead_v[go] = np.where(has_ahead[k], v_ahead[k], 0.0)

    def _stop_lines(self, driving: BoolArray, t_s: float, dt: float) -> FloatArray:
        """Distance to the stop line each vehicle must stop at (inf: none)."""
        net = self.net
        colour_now, colour_end, until_red = self._signal_state(t_s, dt)
        obey = driving & ~self.ignores_signals
        seg, pos, v = self.seg, self.pos, self.v
        stop_gap = np.full(len(seg), np.inf)

        here = np.flatnonzero(obey & net.has_signal[seg] & (pos < net.stop_m[seg]))
        d = net.stop_m[seg[here]] - pos[here]
        must = _must_stop(colour_now, colour_end, until_red, seg[here], d, v[here])
        stop_gap[here[must]] = d[must]

        nxt = self.next_seg
        ahead = obey & np.isinf(stop_gap) & (nxt >= 0)
        ahead[ahead] = net.has_signal[nxt[ahead]]
        ahead = np.flatnonzero(ahead)
        d = net.length_m[seg[ahead]] - pos[ahead] + net.stop_m[nxt[ahead]]
        must = _must_stop(colour_now, colour_end, until_red, nxt[ahead], d, v[ahead])
        stop_gap[ahead[must]] = d[must]
        return stop_gap

    def _signal_state(self, t_s: float, dt: float) -> tuple[IntArray, IntArray, FloatArray]:
        """Colour of every segment now and at the end of the step, and time until red."""
        table, signalised = self.net.signals, self._signalised
        now = np.full(self.net.n_segments, GREEN, dtype=np.int64)
        end = now.copy()
        now[signalised] = table.colour(signalised, t_s)
        end[signalised] = table.colour(signalised, t_s + dt)
        t_in_cycle = (t_s - table.offset_s) % table.cycle_s
        until_red = (table.yellow_end_s - t_in_cycle) % table.cycle_s
        return now, end, until_red

    def _goal_gaps(self, driving: BoolArray) -> FloatArray:
        """Distance to where a vehicle must stop because its trip ends there."""
        gap = np.full(len(self.seg), np.inf)
        ends = driving & ((self.goal_seg >= 0) | (self.next_seg < 0))
        if not ends.any():
            return gap
        idx = np.flatnonzero(ends)
        seg, nxt, goal = self.seg[idx], self.next_seg[idx], self.goal_seg[idx]
        remaining = self.net.length_m[seg] - self.pos[idx]
        g = np.where(nxt < 0, remaining, np.inf)  # nowhere to go: the end of the segment
        g = np.where(goal == seg, self.goal_pos[idx] - self.pos[idx], g)
        g = np.where((goal == nxt) & (goal >= 0), remaining + self.goal_pos[idx], g)
        gap[idx] = np.maximum(g, 0.0)
        return gap

    def _record_stop_line_crossings(
        self, driving: BoolArray, pos_new: FloatArray, distance: FloatArray, t_s: float, dt: float
    ) -> None:
        net = self.net
        stop = net.stop_m[self.seg]
        crossed = np.flatnonzero(
            driving & net.has_signal[self.seg] & (self.pos < stop) & (pos_new >= stop)
        )
        if len(crossed) == 0:
            return
        seg = self.seg[crossed]
        intersection = net.approach_of[seg]
        self.counters.crossings += np.bincount(intersection, minlength=len(self.counters.crossings))
        np.maximum.at(self.counters.max_wait_s, intersection, self.wait_s[crossed])
        fraction = (stop[crossed] - self.pos[crossed]) / np.maximum(distance[crossed], 1e-9)
        t_cross = t_s + fraction * dt
        red = net.signals.colour(seg, t_cross) == RED
        self.counters.red_crossings += int(red.sum())
        for k in np.flatnonzero(red):
            vehicle = int(crossed[k])
            self.events.append(
                FleetEvent(
                    "red_crossing",
                    vehicle,
                    self.ids[vehicle],
                    float(t_cross[k]),
                    int(seg[k]),
                    float(stop[vehicle]),
                    float(self.v[vehicle]),
                    int(intersection[k]),
                )
            )

    def _cross_junctions(self, driving: BoolArray, t_s: float) -> None:
        """Move vehicles that ran past the end of their segment onto the next one."""
        length = self.net.length_m
        over = np.flatnonzero(driving & (self.pos >= length[self.seg]))
        for _ in range(4):  # a step rarely spans more than one junction
            over = over[self.next_seg[over] >= 0]
            if len(over) == 0:
                break
            self.pos[over] -= length[self.seg[over]]
            self._enter(over, t_s)
            over = over[self.pos[over] >= length[self.seg[over]]]
        over = np.flatnonzero(driving & (self.pos > length[self.seg]))
        self.pos[over] = length[self.seg[over]]  # the end of a route: wait there

    def _enter(self, vehicles: IntArray, t_s: float) -> None:
        self.seg[vehicles] = self.next_seg[vehicles]
        self.lane[vehicles] = self.next_lane[vehicles]
        self.wait_s[vehicles] = 0.0
        routed = vehicles[self.routes.active(vehicles)]
        self.routes.advance(routed)
        self._plan(vehicles)

    def _plan(self, vehicles: IntArray) -> None:
        """Choose the segment after the current one (and the lane on it), in this order:
        an explicit route; a goal (parking spot, police target); the free trip's next hop,
        starting a new trip when the last one ends here."""
        if len(vehicles) == 0:
            return
        pack, hops = self.net.pack, self.hops
        seg = self.seg[vehicles]
        node = pack.seg_to[seg]
        nxt = np.full(len(vehicles), -1, dtype=np.int64)
        decided = np.zeros(len(vehicles), dtype=bool)

        routed = np.flatnonzero(self.routes.active(vehicles))
        if len(routed):
            nxt[routed] = self.routes.next_after_current(vehicles[routed])
            at_goal = self.goal_seg[vehicles[routed]] == seg[routed]
            decided[routed] = (nxt[routed] >= 0) | at_goal
            for k in routed[(nxt[routed] < 0) & ~at_goal]:  # route done: free traffic
                self.routes.clear(int(vehicles[k]))

        trip_over = ~decided & (self.goal_seg[vehicles] < 0)
        trip_over[trip_over] = hops.destinations[self.dest[vehicles[trip_over]]] == node[trip_over]
        if trip_over.any():
            self._new_trip(vehicles[trip_over])  # may send an illegal parker to a zone

        goal = self.goal_seg[vehicles]
        towards = np.flatnonzero(~decided & (goal >= 0))
        if len(towards):
            g = goal[towards]
            gate = pack.seg_from[g]  # the node where the goal segment starts
            self.dest[vehicles[towards]] = hops.dest_slot[gate]
            hop = hops.next_segment(hops.dest_slot[gate], node[towards])
            nxt[towards] = np.where(g == seg[towards], -1, np.where(gate == node[towards], g, hop))
            decided[towards] = True

        free = np.flatnonzero(~decided)
        for _ in range(8):  # a trip drawn to end where it starts is drawn again
            nxt[free] = hops.next_segment(self.dest[vehicles[free]], node[free])
            again = free[nxt[free] < 0]
            if len(again) == 0:
                break
            self.dest[vehicles[again]] = self.rng.integers(0, len(hops), len(again))

        self.next_seg[vehicles] = nxt
        lanes_next = self.net.lanes[np.maximum(nxt, 0)]
        keep = (lanes_next == self.net.lanes[seg]) | (nxt < 0)
        drawn = self.rng.integers(0, lanes_next)
        kept = np.minimum(self.lane[vehicles], lanes_next - 1)
        self.next_lane[vehicles] = np.where(keep, kept, drawn)

    def _new_trip(self, vehicles: IntArray) -> None:
        """Chain a new trip: a random destination, or for an illegal parker every other
        time, a parking spot in a no-parking zone."""
        self.counters.trips += len(vehicles)
        self.dest[vehicles] = self.rng.integers(0, len(self.hops), len(vehicles))
        spots = self.net.parking_spots
        to_zone = vehicles[self.parker_next_zone[vehicles]] if spots else vehicles[:0]
        picks = self.rng.integers(0, len(spots) or 1, len(to_zone))
        dwell = self.rng.uniform(*PARKING_DWELL_S, len(to_zone))
        for vehicle, pick, stay in zip(to_zone, picks, dwell):
            self.goal_seg[vehicle] = spots[pick].segment
            self.goal_pos[vehicle] = spots[pick].offset_m
            self.goal_dwell_s[vehicle] = stay
        is_parker = self.behaviour[vehicles] == ILLEGAL_PARKER
        self.parker_next_zone[vehicles] = is_parker & ~self.parker_next_zone[vehicles]

    def _arrive(self, t_s: float) -> None:
        """Vehicles that reached their goal stop there (park, or wait on scene)."""
        # A goal at the very start of the next segment is reached from the end of this one.
        at_gate = (self.state == DRIVING) & (self.goal_seg == self.next_seg) & (self.goal_seg >= 0)
        at_gate &= self.net.length_m[self.seg] - self.pos + self.goal_pos <= ARRIVED_WITHIN_M
        gate = np.flatnonzero(at_gate & (self.v < 0.5))
        if len(gate):
            self._enter(gate, t_s)
            self.pos[gate] = self.goal_pos[gate]
        candidates = (self.state == DRIVING) & (self.goal_seg == self.seg)
        candidates &= self.pos >= self.goal_pos - ARRIVED_WITHIN_M
        candidates &= self.v < 0.5
        for vehicle in np.flatnonzero(candidates).tolist():
            seg, offset = int(self.seg[vehicle]), float(self.pos[vehicle])
            tag = self.tags.get(vehicle)
            self._park_at(vehicle, seg, offset, t_s + self.goal_dwell_s[vehicle], t_s)
            self.events.append(
                FleetEvent("arrived", vehicle, self.ids[vehicle], t_s, seg, offset, tag=tag)
            )
            task = self.unit_task.get(vehicle)
            if task == UNIT_EN_ROUTE:
                self.unit_task[vehicle] = UNIT_ON_SCENE
            elif task == UNIT_RETURNING:
                self.unit_task[vehicle] = UNIT_AVAILABLE
                self.tags[vehicle] = None

    def _unpark(self, t_s: float) -> None:
        due = np.flatnonzero((self.state == PARKED) & (self.park_until <= t_s))
        for vehicle in due:
            self.events.append(
                FleetEvent(
                    "unparked",
                    int(vehicle),
                    self.ids[vehicle],
                    t_s,
                    int(self.seg[vehicle]),
                    float(self.pos[vehicle]),
                )
            )
        if len(due) == 0:
            return
        self.state[due] = DRIVING
        self.park_until[due] = np.inf
        self.goal_seg[due] = -1
        self.lane[due] = self.rng.integers(0, self.net.lanes[self.seg[due]])
        self._plan(due)

    def _park_at(
        self,
        vehicle: int,
        segment: int,
        offset_m: float,
        until_s: float,
        t_s: float,
        announce: bool = True,
    ) -> None:
        self.state[vehicle] = PARKED
        self.seg[vehicle] = segment
        self.pos[vehicle] = offset_m
        self.v[vehicle] = 0.0
        self.wait_s[vehicle] = 0.0
        self.park_until[vehicle] = until_s
        self.routes.clear(vehicle)
        self.goal_seg[vehicle] = -1
        self.next_seg[vehicle] = -1
        if announce:
            self.events.append(
                FleetEvent("parked", vehicle, self.ids[vehicle], t_s, segment, offset_m)
            )

    # -- reading the state ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def on_road(self) -> BoolArray:
        """Vehicles that exist for the outside world (driving or parked, not held back)."""
        return self.state != OFF

    def positions(self, vehicles: IntArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(lat, lon, heading in degrees) of some vehicles."""
        seg = self.seg[vehicles]
        lat, lon = self.net.latlon(seg, self.pos[vehicles])
        return lat, lon, self.net.heading_deg[seg]

    def census(self) -> dict[str, int]:
        driving = self.state == DRIVING
        return {
            "moving": int((driving & (self.v >= QUEUED_BELOW_MS)).sum()),
            "queued": int((driving & (self.v < QUEUED_BELOW_MS)).sum()),
            "parked": int((self.state == PARKED).sum()),
        }

    def take_events(self) -> list[FleetEvent]:
        events, self.events = self.events, []
        return events

    # -- scripts: place and release vehicles ---------------------------------------------

    def place(
        self,
        vehicle: int,
        segment: int,
        offset_m: float,
        speed_ms: float,
        route: Sequence[int] | None = None,
        v0_override: float = math.nan,
        overtakes: bool = False,
        ignores_signals: bool = False,
        goal: tuple[int, float, float] | None = None,
    ) -> None:
        """Put ``vehicle`` on the road at a place, driving (along ``route`` if given, whose
        first segment must be ``segment``; free trips afterwards). With a ``goal``
        (segment, offset, dwell seconds) it stops and parks there."""
        self.state[vehicle] = DRIVING
        self.seg[vehicle] = segment
        self.pos[vehicle] = offset_m
        self.v[vehicle] = speed_ms
        self.lane[vehicle] = 0
        self.wait_s[vehicle] = 0.0
        self.park_until[vehicle] = np.inf
        self.goal_seg[vehicle], self.goal_pos[vehicle], self.goal_dwell_s[vehicle] = (
            goal if goal is not None else (-1, 0.0, 0.0)
        )
        self.v0_override[vehicle] = v0_override
        self.overtakes[vehicle] = overtakes
        self.ignores_signals[vehicle] = ignores_signals
        if route is not None and len(route) > 1:
            self.routes.assign(vehicle, np.asarray(route, dtype=np.int64))
        else:
            self.routes.clear(vehicle)
        self.dest[vehicle] = self.rng.integers(0, len(self.hops))
        self._plan(np.array([vehicle]))

    def park(self, vehicle: int, segment: int, offset_m: float, t_s: float, until_s: float) -> None:
        """Park ``vehicle`` at a place from ``t_s`` until ``until_s``; then it drives on as
        free traffic."""
        self._park_at(vehicle, segment, offset_m, until_s, t_s)

    def release(self, vehicle: int) -> None:
        """End a script's hold on a vehicle: it drives on as a law-abiding taxi (a parked one
        drives off at the next step)."""
        self.v0_override[vehicle] = math.nan
        self.overtakes[vehicle] = False
        self.ignores_signals[vehicle] = self.behaviour[vehicle] == RED_LIGHT_RUNNER
        if self.state[vehicle] == PARKED:
            self.park_until[vehicle] = -np.inf

    def parked(self, vehicle: int) -> bool:
        return bool(self.state[vehicle] == PARKED)

    # -- police units --------------------------------------------------------------------

    def units(self) -> list[UnitStatus]:
        return [self.unit_status(self.ids[v]) for v in self.police_station]

    def unit_status(self, unit_id: str) -> UnitStatus:
        vehicle = self._unit(unit_id)
        seg = int(self.seg[vehicle])
        lat, lon = self.net.latlon(np.array([seg]), np.array([self.pos[vehicle]]))
        return UnitStatus(
            unit_id=unit_id,
            station_id=self.net.pack.police_stations[self.police_station[vehicle]].id,
            task=UNIT_TASKS[self.unit_task[vehicle]],
            segment=seg,
            segment_id=self.net.pack.segment_ids[seg],
            offset_m=float(self.pos[vehicle]),
            lat=float(lat[0]),
            lon=float(lon[0]),
            speed_kmh=float(self.v[vehicle] * 3.6),
            tag=self.tags[vehicle],
        )

    def dispatch(
        self,
        unit_id: str,
        route: Sequence[int] | Sequence[str],
        target_offset_m: float | None = None,
        tag: str | None = None,
    ) -> None:
        """Send a police unit along ``route`` (segment indices or ids) to the point
        ``target_offset_m`` along its last segment (default: its end).

        The route starts with the unit's current segment (as :func:`casatwin.dispatch.
        nearest.choose` returns it) or with a segment leaving the end of it. An
        ``arrived`` event carrying ``tag`` is emitted when the unit gets there; the unit
        then waits on scene until it is dispatched again or sent back to its station.
        """
        self._drive_unit(self._unit(unit_id), route, target_offset_m, tag, UNIT_EN_ROUTE)

    def return_to_station(self, unit_id: str, tag: str | None = None) -> None:
        """Send a unit back to its station along the quickest path."""
        vehicle = self._unit(unit_id)
        seg, offset = self.net.pack.station_place(self.police_station[vehicle])
        here = int(self.seg[vehicle])
        if here == seg:
            self._drive_unit(vehicle, [here], offset, tag, UNIT_RETURNING)
            return
        pack = self.net.pack
        middle = self.router.path(int(pack.seg_to[here]), int(pack.seg_from[seg]))
        route = [here, *middle.tolist(), seg]
        self._drive_unit(vehicle, route, offset, tag, UNIT_RETURNING)

    def _unit(self, unit_id: str) -> int:
        vehicle = self.index.get(unit_id)
        if vehicle is None or vehicle not in self.police_station:
            raise KeyError(f"no police unit {unit_id!r} in the simulation")
        return vehicle

    def _drive_unit(
        self,
        vehicle: int,
        route: Sequence[int] | Sequence[str],
        target_offset_m: float | None,
        tag: str | None,
        task: int,
    ) -> None:
        pack = self.net.pack
        segments = [pack.segment_index[s] if isinstance(s, str) else int(s) for s in route]
        if not segments:
            raise ValueError("a route needs at least one segment")
        here = int(self.seg[vehicle])
        if segments[0] != here:
            if pack.seg_from[segments[0]] not in (pack.seg_to[here], pack.seg_from[here]):
                raise ValueError(
                    f"route starts at segment {pack.segment_ids[segments[0]]}, which does not "
                    f"continue from the unit's segment {pack.segment_ids[here]}"
                )
            if pack.seg_from[segments[0]] == pack.seg_to[here]:
                segments = [here, *segments]
        for a, b in itertools.pairwise(segments):
            if pack.seg_to[a] != pack.seg_from[b]:
                raise ValueError(
                    f"route is broken between segments {pack.segment_ids[a]} and "
                    f"{pack.segment_ids[b]}"
                )
        last = segments[-1]
        target = self.net.length_m[last] if target_offset_m is None else target_offset_m
        target = float(np.clip(target, 0.0, self.net.length_m[last]))
        start_offset = float(self.pos[vehicle]) if segments[0] == here else 0.0
        if len(segments) == 1 and target < start_offset:
            target = start_offset  # already past the point: stop where it is
        self.unit_task[vehicle] = task
        self.tags[vehicle] = tag
        self.place(
            vehicle,
            segments[0],
            start_offset,
            float(self.v[vehicle]),
            route=segments,
            goal=(last, target, np.inf),
        )


def _must_stop(
    colour_now: IntArray,
    colour_end: IntArray,
    until_red: FloatArray,
    segments: IntArray,
    distance_m: FloatArray,
    v: FloatArray,
) -> BoolArray:
    """Stop for red, and for yellow unless the line is reached well before red."""
    now, end = colour_now[segments], colour_end[segments]
    red = (now == RED) | (end == RED)
    amber = (now == YELLOW) | (end == YELLOW)
    can_go = distance_m <= YELLOW_GO_FRACTION * v * until_red[segments]
    return red | (amber & ~can_go)
