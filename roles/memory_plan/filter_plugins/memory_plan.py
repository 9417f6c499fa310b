"""The memory plan of a node: how its RAM is shared among the services placed on it.

Old 8 GB desktops crashed under the seed's default JVM heaps; here every server and service
gets an explicit budget, and the JVM heaps, buffer pools and caches are derived from those
budgets. A component has a floor (below it, it does not run well), a ceiling (beyond it,
memory is better left to the page cache, which Kafka and MariaDB use) and a weight (its
share of what is left above the floors). The OS keeps a fixed reserve.

Pure functions, used by the ``memory_plan`` role as Ansible filters and by the unit tests.
"""

from __future__ import annotations

from typing import Any

ROUND_MB = 64

# component: (floor MB, ceiling MB, weight). Sized for 8 GB nodes; inventories override any
# entry with `memory_plan_components`.
DEFAULT_COMPONENTS: dict[str, tuple[int, int, float]] = {
    "kafka": (768, 1792, 3),  # Apache Kafka JVM: heap + metaspace, threads, direct buffers
    "mongod": (512, 1536, 2),  # MongoDB: WiredTiger cache + connections
    "nx27017": (128, 384, 0.5),  # the MongoDB-wire demo server (SQLite)
    "mariadb": (512, 2048, 2),  # MariaDB: buffer pool + per-connection buffers
    "spark_master": (384, 640, 0.5),
    "spark_worker": (1024, 3072, 4),  # worker daemon + the executors it launches
    "processor": (768, 2048, 3),  # Spark driver JVM + its Python workers
    "simulator": (256, 1024, 1),
    "gateway": (128, 256, 0.25),
    "gateway_fake_api": (64, 128, 0.1),
    "dispatcher": (128, 512, 0.5),
    "dashboard": (256, 768, 1),
    "prometheus": (256, 768, 0.5),
    "grafana": (128, 256, 0.25),
    "node_exporter": (32, 64, 0),
    "kiosk": (512, 1024, 1),  # Chromium
}

# Memory a JVM uses beyond its heap (metaspace, code cache, thread stacks, GC structures).
JVM_OFF_HEAP_MB = 256
# The Spark worker's own daemon (heap 256m) beside the executors it launches.
SPARK_WORKER_DAEMON_MB = 384


class PlanError(ValueError):
    """The inputs of a plan are wrong (an unknown service, a bad override)."""


