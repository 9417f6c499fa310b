"""The TMDD detector data document: what the traffic API serves, and its hardened parser.

The document follows TMDD v3's ``detectorDataMsg`` (the message a traffic-management centre
sends for its detectors), with one ``detector-data-detail`` per station::

    <?xml version='1.0' encoding='UTF-8'?>
    <tmdd:detectorDataMsg xmlns:tmdd="http://www.tmdd.org/3/messages">
      <detector-data-item>
        <organization-information>
          <organization-id>casablanca-tmc</organization-id>
        </organization-information>
        <detector-list>
          <detector-data-detail>
            <station-id>hw-e1</station-id>
            <detector-id>hw-e1-all</detector-id>
            <detection-time-stamp>
              <date>20261122</date>          local date, YYYYMMDD
              <time>081520</time>            local time, HHMMSS (fractions allowed)
              <offset>+0100</offset>         local time minus UTC, ±HHMM (absent: UTC)
            </detection-time-stamp>
            <vehicle-count>31</vehicle-count>          vehicles in the period, all lanes
            <vehicle-occupancy>18.4</vehicle-occupancy> percent of the period occupied
            <vehicle-speed>64.2</vehicle-speed>        mean speed, km/h
          </detector-data-detail>
          ...
        </detector-list>
      </detector-data-item>
    </tmdd:detectorDataMsg>

Only the root is namespaced (TMDD's schemas leave child elements unqualified); the parser
matches local names so that a sender who qualifies every element is read all the same.

Parsing is hardened (``defusedxml``): a document that declares a DTD is refused before
anything is expanded, so entity bombs ("billion laughs") and external entities cannot cost
memory or reach the network or the file system.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import defusedxml
import defusedxml.ElementTree as SafeET

NAMESPACE = "http://www.tmdd.org/3/messages"
ROOT = "detectorDataMsg"
DETAIL_PATH = ("detector-data-item", "detector-list", "detector-data-detail")
TIMESTAMP = "detection-time-stamp"

# expat error codes that mean "the document stopped early"
_EXPAT_NO_ELEMENTS = 3
_EXPAT_UNCLOSED_TOKEN = 5


class DocumentError(ValueError):
    """A document that cannot be used at all; ``str()`` says why, for the DLQ and the log."""


@dataclass(frozen=True)
class StationReport:
    """One station's values as the document carries them (text, not yet checked)."""

    station_id: str | None
    detector_id: str | None
    date: str | None
    time: str | None
    offset: str | None
    vehicle_count: str | None
    vehicle_occupancy: str | None
    vehicle_speed: str | None
    xml: bytes  # the element itself, for a dead letter


@dataclass(frozen=True)
class StationValues:
    """What the API knows about one station for one period (the fake API renders these)."""

    station_id: str
    ts_ms: int
    speed_kmh: float
    volume: int
    occupancy_pct: float
    utc_offset_min: int = 0  # the API's local time zone at ts_ms


# -- rendering (the fake API) -----------------------------------------------------------


def render(stations: Iterable[StationValues], organization: str = "casablanca-tmc") -> bytes:
    """The document for ``stations``, UTF-8 with an XML declaration."""
    # A literal prefixed tag keeps ElementTree's global namespace registry untouched.
    root = ET.Element(f"tmdd:{ROOT}", {"xmlns:tmdd": NAMESPACE})
    item = ET.SubElement(root, "detector-data-item")
    org = ET.SubElement(item, "organization-information")
    ET.SubElement(org, "organization-id").text = organization
    detectors = ET.SubElement(item, "detector-list")
    for s in stations:
        detail = ET.SubElement(detectors, "detector-data-detail")
        ET.SubElement(detail, "station-id").text = s.station_id
        ET.SubElement(detail, "detector-id").text = f"{s.station_id}-all"
        stamp = ET.SubElement(detail, TIMESTAMP)
        date, time, offset = format_timestamp(s.ts_ms, s.utc_offset_min)
        ET.SubElement(stamp, "date").text = date
        ET.SubElement(stamp, "time").text = time
        ET.SubElement(stamp, "offset").text = offset
        ET.SubElement(detail, "vehicle-count").text = str(s.volume)
        ET.SubElement(detail, "vehicle-occupancy").text = f"{s.occupancy_pct:.1f}"
        ET.SubElement(detail, "vehicle-speed").text = f"{s.speed_kmh:.1f}"
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def format_timestamp(ts_ms: int, utc_offset_min: int) -> tuple[str, str, str]:
    """(date, time, offset) of ``ts_ms`` in a zone ``utc_offset_min`` minutes ahead of UTC."""
    local = datetime.fromtimestamp(ts_ms / 1000, UTC) + timedelta(minutes=utc_offset_min)
    sign = "+" if utc_offset_min >= 0 else "-"
    hours, minutes = divmod(abs(utc_offset_min), 60)
    time = local.strftime("%H%M%S")
    if ts_ms % 1000:
        time += f".{ts_ms % 1000:03d}"
    return local.strftime("%Y%m%d"), time, f"{sign}{hours:02d}{minutes:02d}"


