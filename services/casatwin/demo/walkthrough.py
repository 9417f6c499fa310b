"""``casatwin demo walkthrough``: the running architecture, for an audience.

Nodes and the services placed on them come from the Ansible inventory (the same file the
appliance is converged from); topics, partitions and live rates from the broker (end
offsets sampled twice, ``sample_s`` apart); the services of ``make run`` from the Procfile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from casatwin.bus import topics
from casatwin.config import Settings

ROOT = Path(__file__).resolve().parents[3]
INVENTORY = ROOT / "inventory" / "garage" / "hosts.yml"
PROCFILE = ROOT / "Procfile"


def placement(inventory: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """tier → (its hosts, the services placed on it): a placement group's children are
    tiers (``kafka: {children: {broker: {}}}``)."""
    groups = inventory["all"]["children"]
    tiers = {name: sorted(g.get("hosts") or {}) for name, g in groups.items() if "hosts" in g}
    services: dict[str, list[str]] = {tier: [] for tier in tiers}
    for name, group in groups.items():
        for child in (group or {}).get("children") or {}:
            if child in services:
                services[child].append(name)
    return {tier: (hosts, services[tier]) for tier, hosts in tiers.items()}


def topic_rates(settings: Settings, sample_s: float) -> dict[str, tuple[int, float]] | None:
    """topic → (partitions, messages per second), or None when no broker answers."""
    from casatwin.bus.watermarks import EndOffsets

    names = [spec.name for spec in topics.TOPICS]
    offsets = EndOffsets(settings.kafka, "casatwin-walkthrough", timeout_s=3)
    try:
        before = offsets.ends(names)
        time.sleep(sample_s)
        after = offsets.ends(names)
    except Exception:  # any broker failure means "not running"
        return None
    finally:
        offsets.close()
    out = {}
    for name in names:
        keys = [k for k in after if k[0] == name]
        grown = sum(after[k] - before.get(k, 0) for k in keys)
        out[name] = (len(keys), grown / sample_s)
    return out


def describe(settings: Settings, sample_s: float, inventory: Path = INVENTORY) -> str:
    from casatwin.devstack.runner import parse_procfile

    lines = ["CasaTwin — a real-time traffic twin of Casablanca", "", "Nodes (inventory "
             f"{inventory.relative_to(ROOT)}):"]  # fmt: skip
    for tier, (hosts, services) in placement(yaml.safe_load(inventory.read_text())).items():
        lines.append(f"  {tier:<8} {', '.join(hosts):<10} {', '.join(services)}")
    lines += ["", "Services (make run, Procfile):"]
    for name, command in parse_procfile(PROCFILE).items():
        lines.append(f"  {name:<11} {command}")
    lines += [
        "",
        "Flow:",
        "  simulator ─▶ casatwin.telemetry ─▶ Spark processor ─▶ ledger (MariaDB),",
        "      read model (MongoDB), casatwin.infractions ─▶ dashboard ─WebSocket─▶ screens",
        "  gateway (sensor API) ─▶ casatwin.sensors.* ; malformed input ─▶ casatwin.dlq",
        "",
        f"Topics on {settings.kafka.bootstrap}:",
    ]
    rates = topic_rates(settings, sample_s)
    for spec in topics.TOPICS:
        if rates is None:
            lines.append(f"  {spec.name:<31} {spec.purpose}")
        else:
            partitions, rate = rates[spec.name]
            lines.append(
                f"  {spec.name:<31} {partitions:>2} partitions {rate:>9.1f} msg/s  {spec.purpose}"
            )
    if rates is None:
        lines.append(f"  (no broker answers at {settings.kafka.bootstrap}: start the twin with "
                     "`make run` for live rates)")  # fmt: skip
    return "\n".join(lines)