def _round_down(mb: float) -> int:
    return int(mb // ROUND_MB) * ROUND_MB


def memory_plan(
    components: list[str],
    total_mb: int,
    node: str = "",
    reserved_mb: int = 768,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Share ``total_mb`` among ``components``; see :func:`derived` for the sizes that follow.

    Floors first; what remains is shared by weight, each share capped at the component's
    ceiling, and what a ceiling refuses goes to the others (water filling). What is left
    when every component sits at its ceiling stays free for the page cache.
    """
    table = dict(DEFAULT_COMPONENTS)
    for name, value in (overrides or {}).items():
        try:
            floor, ceiling, weight = value
        except (TypeError, ValueError):
            raise PlanError(
                f"memory_plan_components.{name} must be [floor_mb, max_mb, weight]"
            ) from None
        table[name] = (int(floor), int(ceiling), float(weight))
    unknown = sorted(set(components) - set(table))
    if unknown:
        raise PlanError(f"no memory budget for {', '.join(unknown)} (memory_plan_components)")

    names = sorted(set(components), key=list(table).index)
    budgets = {n: float(table[n][0]) for n in names}
    available = total_mb - reserved_mb
    floors = sum(budgets.values())
    spare = available - floors
    open_ = [n for n in names if table[n][2] > 0 and budgets[n] < table[n][1]]
    while spare > 1 and open_:
        weight = sum(table[n][2] for n in open_)
        handed = 0.0
        for n in list(open_):
            room = table[n][1] - budgets[n]
            share = min(room, spare * table[n][2] / weight)
            budgets[n] += share
            handed += share
            if share >= room:
                open_.remove(n)
        spare -= handed
        if handed < 1:
            break
    rounded = {n: max(int(table[n][0]), _round_down(b)) for n, b in budgets.items()}
    assigned = sum(rounded.values())
    return {
        "node": node,
        "total_mb": int(total_mb),
        "reserved_mb": int(reserved_mb),
        "budgets_mb": rounded,
        "floors_mb": int(floors),
        "page_cache_mb": int(total_mb - reserved_mb - assigned),
        "fits": floors <= available,
        "overflow_mb": int(max(0, floors - available)),
        **derived(rounded),
    }


DERIVED = (
    "kafka_heap_mb",
    "spark_daemon_memory_mb",
    "spark_worker_memory_mb",
    "spark_executor_memory_mb",
    "spark_driver_memory_mb",
    "mariadb_buffer_pool_mb",
    "mongodb_cache_gb",
)


def derived(budgets: dict[str, int]) -> dict[str, Any]:
    """Heaps, pools and caches that follow from the budgets (absent components: None)."""
    out: dict[str, Any] = dict.fromkeys(DERIVED)
    if "kafka" in budgets:
        out["kafka_heap_mb"] = _round_down(budgets["kafka"] - JVM_OFF_HEAP_MB)
    if "spark_master" in budgets:
        out["spark_daemon_memory_mb"] = _round_down(budgets["spark_master"] - JVM_OFF_HEAP_MB / 2)
    if "spark_worker" in budgets:
        # The worker offers its executors what the budget leaves after its own daemon; each
        # executor's JVM needs off-heap room on top of spark.executor.memory.
        offered = budgets["spark_worker"] - SPARK_WORKER_DAEMON_MB
        out["spark_worker_memory_mb"] = _round_down(offered)
        out["spark_executor_memory_mb"] = _round_down(offered - JVM_OFF_HEAP_MB)
    if "processor" in budgets:
        # The driver JVM gets half; the other half is the Python side (pickling, Arrow).
        out["spark_driver_memory_mb"] = max(ROUND_MB * 6, _round_down(budgets["processor"] / 2))
    if "mariadb" in budgets:
        # Buffer pool in 128 MB chunks (innodb_buffer_pool_chunk_size), 60 % of the budget.
        out["mariadb_buffer_pool_mb"] = max(128, int(budgets["mariadb"] * 0.6 // 128) * 128)
    if "mongod" in budgets:
        out["mongodb_cache_gb"] = max(0.25, round(budgets["mongod"] * 0.5 / 1024, 2))
    return out


# Inventory group (and casatwin service) → plan component, for the Python services.
SERVICE_GROUPS = {
    "simulator": "simulator",
    "gateway": "gateway",
    "gateway_fake_api": "gateway-fake-api",
    "processor": "processor",
    "dispatcher": "dispatcher",
    "dashboard": "dashboard",
}


def placed_components(
    groups: list[str],
    mongodb_engine: str = "mongodb",
    services_enabled: dict[str, bool] | None = None,
    grafana_enabled: bool = True,
    kiosk_enabled: bool = True,
) -> list[str]:
    """The plan components a node runs, from its inventory groups and the switches."""
    enabled = services_enabled or {}
    found = ["node_exporter"]
    if "kafka" in groups:
        found.append("kafka")
    if "mongodb" in groups:
        found.append("mongod" if mongodb_engine == "mongodb" else "nx27017")
    found += [g for g in ("mariadb", "spark_master", "spark_worker", "prometheus") if g in groups]
    found += [g for g, svc in SERVICE_GROUPS.items() if g in groups and enabled.get(svc, False)]
    if "grafana" in groups and grafana_enabled:
        found.append("grafana")
    if "kiosk" in groups and kiosk_enabled:
        found.append("kiosk")
    return found


def memory_plan_report(plan: dict[str, Any]) -> list[str]:
    """The plan as lines an operator reads at the start of a run."""
    lines = [
        f"memory plan of {plan['node'] or 'this node'}: {plan['total_mb']} MB total, "
        f"{plan['reserved_mb']} MB kept for the OS",
    ]
    for name, mb in plan["budgets_mb"].items():
        lines.append(f"  {name:<18} {mb:>6} MB")
    lines.append(f"  {'(page cache)':<18} {plan['page_cache_mb']:>6} MB")
    sizes = {k: v for k, v in plan.items() if k in DERIVED and v is not None}
    if sizes:
        lines.append("  derived: " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
    if not plan["fits"]:
        lines.append(
            f"  DOES NOT FIT: the floors need {plan['floors_mb']} MB + {plan['reserved_mb']} MB "
            f"for the OS, {plan['overflow_mb']} MB more than the node's {plan['total_mb']} MB"
        )
    return lines


class FilterModule:
    """Ansible filters: ``memory_plan``, ``memory_plan_report``, ``memory_plan_components``."""

    def filters(self) -> dict[str, Any]:
        return {
            "memory_plan": memory_plan,
            "memory_plan_report": memory_plan_report,
            "memory_plan_components": placed_components,
        }
