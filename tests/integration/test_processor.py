"""The processor end to end on the synthetic grid, in Spark local mode, against the real
broker, MariaDB (registry, rules, ledger) and the read-model server.

One run of the application plays a scripted scenario — a speeder, a red-light runner who
runs two reds (the second is a repeat: court), an illegal parker who then stops
reporting, an unregistered speeding car, a speeding police unit, law-abiding taxis — mixed
with malformed telemetry; the tests then check the topic, the ledger, the read model and
the DLQ.
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from casatwin.bus import topics
from casatwin.bus.dlq import payload
from casatwin.city.signals import RED
from casatwin.devstack.vault import generate_secrets
from casatwin.processor.network import RoadNetwork, for_city
from casatwin.readmodel.store import INFRACTIONS, connect
from casatwin.waiting import wait_until
from tests.drive import T0, Drive, path_along
from tests.processor_support import (
    REGISTRY_AS_OF,
    RunningApp,
    clean_taxis,
    grid_city,
    ledger_rows,
    police_units,
    publish,
    read_topic,
    topic_ends,
)
from tests.unit.test_detectors import crossing_start

pytestmark = [pytest.mark.integration, pytest.mark.spark]

BAD = [
    (b"{this is not json", "not valid JSON"),
    (b'{"vehicle_id": "TX-09999", "kind": "taxi_petit"}', "missing field 'ts'"),
    (b"[1, 2, 3]", "expected a JSON object"),
]


@pytest.fixture(scope="module")
def ledger_db(mariadb):
    """A registry of its own (the ledger is written): migrated, 13,000 drivers loaded."""
    from casatwin.registry import loader
    from tests.conftest import scratch_database

    settings = scratch_database(mariadb, "casatwin_processor_test")
    loader.load(settings, 13_000, seed=52, as_of=REGISTRY_AS_OF, police_units=police_units())
    return settings


@pytest.fixture(scope="module")
def scenario(ledger_db, tmp_path_factory, broker, mongo, spark):
    """Run the scenario once; the tests below look at what it produced."""
    from casatwin.config import Settings

    tmp = tmp_path_factory.mktemp("processor")
    settings = Settings().replace(
        general={"data_dir": tmp},
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb={"host": ledger_db.host, "port": ledger_db.port, "database": ledger_db.database},
        city=grid_city(tmp),
    )
    generate_secrets(settings)
    net: RoadNetwork = for_city(settings.city)
    speeder, runner, parker, *lawful = clean_taxis(ledger_db, 8)
    row0, row2 = path_along(net, "Row 0"), path_along(net, "Row 2")
    red_at = crossing_start(net, row2[0], RED)
    drives = [
        Drive(net, speeder, row0, speeds_kmh=[50, 50, 82, 86, 84, 50], duration_s=30),
        Drive(net, runner, row2, start_ts=red_at, runs_red=True, duration_s=20),
        Drive(net, parker, row0[1:], start_along_m=100.0, speeds_kmh=[0.0], duration_s=40),
        Drive(net, "PV-UNKNOWN-1", path_along(net, "Row 4"), kind="private",
              speeds_kmh=[50, 82, 83, 50], duration_s=20),
        Drive(net, "PU-SW-1", path_along(net, "Column 0"), kind="police", speeds_kmh=[110],
              duration_s=20),
    ]  # fmt: skip
    # The runner's second red, at the next junction, in a later cycle.
    second = crossing_start(net, row2[1], RED)
    while second < red_at + 60_000:
        second += int(net.signals.cycle_s[row2[1]] * 1000)
    drives.append(Drive(net, runner, row2[1:], start_ts=second, runs_red=True, duration_s=16))
    # Law-abiding taxis drive the whole time: their fixes move event time (the parker's
    # dwell timer fires although the parker itself has stopped reporting).
    roads = ["Row 1", "Row 3", "Column 1", "Column 2", "Column 3"]
    for vehicle, road in zip(lawful, roads, strict=False):
        drives.append(Drive(net, vehicle, path_along(net, road), speeds_kmh=[45], duration_s=260))
    fixes = sorted((f for d in drives for f in d.fixes()), key=lambda f: (f["ts"], f["vehicle_id"]))

    starting = topic_ends(settings, topics.TELEMETRY)
    since = {t: topic_ends(settings, t) for t in (topics.INFRACTIONS, topics.DLQ)}
    settings = settings.replace(
        processor={"starting_offsets": orjson.dumps(starting).decode(), "trigger_ms": 200}
    )
    half = len(fixes) // 2
    publish(settings, fixes[:half])
    publish(settings, [raw for raw, _ in BAD], key="bad-key")
    expected = 5  # the speeder, two reds, the parker (on its timer), the unknown car
    asked_before = nudges()
    with RunningApp(settings, spark):
        publish(settings, fixes[half:])
        wait_until(
            lambda: (
                len(read_topic(settings, topics.INFRACTIONS, since[topics.INFRACTIONS])) >= expected
            ),
            timeout_s=240,
        )
        # Then the telemetry is silent: the query's last batch moved the watermark, and
        # the application asks for the batch that fires the timers it passed.
        wait_until(lambda: nudges() > asked_before, timeout_s=60)
    return {
        "settings": settings,
        "roles": {"speeder": speeder, "runner": runner, "parker": parker, "lawful": lawful},
        "published": read_topic(settings, topics.INFRACTIONS, since[topics.INFRACTIONS]),
        "dead": read_topic(settings, topics.DLQ, since[topics.DLQ]),
        "red_at": red_at,
    }


def nudges() -> float:
    from prometheus_client import REGISTRY

    asked = {"query": "infractions"}
    return REGISTRY.get_sample_value("casatwin_processor_timer_nudges_total", asked) or 0


def by_vehicle(messages):
    out = {}
    for m in messages:
        out.setdefault(m["vehicle_id"], []).append(m)
    return out


def test_exactly_the_expected_infractions_with_their_decisions(scenario):
    roles = scenario["roles"]
    found = by_vehicle(scenario["published"])
    assert set(found) == {roles["speeder"], roles["runner"], roles["parker"], "PV-UNKNOWN-1"}

    (speeding,) = found[roles["speeder"]]
    assert (speeding["type"], speeding["measured"], speeding["limit"]) == ("speeding", 86, 60)
    assert speeding["decision"]["class"] == 2  # 26 km/h over
    assert (speeding["decision"]["fine_mad"], speeding["decision"]["points"]) == (500, 2)
    assert speeding["decision"]["court"] is False

    first, second = sorted(found[roles["runner"]], key=lambda m: m["event_ts"])
    assert first["type"] == second["type"] == "red_light"
    assert (first["decision"]["class"], first["decision"]["fine_mad"]) == (1, 700)
    assert first["decision"]["points"] == 4 and first["decision"]["court"] is False
    assert second["decision"]["court"] is True  # a repeat class-1 offence: no settlement
    assert "repeat" in second["decision"]["court_reasons"]
    assert first["intersection_id"] != second["intersection_id"]

    (parking,) = found[roles["parker"]]
    assert (parking["type"], parking["zone_id"], parking["parking_kind"]) == (
        "illegal_parking", "z-row0", "other"
    )  # fmt: skip
    assert (parking["decision"]["class"], parking["decision"]["fine_mad"]) == (3, 300)
    assert parking["event_ts"] == T0 and parking["evidence_ts"] == T0 + 120_000
    # And the road the car stands on (either direction: it has no heading), where a unit
    # would be sent.
    net = for_city(scenario["settings"].city)
    block = path_along(net, "Row 0")[1]
    here = {net.segment_ids[block], net.segment_ids[int(net.pack.reverse_segment[block])]}
    assert parking["segment_id"] in here

    (unknown,) = found["PV-UNKNOWN-1"]
    assert unknown["driver"] == {} and unknown["vehicle"]["vehicle_id"] == "PV-UNKNOWN-1"
    assert unknown["decision"]["class"] == 2 and unknown["decision"]["points_removed"] == 0

    for message in scenario["published"]:
        assert message["event_ts"] <= message["evidence_ts"]
        assert message["detected_ts"] <= message["published_ts"]
        # Known drivers by their pseudonymous reference only: no CIN, name or licence.
        assert message["driver"] == {} or set(message["driver"]) == {"ref"}
        assert set(message["vehicle"]) <= {"vehicle_id", "plate", "kind"}


def test_each_infraction_once_in_the_ledger_and_the_read_model(scenario):
    settings = scenario["settings"]
    published = scenario["published"]
    ids = [m["infraction_id"] for m in published]
    assert len(ids) == len(set(ids))  # once on the topic too
    rows = ledger_rows(settings.mariadb, ids)
    assert set(rows) == set(ids)
    for message in published:
        row = rows[message["infraction_id"]]
        assert row["class"] == message["decision"]["class"]
        assert row["fine_mad"] == message["decision"]["fine_mad"]
        assert bool(row["court"]) == message["decision"]["court"]
    db = connect(settings.mongo)
    docs = {d["_id"]: d for d in db[INFRACTIONS].find({})}
    assert set(docs) == set(ids)
    for message in published:
        doc = docs[message["infraction_id"]]
        assert doc["decision"] == message["decision"]
        assert doc["published_ts"] == message["published_ts"]


def test_law_abiding_and_police_vehicles_have_no_infraction(scenario):
    vehicles = {m["vehicle_id"] for m in scenario["published"]}
    assert not vehicles & set(scenario["roles"]["lawful"])
    assert "PU-SW-1" not in vehicles


def test_malformed_telemetry_goes_to_the_dlq_with_the_reason(scenario):
    dead = [d for d in scenario["dead"] if d["key"] == "bad-key"]
    assert sorted(payload(d) for d in dead) == sorted(raw for raw, _ in BAD)
    for raw, reason in BAD:
        (letter,) = [d for d in dead if payload(d) == raw]
        assert reason in letter["error"]
        assert letter["stage"] == "processor.parse"
        assert letter["topic"] == topics.TELEMETRY and letter["offset"] >= 0


def test_spark_batches_and_the_publish_hop_are_measured(scenario):
    """The supervisor observed the micro-batches from their progress; the sink timed
    event → published."""
    from prometheus_client import REGISTRY

    from casatwin.processor.stages import STAGES

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    assert sample("casatwin_processor_batch_rows_total", query="infractions") > 0
    assert sample("casatwin_processor_batch_seconds_count", query="infractions") > 0
    published = len(scenario["published"])
    assert sample("casatwin_hop_seconds_count", hop="event_to_published") >= published
    # Which stage limits the query: the shares of its batches' time, from the progress
    # and the sink's own timing, add up to the whole.
    share = {
        stage: sample("casatwin_processor_stage_share", query="infractions", stage=stage)
        for stage in STAGES
    }
    assert abs(sum(share.values()) - 1) < 1e-6, share
    assert share["tasks"] > 0 and share["planning"] > 0, share
