"""Scenario files: scripted violators at named places and times, plus normal traffic.

The format (YAML) is documented in ``docs/scenarios.md`` and is a stable contract: the
end-to-end tests of the processor, dispatch and dashboard play these files. Parsing keeps
the line of every key so that a mistake is reported as ``FILE:LINE: what is wrong``.

:func:`load` reads and checks a file against the format; :func:`resolve` checks it
against a city (roads, intersections, zones must exist) and turns each event into a plan;
:class:`ScenarioPlayer` carries the plans out on a fleet as simulated time passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import yaml

from casatwin import fleet as taxi_fleet
from casatwin.city.geometry import angle_diff_deg, bearing_deg, haversine_m
from casatwin.city.model import CityPack
from casatwin.city.signals import RED
from casatwin.errors import UserError
from casatwin.simulator.network import RoadNetwork
from casatwin.simulator.traffic import Fleet

EVENT_TYPES = ("speeding", "red_light", "illegal_parking", "surge")
TRAFFIC_KEYS = (
    "taxis",
    "seed",
    "speeder_share",
    "red_light_runner_share",
    "illegal_parker_share",
)
TOP_KEYS = ("name", "description", "city", "seed", "duration_s", "traffic", "events")
EVENT_KEYS = {
    "speeding": {
        "required": ("road", "speed_kmh", "duration_s"),
        "optional": ("from", "towards", "ignore_signals"),
    },
    "red_light": {"required": ("intersection",), "optional": ("approach", "speed_kmh")},
    "illegal_parking": {"required": ("zone", "duration_s"), "optional": ()},
    "surge": {
        "required": ("place", "vehicles"),
        "optional": ("from_m", "spread_s", "goals"),
    },
}
SURGE_DEFAULTS = {"from_m": 2500.0, "spread_s": 120.0, "goals": 6}
COMMON_EVENT_KEYS = ("type", "vehicle", "at")
TAXI_ID = re.compile(r"^TX-(\d{5})$")
RUN_UP_S = 6.0  # how long a red-light runner drives before its stop line
INTO_RED_S = 4.0  # how far into the red phase it crosses (at most half the red)
RED_MARGIN_S = 3.0  # and at least this long before the red ends


class ScenarioError(UserError):
    """A scenario file that cannot be played; the message names the file, line and field."""


# -- reading -------------------------------------------------------------------------------


class _Located(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers its line and the line of each key."""

    line: int = 0
    lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    out = _Located()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


@dataclass(frozen=True)
class ScriptedEvent:
    """One event of the file, checked against the format (not yet against a city)."""

    type: str
    vehicle_id: str
    at_s: float
    line: int
    fields: dict[str, Any]
    lines: dict[str, int]
    crowd: tuple[str, ...] = ()  # a surge's taxis besides ``vehicle_id``


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str = ""
    city: str | None = None
    seed: int | None = None
    duration_s: float | None = None
    traffic: dict[str, Any] = field(default_factory=dict)
    events: tuple[ScriptedEvent, ...] = ()

    @property
    def vehicle_ids(self) -> list[str]:
        return [v for e in self.events for v in (e.vehicle_id, *e.crowd)]

    def fleet_indices(self) -> tuple[int, ...]:
        return tuple(taxi_fleet.taxi_index(v) for v in self.vehicle_ids)


