"""The faults demo, short: the processor killed with SIGKILL, MariaDB stopped, the broker
killed with SIGKILL and started again on its log while a scenario plays; the broker comes
back with every record it had acknowledged, and the reconciliation of the ground truth
with the ledger finds zero lost and zero duplicated infractions.

It runs on a stack of its own (the session's servers are shared: stopping them would
break other tests). Wall time 170–205 s on the shared 2-core machine at load average 9–20;
expect less on a quiet CI machine.
"""

from __future__ import annotations

import pytest

from casatwin.config import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.slow]

SCENARIO = """
name: faults-short
city: casablanca
seed: 11
duration_s: 60
traffic: {taxis: 30, speeder_share: 0, red_light_runner_share: 0, illegal_parker_share: 0}
events:
  - {type: speeding, vehicle: TX-00201, at: 3, road: Boulevard Zerktouni, from: Twin Center,
     towards: Zerktouni × Hassan II, speed_kmh: 95, duration_s: 10}
  - {type: red_light, vehicle: TX-00202, at: 10, intersection: Place Mohammed V}
  - {type: illegal_parking, vehicle: TX-00203, at: 15, zone: Casa Port, duration_s: 30}
"""


def test_the_faults_demo_loses_nothing_and_records_nothing_twice(tmp_path):
    from casatwin.benchmarks import private_stack
    from casatwin.demo import faults
    from casatwin.demo.cli import demo_settings
    from casatwin.devstack.runner import prepare

    scenario = tmp_path / "faults-short.yaml"
    scenario.write_text(SCENARIO)
    settings = demo_settings(Settings()).replace(
        processor={"dwell_s": 15.0}, registry={"drivers": 13_000}
    )
    plan = faults.FaultPlan(
        scenario=scenario,
        kill_processor_at_s=8,
        mariadb_at_s=12,
        mariadb_down_s=8,
        broker_at_s=20,
        broker_down_s=3,
        catch_up_s=180,
    )
    lines: list[str] = []
    with private_stack(settings, prefix="casatwin-test-faults-") as (private, stack):
        prepare(private)
        result = faults.run(private, stack, plan, say=lines.append)
    report = "\n".join(lines)
    print(report)  # the demo's narration (pytest -s or -rP shows it)
    assert result.expected >= 3, report  # the speeder, the red-light runner, the parker
    assert result.summary()["lost"] == 0, report
    assert result.summary()["duplicated"] == 0, report
    assert "FAULT 3: kill -9 the broker" in report and "reconciliation:" in report
    assert "none missing" in report  # the broker's log came back whole
