"""One station report of the TMDD document → one ``casatwin.sensors.highway`` reading.

Pure: the known stations and the current time are parameters. A report that cannot become
a valid reading raises :class:`InvalidReport` with the reason the DLQ keeps; the ranges are
the topic's contract (:data:`casatwin.bus.messages.CONTRACTS`), checked by the same
:func:`~casatwin.bus.messages.check` every consumer uses.
"""

from __future__ import annotations

import math
from collections.abc import Container

from casatwin.bus import messages, topics
from casatwin.bus.messages import HighwayReading
from casatwin.gateway.tmdd import StationReport, parse_timestamp


class InvalidReport(ValueError):
    """A station report that breaks the contract; ``str()`` is the reason."""


def normalise(
    report: StationReport, stations: Container[str], now_ms: int, max_skew_ms: int
) -> HighwayReading:
    """The reading of ``report``, or :class:`InvalidReport` naming what is wrong."""
    station = report.station_id
    if station is None:
        raise InvalidReport("report has no <station-id>")
    if station not in stations:
        raise InvalidReport(f"unknown station {station!r}: not a highway station of the city pack")
    if report.date is None or report.time is None:
        raise InvalidReport(f"station {station}: <detection-time-stamp> lacks <date> or <time>")
    try:
        ts = parse_timestamp(report.date, report.time, report.offset)
    except ValueError as exc:
        raise InvalidReport(f"station {station}: {exc}") from None
    if ts - now_ms > max_skew_ms:
        raise InvalidReport(
            f"station {station}: timestamp is {(ts - now_ms) / 1000:.0f} s in the future "
            "(the API's clock is wrong?)"
        )
    reading: HighwayReading = {
        "station_id": station,
        "ts": ts,
        "speed_kmh": _number(report.vehicle_speed, "vehicle-speed", station),
        "volume": _count(report.vehicle_count, "vehicle-count", station),
        "occupancy_pct": _number(report.vehicle_occupancy, "vehicle-occupancy", station),
    }
    try:
        messages.check(topics.SENSORS_HIGHWAY, reading)
    except messages.InvalidMessage as exc:
        raise InvalidReport(f"station {station}: {exc}") from None
    return reading


def _number(text: str | None, element: str, station: str) -> float:
    if text is None:
        raise InvalidReport(f"station {station}: <{element}> is missing")
    try:
        value = float(text)
    except ValueError:
        raise InvalidReport(f"station {station}: <{element}> {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidReport(f"station {station}: <{element}> {text!r} is not a finite number")
    return value


def _count(text: str | None, element: str, station: str) -> int:
    value = _number(text, element, station)
    if not value.is_integer():
        raise InvalidReport(f"station {station}: <{element}> {text!r} is not a whole number")
    return int(value)
