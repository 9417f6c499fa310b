"""The memory plan's arithmetic (pure functions of the role's filter plugin)."""

from __future__ import annotations

import pytest

from casatwin.appliance import role_plugin

pytestmark = pytest.mark.appliance

mp = role_plugin("memory_plan", "filter_plugins/memory_plan.py")

EVERYTHING = [
    "node_exporter", "kafka", "mongod", "mariadb", "spark_master", "spark_worker",
    "processor", "simulator", "gateway", "gateway_fake_api", "dispatcher", "dashboard",
    "prometheus", "grafana", "kiosk",
]  # fmt: skip


def test_everything_on_4gb_does_not_fit_and_says_by_how_much():
    plan = mp.memory_plan(EVERYTHING, 4096, "small")
    floors = sum(mp.DEFAULT_COMPONENTS[c][0] for c in EVERYTHING)
    assert not plan["fits"]
    assert plan["floors_mb"] == floors
    assert plan["overflow_mb"] == floors + 768 - 4096
    assert any("DOES NOT FIT" in line for line in mp.memory_plan_report(plan))


def test_everything_on_8gb_fits_within_the_node():
    plan = mp.memory_plan(EVERYTHING, 7842, "big")
    assert plan["fits"]
    assert sum(plan["budgets_mb"].values()) + plan["reserved_mb"] <= 7842
    assert plan["page_cache_mb"] >= 0
    for name, mb in plan["budgets_mb"].items():
        floor, ceiling, _ = mp.DEFAULT_COMPONENTS[name]
        assert floor <= mb <= ceiling, name


def test_budgets_grow_with_weight_and_stop_at_ceilings():
    plan = mp.memory_plan(["kafka", "mariadb"], 16384)
    assert plan["budgets_mb"] == {"kafka": 1792, "mariadb": 2048}  # both at their ceilings
    assert plan["page_cache_mb"] == 16384 - 768 - 1792 - 2048


def test_derived_sizes_follow_budgets():
    plan = mp.memory_plan(["kafka", "mariadb", "mongod", "spark_worker", "processor"], 7842)
    b = plan["budgets_mb"]
    assert plan["kafka_heap_mb"] == (b["kafka"] - 256) // 64 * 64
    assert plan["mariadb_buffer_pool_mb"] % 128 == 0
    assert plan["mariadb_buffer_pool_mb"] <= b["mariadb"] * 0.6
    assert plan["mongodb_cache_gb"] <= b["mongod"] / 1024 / 2 + 0.01
    assert plan["spark_worker_memory_mb"] < b["spark_worker"]
    assert plan["spark_executor_memory_mb"] < plan["spark_worker_memory_mb"]
    assert plan["spark_driver_memory_mb"] < b["processor"]


def test_absent_components_have_no_derived_sizes():
    plan = mp.memory_plan(["simulator"], 8192)
    assert plan["kafka_heap_mb"] is None and plan["mongodb_cache_gb"] is None


def test_overrides_and_unknown_components():
    plan = mp.memory_plan(["kafka"], 8192, overrides={"kafka": [1024, 1024, 1]})
    assert plan["budgets_mb"]["kafka"] == 1024
    with pytest.raises(mp.PlanError, match="no memory budget for warp_drive"):
        mp.memory_plan(["warp_drive"], 8192)
    with pytest.raises(mp.PlanError, match=r"must be \[floor_mb, max_mb, weight\]"):
        mp.memory_plan(["kafka"], 8192, overrides={"kafka": 5})


def test_components_follow_groups_engines_and_switches():
    groups = ["broker", "kafka", "mongodb", "mariadb", "dashboard", "grafana", "kiosk"]
    assert mp.placed_components(groups, "nx27017", {"dashboard": True}, False, False) == [
        "node_exporter", "kafka", "nx27017", "mariadb", "dashboard",
    ]  # fmt: skip
    assert "dashboard" not in mp.placed_components(groups, services_enabled={})
    assert {"kafka", "mongod", "grafana", "kiosk"} <= set(mp.placed_components(groups))