def load(path: Path | str) -> Scenario:
    """Read and check a scenario file; :class:`ScenarioError` names what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader with line numbers
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(f"{where}: not valid YAML: {problem}") from None
    return parse(raw, path)


def parse(raw: Any, path: Path) -> Scenario:
    if not isinstance(raw, _Located):
        raise ScenarioError(f"{path}: a scenario is a mapping with an `events` list")
    check = _Checker(path)
    check.keys(raw, TOP_KEYS, "scenario")
    traffic = raw.get("traffic") or {}
    if traffic:
        if not isinstance(traffic, _Located):
            check.fail(raw.lines["traffic"], "traffic", "should be a mapping")
        check.keys(traffic, TRAFFIC_KEYS, "traffic")
        for key in ("taxis", "seed"):
            if key in traffic:
                check.integer(traffic, key, 0, taxi_fleet.FLEET_SIZE if key == "taxis" else None)
        for key in TRAFFIC_KEYS[2:]:
            if key in traffic:
                check.number(traffic, key, 0.0, 1.0)
    events_raw = raw.get("events")
    if not isinstance(events_raw, list) or not events_raw:
        check.fail(raw.lines.get("events", raw.line), "events", "should be a non-empty list")
    events = [_event(check, e, raw.lines["events"]) for e in events_raw]
    explicit = [e.vehicle_id for e in events if e.vehicle_id]
    seen: dict[str, int] = {}
    for e in events:
        if not e.vehicle_id:
            continue
        if e.vehicle_id in seen:
            check.fail(
                e.lines["vehicle"],
                "vehicle",
                f"{e.vehicle_id} already has an event (line {seen[e.vehicle_id]}); "
                "give each scripted event its own taxi",
            )
        seen[e.vehicle_id] = e.line
    # Events without a vehicle get taxis from the top of the fleet, away from free traffic.
    spare = (
        taxi_fleet.taxi_id(i)
        for i in range(taxi_fleet.FLEET_SIZE - 1, -1, -1)
        if taxi_fleet.taxi_id(i) not in explicit
    )
    events = [
        e if e.vehicle_id else ScriptedEvent(e.type, next(spare), e.at_s, e.line, e.fields, e.lines)
        for e in events
    ]
    events = [
        dataclasses.replace(e, crowd=tuple(next(spare) for _ in range(e.fields["vehicles"] - 1)))
        if e.type == "surge"
        else e
        for e in events
    ]
    return Scenario(
        path=path,
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        city=str(raw["city"]) if "city" in raw else None,
        seed=check.integer(raw, "seed", 0, None) if "seed" in raw else None,
        duration_s=check.number(raw, "duration_s", 1.0, None) if "duration_s" in raw else None,
        traffic=dict(traffic),
        events=tuple(events),
    )


def _event(check: _Checker, raw: Any, list_line: int) -> ScriptedEvent:
    if not isinstance(raw, _Located):
        check.fail(list_line, "events", "each event should be a mapping with a `type`")
    kind = raw.get("type")
    if kind not in EVENT_TYPES:
        check.fail(
            raw.lines.get("type", raw.line),
            "type",
            f"{kind!r} is not one of {', '.join(EVENT_TYPES)}",
        )
    spec = EVENT_KEYS[kind]
    check.keys(raw, COMMON_EVENT_KEYS + spec["required"] + spec["optional"], f"{kind} event")
    for key in ("at", *spec["required"]):
        if key not in raw:
            check.fail(raw.line, key, f"a {kind} event needs `{key}`")
    at = check.number(raw, "at", 0.0, None)
    vehicle = ""
    if "vehicle" in raw:
        vehicle = str(raw["vehicle"])
        match = TAXI_ID.match(vehicle)
        if not match or not 1 <= int(match.group(1)) <= taxi_fleet.FLEET_SIZE:
            check.fail(
                raw.lines["vehicle"],
                "vehicle",
                f"{vehicle!r} is not a fleet taxi (TX-00001 to "
                f"{taxi_fleet.taxi_id(taxi_fleet.FLEET_SIZE - 1)})",
            )
    for key in ("speed_kmh",):
        if key in raw:
            check.number(raw, key, 5.0, 250.0)
    if "duration_s" in raw:
        check.number(raw, "duration_s", 1.0, 86_400.0)
    if kind == "surge":
        if "vehicle" in raw:
            check.fail(raw.lines["vehicle"], "vehicle", "a surge takes its taxis from the fleet")
        check.integer(raw, "vehicles", 1, taxi_fleet.FLEET_SIZE // 2)
        for key, low in (("from_m", 200.0), ("spread_s", 0.0)):
            if key in raw:
                check.number(raw, key, low, 86_400.0)
        if "goals" in raw:
            check.integer(raw, "goals", 1, 50)
    if "ignore_signals" in raw and not isinstance(raw["ignore_signals"], bool):
        check.fail(raw.lines["ignore_signals"], "ignore_signals", "should be true or false")
    for key in ("road", "from", "towards", "intersection", "approach", "zone", "place"):
        if key in raw and not isinstance(raw[key], str):
            check.fail(raw.lines[key], key, "should be a name (text)")
    fields = {k: v for k, v in raw.items() if k not in COMMON_EVENT_KEYS}
    return ScriptedEvent(kind, vehicle, at, raw.line, fields, dict(raw.lines))


@dataclass
class _Checker:
    path: Path

    def fail(self, line: int, key: str, problem: str) -> NoReturn:
        raise ScenarioError(f"{self.path}:{line}: {key}: {problem}")

    def keys(self, mapping: _Located, allowed: tuple[str, ...], what: str) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                self.fail(
                    mapping.lines[key],
                    str(key),
                    f"unknown field of a {what}{hint}; expected {', '.join(allowed)}",
                )

    def number(self, mapping: _Located, key: str, low: float, high: float | None) -> float:
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(mapping.lines[key], key, f"should be a number, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
            self.fail(mapping.lines[key], key, f"{value} is outside {bounds}")
        return float(value)

    def integer(self, mapping: _Located, key: str, low: int, high: int | None) -> int:
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(mapping.lines[key], key, f"should be an integer, got {value!r}")
        self.number(mapping, key, low, high)
        return int(value)


# -- resolving against a city --------------------------------------------------------------


@dataclass(frozen=True)
class SpeedingPlan:
    event: ScriptedEvent
    vehicle: int
    route: tuple[int, ...]
    speed_ms: float
    ignore_signals: bool


@dataclass(frozen=True)
class RedLightPlan:
    event: ScriptedEvent
    vehicle: int
    intersection: int
    approach: int
    exit: int
    speed_ms: float


@dataclass(frozen=True)
class ParkingPlan:
    event: ScriptedEvent
    vehicle: int
    zone: int
    segment: int
    offset_m: float


@dataclass(frozen=True)
class SurgePlan:
    """Taxis that appear around ``place`` one after another, drive to one of the segments
    nearest it and back to where they appeared, then on as free traffic."""

    event: ScriptedEvent
    vehicle: int  # the first of ``vehicles``
    vehicles: tuple[int, ...]
    routes: tuple[tuple[int, ...], ...]
    appear_s: tuple[float, ...]  # after the event's start


Plan = SpeedingPlan | RedLightPlan | ParkingPlan | SurgePlan


def resolve(scenario: Scenario, net: RoadNetwork, fleet: Fleet) -> list[Plan]:
    """Check every name against the city and work out where each event happens."""
    pack = net.pack
    if scenario.city and scenario.city != pack.name:
        raise ScenarioError(
            f"{scenario.path}: the scenario is written for city {scenario.city!r} "
            f"but the simulator runs {pack.name!r}",
            hint="set CASATWIN_CITY_PACK to the scenario's city, or change its `city`",
        )
    names = _Names(scenario.path, pack)
    plans: list[Plan] = []
    for event in scenario.events:
        vehicle = fleet.index[event.vehicle_id]
        if event.type == "speeding":
            plans.append(_speeding(event, vehicle, names, net))
        elif event.type == "red_light":
            plans.append(_red_light(event, vehicle, names, net))
        elif event.type == "surge":
            plans.append(_surge(event, names, net, fleet))
        else:
            zone = names.zone(event)
            spots = net.spots_in_zone(zone)
            if not spots:
                names.fail(event, "zone", f"no road runs through zone {event.fields['zone']!r}")
            spot = max(spots, key=lambda s: net.length_m[s.segment])
            plans.append(ParkingPlan(event, vehicle, zone, spot.segment, spot.offset_m))
    return plans


@dataclass
class _Names:
    """Looks names up in the pack; failures name the scenario line and suggest spellings."""

    path: Path
    pack: CityPack

    def fail(self, event: ScriptedEvent, key: str, problem: str) -> NoReturn:
        raise ScenarioError(f"{self.path}:{event.lines.get(key, event.line)}: {key}: {problem}")

    def unknown(self, event: ScriptedEvent, key: str, what: str, choices: list[str]) -> NoReturn:
        name = event.fields[key]
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.fail(event, key, f"no {what} named {name!r} in city {self.pack.name}{hint}")

    def road(self, event: ScriptedEvent, key: str) -> str:
        """The pack's name of a road (aliases, accents and case do not matter)."""
        name = self.pack.road_name(event.fields[key])
        if name not in self.pack.roads():
            self.unknown(event, key, "road", self.pack.roads())
        return name

    def intersection(self, event: ScriptedEvent) -> int:
        try:
            found = self.pack.intersection(event.fields["intersection"])
        except KeyError:
            choices = [x.name for x in self.pack.intersections]
            self.unknown(event, "intersection", "signalised intersection", choices)
        return self.pack.intersection_index[found.id]

    def zone(self, event: ScriptedEvent) -> int:
        try:
            found = self.pack.no_parking_zone(event.fields["zone"])
        except KeyError:
            choices = [z.name for z in self.pack.no_parking_zones]
            self.unknown(event, "zone", "no-parking zone", choices)
        return self.pack.no_parking_zones.index(found)

    def place(self, event: ScriptedEvent, key: str) -> tuple[float, float]:
        """(lat, lon) of a landmark, intersection, no-parking zone or police station."""
        pack, name = self.pack, event.fields[key]
        with contextlib.suppress(KeyError):
            mark = pack.landmark(name)
            return mark.lat, mark.lon
        with contextlib.suppress(KeyError):
            node = pack.node_index[pack.intersection(name).node]
            return float(pack.node_lat[node]), float(pack.node_lon[node])
        with contextlib.suppress(KeyError):
            polygon = np.array(pack.no_parking_zone(name).polygon)
            return float(polygon[:, 0].mean()), float(polygon[:, 1].mean())
        with contextlib.suppress(KeyError):
            station = pack.police_station(name)
            return station.lat, station.lon
        choices = [m.name for m in pack.landmarks] + [x.name for x in pack.intersections]
        self.unknown(event, key, "place (landmark, intersection, zone or station)", choices)


