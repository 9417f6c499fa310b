"""End to end across a processor restart, as the appliance test does it under systemd but on
this machine: the e2e scenario's speeder and red-light runner drive in real time; the
processor is stopped while the speeder drives and started again on the same checkpoint;
each scripted infraction is published and in the ledger exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from casatwin.bus import topics
from tests.processor_support import (
    RunningApp,
    casablanca_e2e,
    ledger_rows,
    read_topic,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "e2e.yaml"
SCRIPTED = {"TX-00101": "speeding", "TX-00102": "red_light"}
# The speeder drives at t=30..50 s; the red-light runner crosses at the first red after
# t=60 s, which depends on the wall clock (signal plans run in epoch time): up to one
# 90 s cycle of Place Mohammed V later. 90 s of simulation missed it about half the time.
SECONDS = 170


def test_scripted_infractions_survive_a_processor_restart(spark, mariadb, broker, mongo, tmp_path):
    settings, since, env = casablanca_e2e(
        mariadb, broker, mongo, tmp_path, "casatwin_processor_restart"
    )
    truth_path = tmp_path / "truth.json"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "casatwin.cli", "simulator", "--realtime", "--taxis", "0",
         "--scenario", str(SCENARIO), "--seconds", str(SECONDS),
         "--ground-truth", str(truth_path)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = RunningApp(settings, spark)
        with first:
            time.sleep(35)  # the speeder is on Boulevard Zerktouni now
        with RunningApp(settings, spark):

            def scripted_published() -> list[tuple[str, str]]:
                found = read_topic(settings, topics.INFRACTIONS, since)
                return sorted(
                    (m["vehicle_id"], m["type"]) for m in found if m["vehicle_id"] in SCRIPTED
                )

            wait_for(lambda: scripted_published() == sorted(SCRIPTED.items()), timeout_s=300)
            published = read_topic(settings, topics.INFRACTIONS, since)
        _, stderr = simulator.communicate(timeout=120)
    finally:
        if simulator.poll() is None:
            simulator.kill()
    assert simulator.returncode == 0, stderr[-3000:]

    truth = orjson.loads(truth_path.read_bytes())
    assert {(r["vehicle_id"], r["type"]) for r in truth} >= set(SCRIPTED.items()), truth
    scripted = [m for m in published if m["vehicle_id"] in SCRIPTED]
    assert sorted((m["vehicle_id"], m["type"]) for m in scripted) == sorted(SCRIPTED.items()), [
        (m["vehicle_id"], m["type"], m["event_ts"]) for m in published
    ]
    ids = {m["infraction_id"] for m in scripted}
    assert set(ledger_rows(settings.mariadb, ids)) == ids
