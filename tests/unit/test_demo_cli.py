"""`casatwin demo`: what can be checked without servers."""

import yaml

from casatwin.cli import main
from casatwin.demo.walkthrough import INVENTORY, describe, placement


def test_gameday_without_its_scenario_says_what_is_missing(tmp_path, capsys):
    assert main(["demo", "gameday", "--scenario", str(tmp_path / "gameday.yaml")]) == 2
    err = capsys.readouterr().err
    assert "gameday.yaml not found" in err and "congestion" in err


def test_placement_puts_each_service_on_its_tier():
    tiers = placement(yaml.safe_load(INVENTORY.read_text()))
    assert tiers["compute"][0] == ["prodesk"]
    assert "processor" in tiers["compute"][1]
    assert {"kafka", "mariadb"} <= set(tiers["broker"][1])


def test_walkthrough_without_a_broker_lists_topics_and_says_so(base_settings):
    from casatwin.devstack.servers import free_port

    settings = base_settings.replace(kafka={"bootstrap": f"127.0.0.1:{free_port()}"})
    text = describe(settings, sample_s=0.1)
    assert "casatwin.telemetry" in text and "no broker answers" in text


def test_walkthrough_reads_the_inventory_it_is_given(tmp_path, capsys, monkeypatch, base_settings):
    from casatwin.devstack.servers import free_port

    monkeypatch.setenv("CASATWIN_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # no broker
    monkeypatch.setenv("CASATWIN_GENERAL_DATA_DIR", str(base_settings.general.data_dir))
    local = INVENTORY.parents[1] / "local" / "hosts.yml"
    # All-in-one: every service on one node, localhost.
    nodes = placement(yaml.safe_load(local.read_text()))
    assert list(nodes) == ["localhost"]
    assert {"kafka", "processor", "dashboard"} <= set(nodes["localhost"][1])
    assert main(["demo", "walkthrough", "--sample-s", "0.1", "--inventory", str(local)]) == 0
    out = capsys.readouterr().out
    assert "inventory/local/hosts.yml" in out and "localhost" in out and "prodesk" not in out
    missing = tmp_path / "hosts.yml"
    assert main(["demo", "walkthrough", "--inventory", str(missing)]) == 2
    assert "cannot read the inventory" in capsys.readouterr().err


def test_the_faults_demo_reads_what_the_simulator_gave_up_on(tmp_path):
    from casatwin.demo.faults import simulator_undelivered

    log = tmp_path / "simulator.log"
    assert simulator_undelivered(log) == 0  # no log yet
    log.write_text(
        "2026-12-06T22:00:00.000Z INFO  simulator  simulator started mode=real time\n"
        "2026-12-06T22:01:00.000Z INFO  simulator  simulator stopped sim_seconds=60.0 "
        "steps=120 sent=3600 delivered=3581 failed=12 refused=7 undelivered_at_exit=0\n"
    )
    assert simulator_undelivered(log) == 19