def _surge(event: ScriptedEvent, names: _Names, net: RoadNetwork, fleet: Fleet) -> SurgePlan:
    """Starts on random segments within ``from_m`` of the place (beyond a third of it), goals
    the ``goals`` segments nearest it, routes the quickest paths there and back."""
    pack = net.pack
    f = SURGE_DEFAULTS | event.fields
    lat, lon = names.place(event, "place")
    d = haversine_m(pack.node_lat[pack.seg_from], pack.node_lon[pack.seg_from], lat, lon)
    goals = np.argsort(d)[: int(f["goals"])]
    starts = np.flatnonzero((d >= f["from_m"] / 3) & (d <= f["from_m"]))
    if len(starts) == 0:
        names.fail(event, "from_m", f"no road starts within {f['from_m']} m of the place")
    rng = np.random.default_rng(event.line)  # reproducible, and different per event
    trees = {int(g): fleet.router.times_to(int(pack.seg_from[g]))[1] for g in goals}
    vehicle_ids = (event.vehicle_id, *event.crowd)
    routes, vehicles = [], []
    for k, vehicle_id in enumerate(vehicle_ids):
        goal = int(goals[k % len(goals)])
        for drawn in rng.choice(starts, 4):  # a start that cannot reach the goal: another
            start = int(drawn)
            there = fleet.router.path_via_successors(
                trees[goal], int(pack.seg_to[start]), int(pack.seg_from[goal])
            )
            back = fleet.router.path(int(pack.seg_to[goal]), int(pack.seg_from[start]))
            if (len(there) or pack.seg_to[start] == pack.seg_from[goal]) and len(back):
                routes.append((start, *there.tolist(), goal, *back.tolist(), start))
                vehicles.append(fleet.index[vehicle_id])
                break
    appear = np.sort(rng.uniform(0.0, f["spread_s"], len(vehicles)))
    return SurgePlan(event, vehicles[0], tuple(vehicles), tuple(routes), tuple(appear.tolist()))