def parse_timestamp(date: str, time: str, offset: str | None) -> int:
    """Epoch milliseconds of a TMDD date/time/offset; ``ValueError`` says what is wrong."""
    try:
        local = datetime.strptime(f"{date.strip()} {time.strip()}", "%Y%m%d %H%M%S.%f")
    except ValueError:
        try:
            local = datetime.strptime(f"{date.strip()} {time.strip()}", "%Y%m%d %H%M%S")
        except ValueError:
            raise ValueError(f"timestamp {date!r} {time!r} is not YYYYMMDD HHMMSS[.fff]") from None
    minutes = 0
    if offset is not None and offset.strip():
        text = offset.strip()
        if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
            raise ValueError(f"UTC offset {offset!r} is not ±HHMM")
        minutes = int(text[1:3]) * 60 + int(text[3:5])
        if text[0] == "-":
            minutes = -minutes
    utc = local.replace(tzinfo=UTC) - timedelta(minutes=minutes)
    return int(utc.timestamp() * 1000)


# -- parsing (the gateway) ----------------------------------------------------------------


def parse(raw: bytes, max_bytes: int) -> list[StationReport]:
    """The station reports of a document; :class:`DocumentError` if it cannot be used."""
    if len(raw) > max_bytes:
        raise DocumentError(f"document of {len(raw)} bytes is over the {max_bytes}-byte limit")
    if not raw.strip():
        raise DocumentError("empty document")
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise DocumentError(
            "document declares a DTD, refused unread: DTD entities can expand without bound "
            "(billion laughs) or pull external files"
        ) from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden) as exc:
        raise DocumentError(f"document uses entities, refused unread: {exc}") from None
    except ET.ParseError as exc:
        code = getattr(exc, "code", None)
        if code in (_EXPAT_NO_ELEMENTS, _EXPAT_UNCLOSED_TOKEN):
            raise DocumentError(
                f"malformed XML, the document ends too early (truncated?): {exc}"
            ) from None
        raise DocumentError(f"malformed XML: {exc}") from None
    if _local(root.tag) != ROOT:
        raise DocumentError(f"root element is <{_local(root.tag)}>, expected <{ROOT}>")
    return [_report(detail) for detail in _descend(root, DETAIL_PATH)]


def _report(detail: ET.Element) -> StationReport:
    leaves = _leaves(detail)
    stamp = next(_children(detail, TIMESTAMP), None)
    stamp_leaves = _leaves(stamp) if stamp is not None else {}
    return StationReport(
        station_id=leaves.get("station-id"),
        detector_id=leaves.get("detector-id"),
        date=stamp_leaves.get("date"),
        time=stamp_leaves.get("time"),
        offset=stamp_leaves.get("offset"),
        vehicle_count=leaves.get("vehicle-count"),
        vehicle_occupancy=leaves.get("vehicle-occupancy"),
        vehicle_speed=leaves.get("vehicle-speed"),
        xml=ET.tostring(detail, encoding="UTF-8", xml_declaration=False),
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (child for child in element if _local(child.tag) == name)


def _descend(element: ET.Element, path: tuple[str, ...]) -> Iterator[ET.Element]:
    if not path:
        yield element
        return
    for child in _children(element, path[0]):
        yield from _descend(child, path[1:])


def _leaves(element: ET.Element) -> dict[str, str]:
    """Text of the first child of each name (stripped; whitespace-only counts as absent)."""
    out: dict[str, str] = {}
    for child in element:
        name = _local(child.tag)
        text = (child.text or "").strip()
        if name not in out and text:
            out[name] = text
    return out
