"""Plausible detector values for the fake traffic API: busy at rush hour, quiet at night.

Each station follows a daily demand curve (Casablanca local time: morning and evening rush
hours, a daytime plateau, quiet nights, lighter weekends) scaled by its own busyness. Demand
sets the density on the road; speed follows Greenshields' model (free flow at the speed
limit, falling linearly to a standstill at jam density), flow is density × speed, and
occupancy is the share of road a detector sees covered. Noise is drawn from a generator
seeded by (seed, station, period), so the same seed and time give the same document.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from casatwin.city.model import CityPack
from casatwin.gateway.tmdd import StationValues

TIME_ZONE = ZoneInfo("Africa/Casablanca")
JAM_DENSITY = 110.0  # vehicles per km and lane at a standstill
PEAK_DENSITY_SHARE = 0.85  # demand 1.0 puts the road at this share of jam density
EFFECTIVE_LENGTH_M = 6.0  # vehicle plus detection zone: what occupies the detector
MIN_SPEED_KMH = 3.0


@dataclass(frozen=True)
class StationProfile:
    """What makes one station's traffic its own."""

    station_id: str
    free_flow_kmh: float  # the segment's speed limit
    lanes: int
    busyness: float  # multiplies the demand curve (0.8 to 1.1)
    peak_shift_h: float  # this station's rush hour comes a little earlier or later


def profiles(pack: CityPack, seed: int) -> list[StationProfile]:
    """A profile for each highway station of ``pack``, drawn from ``seed``."""
    out = []
    for station in pack.highway_stations:
        segment = pack.segment_index[station.segment]
        rng = random.Random(f"{seed}:{station.id}:profile")
        out.append(
            StationProfile(
                station_id=station.id,
                free_flow_kmh=float(pack.seg_limit_kmh[segment]),
                lanes=int(pack.seg_lanes[segment]),
                busyness=rng.uniform(0.8, 1.1),
                peak_shift_h=rng.uniform(-0.4, 0.4),
            )
        )
    return out


def demand(local_hour: float, weekday: int) -> float:
    """Share of peak demand (0 to 1) at ``local_hour`` (0-24) on ``weekday`` (0 = Monday)."""
    weekend = weekday >= 5
    # a daytime plateau between ~6:30 and ~22:00 with smooth edges
    plateau = 0.3 / (1 + math.exp(-2 * (local_hour - 6.5))) / (1 + math.exp(2 * (local_hour - 22)))
    morning = 0.6 * math.exp(-(((local_hour - 8.0) / 0.8) ** 2) / 2)
    evening = 0.65 * math.exp(-(((local_hour - 18.25) / 1.0) ** 2) / 2)
    peaks = (morning + evening) * (0.35 if weekend else 1.0)
    return min(1.0, 0.04 + plateau + peaks)


def values(
    profile: StationProfile,
    period_end_ms: int,
    period_s: float,
    local_hour: float,
    weekday: int,
    seed: int,
) -> tuple[float, int, float]:
    """(mean speed km/h, vehicles in the period, occupancy %) of one station for one period."""
    rng = random.Random(f"{seed}:{profile.station_id}:{period_end_ms}")
    load = demand(local_hour - profile.peak_shift_h, weekday) * profile.busyness
    load = min(1.0, max(0.01, load + rng.gauss(0, 0.03)))
    density = JAM_DENSITY * PEAK_DENSITY_SHARE * load
    speed = profile.free_flow_kmh * (1 - density / JAM_DENSITY) + rng.gauss(0, 2.0)
    speed = max(MIN_SPEED_KMH, min(speed, profile.free_flow_kmh * 1.15))
    expected = density * speed * profile.lanes * period_s / 3600
    volume = max(0, round(expected + rng.gauss(0, math.sqrt(expected))))
    occupancy = min(100.0, density * EFFECTIVE_LENGTH_M / 10)
    return round(speed, 1), volume, round(occupancy, 1)


def local_time(ts_ms: int) -> tuple[float, int, int]:
    """(hour of day, weekday, minutes ahead of UTC) in Casablanca at ``ts_ms``."""
    local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(TIME_ZONE)
    offset = local.utcoffset()
    offset_min = int(offset.total_seconds() // 60) if offset is not None else 0
    hour = local.hour + local.minute / 60 + local.second / 3600
    return hour, local.weekday(), offset_min


def latest_period_end_ms(now_s: float, period_s: float) -> int:
    """End of the last complete reporting period at ``now_s`` (epoch seconds)."""
    period_ms = round(period_s * 1000)
    return int(now_s * 1000) // period_ms * period_ms


def snapshot(
    stations: list[StationProfile], now_s: float, period_s: float, seed: int
) -> list[StationValues]:
    """What the API serves at ``now_s``: every station's last complete period."""
    end_ms = latest_period_end_ms(now_s, period_s)
    hour, weekday, offset_min = local_time(end_ms)
    out = []
    for profile in stations:
        speed, volume, occupancy = values(profile, end_ms, period_s, hour, weekday, seed)
        out.append(StationValues(profile.station_id, end_ms, speed, volume, occupancy, offset_min))
    return out
