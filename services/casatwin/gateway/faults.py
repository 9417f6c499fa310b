"""The fault modes of the fake traffic API, and the broken documents some of them serve.

A mode applies to the next ``count`` requests and then the API recovers on its own (``count``
0: until switched again), so "fails for N requests then recovers" is any mode with a count.
Pure: :class:`FaultSwitch` only counts; the server (:mod:`fakeapi`) acts on the mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from casatwin.gateway.tmdd import StationValues


class FaultMode(StrEnum):
    NONE = "none"
    SLOW = "slow"
    HTTP500 = "http500"
    TIMEOUT = "timeout"
    DISCONNECT = "disconnect"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    BILLION_LAUGHS = "billion_laughs"
    BAD_VALUES = "bad_values"


DESCRIPTIONS: dict[FaultMode, str] = {
    FaultMode.NONE: "healthy: a well-formed document with every station",
    FaultMode.SLOW: "answers correctly after `slow_s` seconds (within the gateway's timeout)",
    FaultMode.HTTP500: "HTTP 500 Internal Server Error",
    FaultMode.TIMEOUT: "holds the request for `hang_s` seconds, past the gateway's timeout",
    FaultMode.DISCONNECT: "closes the connection without answering",
    FaultMode.MALFORMED: "HTTP 200 with XML that is not well-formed (an unescaped `&`)",
    FaultMode.TRUNCATED: "HTTP 200 with the document cut off at 60 % of its length",
    FaultMode.BILLION_LAUGHS: "HTTP 200 with an entity-expansion bomb (a DTD with nested "
    "entities; ~3 GB if expanded)",
    FaultMode.BAD_VALUES: "a well-formed document where one station has a negative speed, "
    "one an occupancy over 100 % and an unknown station is added",
}


def parse_mode(text: str) -> FaultMode:
    """The mode named ``text``; ``ValueError`` lists the valid names."""
    try:
        return FaultMode(text.strip().lower().replace("-", "_"))
    except ValueError:
        names = ", ".join(m.value for m in FaultMode)
        raise ValueError(f"unknown fault mode {text!r}; choose one of: {names}") from None


@dataclass
class FaultSwitch:
    """The current fault mode and how many more requests it lasts."""

    mode: FaultMode = FaultMode.NONE
    remaining: int | None = None  # None: until switched again

    def set(self, mode: FaultMode, count: int = 0) -> None:
        if count < 0:
            raise ValueError("count must be 0 (until switched) or more")
        self.mode = mode
        self.remaining = count if count > 0 and mode is not FaultMode.NONE else None

    def next_request(self) -> FaultMode:
        """The mode this request gets; counts it down and recovers when it runs out."""
        mode = self.mode
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.set(FaultMode.NONE)
        return mode

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode.value, "remaining": self.remaining}


# -- broken documents ---------------------------------------------------------------------

UNKNOWN_STATION = "hw-ghost"

# The classic entity bomb: ten levels of ten references, 10^9 "lol"s if expanded.
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE detectorDataMsg [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<detectorDataMsg><detector-data-item><organization-information>
<organization-id>&lol9;</organization-id>
</organization-information></detector-data-item></detectorDataMsg>
"""


def malformed(document: bytes) -> bytes:
    """The document with an unescaped ampersand, as a careless serialiser writes it."""
    return document.replace(b"-tmc</organization-id>", b"-tmc & partners</organization-id>", 1)


def truncated(document: bytes) -> bytes:
    """The first 60 % of the document, as a dropped upstream connection leaves it."""
    return document[: len(document) * 6 // 10]


def bad_values(stations: list[StationValues]) -> list[StationValues]:
    """The stations with impossible values for the first two and an unknown one added."""
    out = list(stations)
    if out:
        out[0] = dataclasses.replace(out[0], speed_kmh=-12.0)
    if len(out) > 1:
        out[1] = dataclasses.replace(out[1], occupancy_pct=130.0)
    if stations:
        out.append(dataclasses.replace(stations[0], station_id=UNKNOWN_STATION))
    return out