def _speeding(event: ScriptedEvent, vehicle: int, names: _Names, net: RoadNetwork) -> SpeedingPlan:
    pack = net.pack
    road = names.road(event, "road")
    segments = pack.road_segments(road)
    start = int(segments[0])
    if "from" in event.fields:
        lat, lon = names.place(event, "from")
        starts = pack.seg_from[segments]
        d = haversine_m(pack.node_lat[starts], pack.node_lon[starts], lat, lon)
        node = starts[int(np.argmin(d))]
        leaving = segments[pack.seg_from[segments] == node]
        start = int(leaving[0])
        if "towards" in event.fields:
            to_lat, to_lon = names.place(event, "towards")
            wanted = bearing_deg(pack.node_lat[node], pack.node_lon[node], to_lat, to_lon)
            start = int(leaving[np.argmin(angle_diff_deg(net.heading_deg[leaving], wanted))])
    route = _follow_road(pack, net, start)
    return SpeedingPlan(
        event,
        vehicle,
        tuple(route),
        event.fields["speed_kmh"] / 3.6,
        bool(event.fields.get("ignore_signals", False)),
    )


def _follow_road(pack: CityPack, net: RoadNetwork, start: int) -> list[int]:
    """The segments of ``start``'s road from ``start`` on, straight on at each junction."""
    road = pack.seg_road[start]
    route = [start]
    seen = {start}
    while True:
        here = route[-1]
        onward = [
            int(s)
            for s in pack.segments_from(int(pack.seg_to[here]))
            if pack.seg_road[s] == road and s != pack.reverse_segment[here] and s not in seen
        ]
        if not onward:
            return route
        turn = angle_diff_deg(net.heading_deg[onward], net.heading_deg[here])
        route.append(onward[int(np.argmin(turn))])
        seen.add(route[-1])


