"""End to end: the simulator plays the e2e scenario on Casablanca (a speeder, a red-light
runner, an illegal parker in law-abiding traffic); the processor finds exactly the scripted
infractions — with the decisions the law gives them — in the ledger, the read model and on
``casatwin.infractions``, and none for anybody else.

The simulator's ground truth (``--ground-truth``) says what really happened; the processor
reports what it can judge from the telemetry: a speeding episode of at least two fixes,
parking of at least the dwell time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from casatwin.bus import topics
from casatwin.readmodel.store import INFRACTIONS, connect
from casatwin.waiting import wait_until
from tests.processor_support import (
    RunningApp,
    bus_positions,
    casablanca_e2e,
    identities_in_the_read_model,
    identities_on_the_bus,
    ledger_rows,
    people_of,
    read_topic,
)

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "e2e.yaml"
START_MS = 1_800_000_000_000


def expected_decision(settings, record):
    """The decision loi 52-05 gives this ground-truth infraction, for its driver as the
    registry knows them before the run."""
    from casatwin.registry import db, lookup
    from casatwin.rules.engine import OffenceFacts, decide, load_rule_book

    conn = db.connect(settings.mariadb)
    try:
        vehicle = lookup.lookup_vehicles(conn, [record["vehicle_id"]])[record["vehicle_id"]]
    finally:
        conn.close()
    facts = OffenceFacts.from_infraction(
        {**record, "limit": record["limit"] if record["type"] == "speeding" else None}
    )
    return decide(facts, vehicle.history(), load_rule_book()).to_message()


def test_the_e2e_scenario_gives_exactly_the_scripted_infractions(
    spark, mariadb, broker, mongo, tmp_path
):
    settings, since, env = casablanca_e2e(
        mariadb, broker, mongo, tmp_path, "casatwin_processor_e2e"
    )
    bus_before = bus_positions(settings)
    truth_path = tmp_path / "truth.json"
    simulation = subprocess.run(
        [sys.executable, "-m", "casatwin.cli", "simulator", "--afap", "--scenario", str(SCENARIO),
         "--stop-after-scenario", "--start-ms", str(START_MS), "--ground-truth", str(truth_path)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert simulation.returncode == 0, simulation.stderr[-3000:]
    truth = orjson.loads(truth_path.read_bytes())
    dwell_ms = settings.processor.dwell_s * 1000
    end_ms = START_MS + 300_000

    def judgeable(r):
        if r["type"] == "speeding":
            return r["fixes"] >= 2
        if r["type"] == "illegal_parking":
            return r.get("end_ts", end_ms) - r["start_ts"] >= dwell_ms
        return True

    judged = [r for r in truth if judgeable(r)]
    assert {r["type"] for r in judged} == {"speeding", "red_light", "illegal_parking"}

    with RunningApp(settings, spark):
        wait_until(
            lambda: len(read_topic(settings, topics.INFRACTIONS, since)) >= len(judged),
            timeout_s=400,
        )
        published = read_topic(settings, topics.INFRACTIONS, since)

    assert len(published) == len(judged), [
        (m["vehicle_id"], m["type"], m["event_ts"]) for m in published
    ]
    for record in judged:
        key = (record["vehicle_id"], record["type"])
        (found,) = [m for m in published if (m["vehicle_id"], m["type"]) == key]
        if record["type"] == "speeding":
            assert found["segment_id"] == record["segment_id"]
            assert found["measured"] == pytest.approx(record["measured"], abs=0.2)
            assert found["event_ts"] == record["event_ts"]
        elif record["type"] == "red_light":
            assert (found["intersection_id"], found["segment_id"]) == (
                record["intersection_id"], record["segment_id"]
            )  # fmt: skip
            assert abs(found["event_ts"] - record["event_ts"]) <= 1500
        else:
            assert (found["zone_id"], found["parking_kind"]) == (
                record["zone_id"], record["parking_kind"]
            )  # fmt: skip
            assert abs(found["event_ts"] - record["event_ts"]) <= 2000
        expected = expected_decision(settings, {**found, **record})
        for field in ("class", "fine_mad", "points", "court"):
            assert found["decision"][field] == expected[field], (record["type"], field)

    ids = {m["infraction_id"] for m in published}
    assert set(ledger_rows(settings.mariadb, ids)) == ids
    db = connect(settings.mongo)
    assert {d["_id"] for d in db[INFRACTIONS].find({}, {"_id": 1})} == ids

    # Nobody's identity left MariaDB: the drivers charged are named by a pseudonym on every
    # topic (the DLQ among them) and in every collection of the read model.
    people = people_of(settings.mariadb, {m["vehicle_id"] for m in published})
    assert len(people) >= 3 * 2, people  # a CIN, a name and a licence number per driver
    assert identities_on_the_bus(settings, bus_before, people) == []
    assert identities_in_the_read_model(settings, people) == []
    refs = {m["driver"]["ref"] for m in published if m["driver"]}
    assert len(refs) == len({m["vehicle_id"] for m in published if m["driver"]})
