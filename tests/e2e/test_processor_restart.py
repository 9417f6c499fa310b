"""End to end across a processor restart, as the appliance test does it under systemd but on
this machine: the e2e scenario's speeder and red-light runner are played on a simulated
clock the test sets (``--afap --start-ms``, so the signal phases, and with them the red-light
crossing, are the same at every run); the processor walks the recording in small
micro-batches, is stopped once it has read into the speeder's episode and started again on
the same checkpoint; each scripted infraction is published and in the ledger exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from casatwin.bus import topics
from casatwin.bus.ranges import cached_consumer, get, plan_ranges, read_ranges
from casatwin.processor.kafka_offsets import from_progress
from casatwin.processor.telemetry_source import telemetry_records
from casatwin.waiting import wait_until
from tests.processor_support import (
    RunningApp,
    casablanca_e2e,
    ledger_rows,
    read_topic,
    topic_ends,
)

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "e2e.yaml"
SCRIPTED = {"TX-00101": "speeding", "TX-00102": "red_light"}
# The scenario test's clock: at this start the red-light runner meets its red within the
# first two minutes of simulated time.
START_MS = 1_800_000_000_000
SECONDS = 150
# Records per micro-batch: the recording takes many batches, so that the stop falls inside
# the stream rather than after it.
RECORDS_PER_BATCH = 100


def test_scripted_infractions_survive_a_processor_restart(spark, mariadb, broker, mongo, tmp_path):
    settings, since, env = casablanca_e2e(
        mariadb, broker, mongo, tmp_path, "casatwin_processor_restart"
    )
    settings = settings.replace(processor={"max_records_per_batch": RECORDS_PER_BATCH})
    start = topic_ends(settings, topics.TELEMETRY)
    truth_path = tmp_path / "truth.json"
    simulation = subprocess.run(
        [sys.executable, "-m", "casatwin.cli", "simulator", "--afap", "--taxis", "0",
         "--scenario", str(SCENARIO), "--start-ms", str(START_MS), "--seconds", str(SECONDS),
         "--ground-truth", str(truth_path)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert simulation.returncode == 0, simulation.stderr[-3000:]
    truth = orjson.loads(truth_path.read_bytes())
    assert {(r["vehicle_id"], r["type"]) for r in truth} >= set(SCRIPTED.items()), truth
    (episode,) = [r for r in truth if (r["vehicle_id"], r["type"]) == ("TX-00101", "speeding")]
    partition, first, last = speeding_fixes(settings, start, episode)

    with RunningApp(settings, spark) as first_run:
        infractions = first_run.app.running[0]
        assert infractions.spec.name == "infractions"

        def read_into_the_episode() -> bool:
            query = infractions.query
            progress = query.lastProgress if query is not None else None
            ends = [from_progress(s.get("endOffset")) for s in (progress or {}).get("sources", [])]
            return any((get(end or {}, topics.TELEMETRY, partition) or 0) > first for end in ends)

        assert wait_until(read_into_the_episode, timeout_s=300), "the processor never got there"

    with RunningApp(settings, spark) as second_run:

        def scripted_published() -> list[tuple[str, str]]:
            found = read_topic(settings, topics.INFRACTIONS, since)
            return sorted(
                (m["vehicle_id"], m["type"]) for m in found if m["vehicle_id"] in SCRIPTED
            )

        wait_until(lambda: scripted_published() == sorted(SCRIPTED.items()), timeout_s=300)
        published = read_topic(settings, topics.INFRACTIONS, since)
        # The stop fell inside the stream: the second run had the rest of it to read.
        second = second_run.app.running[0].query
        assert second is not None and sum(telemetry_records(p) for p in second.recentProgress) > 0

    scripted = [m for m in published if m["vehicle_id"] in SCRIPTED]
    assert sorted((m["vehicle_id"], m["type"]) for m in scripted) == sorted(SCRIPTED.items()), [
        (m["vehicle_id"], m["type"], m["event_ts"]) for m in published
    ]
    (speeding,) = [m for m in scripted if m["type"] == "speeding"]
    assert speeding["event_ts"] == episode["event_ts"], (speeding, episode, first, last)
    ids = {m["infraction_id"] for m in scripted}
    assert set(ledger_rows(settings.mariadb, ids)) == ids


def speeding_fixes(settings, start, episode) -> tuple[int, int, int]:
    """The speeder's partition and the offsets of its first and last fix of the episode."""
    end = topic_ends(settings, topics.TELEMETRY)
    consumer = cached_consumer(settings.kafka, "test-restart-episode")
    offsets = [
        (record.partition, record.offset)
        for record in read_ranges(consumer, plan_ranges(start, end), 60)
        if record.key == b"TX-00101"
        and episode["start_ts"] <= orjson.loads(record.value)["ts"] <= episode["end_ts"]
    ]
    assert offsets, f"no fix of the speeder's episode on {topics.TELEMETRY}: {episode}"
    (partition,) = {p for p, _ in offsets}
    return partition, offsets[0][1], offsets[-1][1]