def _red_light(event: ScriptedEvent, vehicle: int, names: _Names, net: RoadNetwork) -> RedLightPlan:
    pack = net.pack
    i = names.intersection(event)
    node = pack.node_index[pack.intersections[i].node]
    approaches = [int(s) for s in pack.segments_into(node) if net.approach_of[s] == i]
    if "approach" in event.fields:
        road = names.road(event, "approach")
        approaches = [s for s in approaches if pack.seg_road[s] == road]
        if not approaches:
            names.fail(event, "approach", f"{road!r} does not lead into this intersection")
    approach = max(approaches, key=lambda s: net.stop_m[s])  # the longest run-up
    leaving = [int(s) for s in pack.segments_from(node) if s != pack.reverse_segment[approach]]
    if not leaving:
        names.fail(event, "intersection", "the approach has no way on but back")
    turn = angle_diff_deg(net.heading_deg[leaving], net.heading_deg[approach])
    exit_seg = leaving[int(np.argmin(turn))]
    speed = event.fields.get("speed_kmh", 0.9 * pack.seg_limit_kmh[approach]) / 3.6
    return RedLightPlan(event, vehicle, i, approach, exit_seg, float(speed))


# -- playing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptEnd:
    """What the end of a scenario's script (its ``duration_s``) changed."""

    released: int  # taxis the script still held, now law-abiding traffic
    not_started: int  # events due after the end, never played


@dataclass
class _Running:
    plan: Plan
    start_s: float  # absolute, when the vehicle appears
    end_s: float | None = None  # absolute, when the script lets go (None: on a condition)
    started: bool = False
    done: bool = False
    placed: int = 0  # a surge's taxis on the road so far


class ScenarioPlayer:
    """Carries out the plans on ``fleet``: scripted taxis stay off the road until their
    event starts, act it out, then drive on as law-abiding traffic."""

    def __init__(self, plans: list[Plan], fleet: Fleet, start_s: float, step_s: float) -> None:
        self.fleet = fleet
        self.step_s = step_s
        self.running: list[_Running] = []
        self.crossing_s: dict[str, float] = {}  # when each red-light runner crosses
        for plan in plans:
            at = start_s + plan.event.at_s
            if isinstance(plan, RedLightPlan):
                self.running.append(self._time_red_light(plan, at))
            elif isinstance(plan, SpeedingPlan):
                self.running.append(_Running(plan, at, at + plan.event.fields["duration_s"]))
            elif isinstance(plan, SurgePlan):
                self.running.append(_Running(plan, at, at + plan.appear_s[-1]))
            else:
                self.running.append(_Running(plan, at, None))

    @property
    def vehicles(self) -> set[int]:
        return {
            v
            for r in self.running
            for v in (r.plan.vehicles if isinstance(r.plan, SurgePlan) else (r.plan.vehicle,))
        }

    def _time_red_light(self, plan: RedLightPlan, earliest_s: float) -> _Running:
        """Start the run so that the stop line is crossed well inside a red phase: a few
        seconds after red begins (or as soon as it can get there, if red is under way),
        and never in the last seconds before green."""
        net = self.fleet.net
        run_up_m = min(plan.speed_ms * RUN_UP_S, max(net.stop_m[plan.approach] - 1.0, 0.0))
        lead_s = run_up_m / plan.speed_ms
        cycle = float(net.signals.cycle_s[plan.approach])
        first = earliest_s + lead_s  # the earliest it can be at the line
        t = first + np.arange(-INTO_RED_S, 3 * cycle, 0.1)
        red = np.concatenate(
            [[False], net.signals.colour(np.full(len(t), plan.approach), t) == RED, [False]]
        )
        edges = np.flatnonzero(np.diff(red.astype(np.int8)))
        for begin, end in zip(edges[::2], edges[1::2]):  # red runs [begin, end) in samples
            r0, r1 = float(t[begin]), float(t[end - 1]) + 0.1
            cross = max(r0 + min(INTO_RED_S, (r1 - r0) / 2), first)
            if cross <= r1 - RED_MARGIN_S:
                self.crossing_s[plan.event.vehicle_id] = cross
                return _Running(plan, cross - lead_s)
        raise ScenarioError(  # a signal plan without red cannot happen with a valid pack
            f"{plan.event.fields['intersection']}: the approach is never red"
        )

    def before_step(self, t_s: float) -> None:
        """Start the events due at ``t_s`` and let go of the finished ones."""
        fleet = self.fleet
        for run in self.running:
            if run.done:
                continue
            plan = run.plan
            if not run.started:
                if t_s + 1e-9 < run.start_s:
                    continue
                run.started = True
                self._start(run, t_s)
                continue
            if isinstance(plan, SurgePlan):
                self._surge(run, t_s)
            elif isinstance(plan, RedLightPlan):
                if fleet.seg[plan.vehicle] != plan.approach:  # through the junction
                    fleet.release(plan.vehicle)
                    run.done = True
            elif isinstance(plan, SpeedingPlan):
                if run.end_s is not None and t_s >= run.end_s:
                    fleet.release(plan.vehicle)
                    run.done = True
            else:
                run.done = True  # the parked taxi leaves by itself when its time is up

    def finish(self) -> ScriptEnd:
        """The script is over: the taxis it still holds drive on as law-abiding traffic (a
        parked one drives off at the next step); events not yet started never start."""
        held = [run.plan.vehicle for run in self.running if self._holds(run)]
        not_started = sum(not run.started for run in self.running)
        for run in self.running:
            run.done = True
        for vehicle in held:
            self.fleet.release(vehicle)
        return ScriptEnd(len(held), not_started)

    def _holds(self, run: _Running) -> bool:
        """Whether the script still has a say over the run's taxi."""
        if not run.started or isinstance(run.plan, SurgePlan):
            return False  # a surge's taxis drive as free traffic once on the road
        if isinstance(run.plan, ParkingPlan):
            return self.fleet.parked(run.plan.vehicle)  # done once parked; parked till due
        return not run.done

    def _surge(self, run: _Running, t_s: float) -> None:
        """Put on the road the surge's taxis whose time has come."""
        plan = run.plan
        assert isinstance(plan, SurgePlan)
        while run.placed < len(plan.vehicles) and run.start_s + plan.appear_s[run.placed] <= t_s:
            k = run.placed
            route = list(plan.routes[k])
            self.fleet.place(plan.vehicles[k], route[0], 0.0, 0.0, route=route)
            run.placed += 1
        run.done = run.placed == len(plan.vehicles)

    def _start(self, run: _Running, t_s: float) -> None:
        fleet, plan = self.fleet, run.plan
        if isinstance(plan, SurgePlan):
            self._surge(run, t_s)
        elif isinstance(plan, SpeedingPlan):
            fleet.place(
                plan.vehicle,
                plan.route[0],
                0.0,
                plan.speed_ms,
                route=list(plan.route),
                v0_override=plan.speed_ms,
                overtakes=True,
                ignores_signals=plan.ignore_signals,
            )
        elif isinstance(plan, RedLightPlan):
            cross = self.crossing_s[plan.event.vehicle_id]
            offset = fleet.net.stop_m[plan.approach] - plan.speed_ms * (cross - t_s)
            fleet.place(
                plan.vehicle,
                plan.approach,
                max(float(offset), 0.0),
                plan.speed_ms,
                route=[plan.approach, plan.exit],
                v0_override=plan.speed_ms,
                overtakes=True,
                ignores_signals=True,
            )
        else:
            duration = float(plan.event.fields["duration_s"])
            fleet.park(plan.vehicle, plan.segment, plan.offset_m, t_s, t_s + duration)
