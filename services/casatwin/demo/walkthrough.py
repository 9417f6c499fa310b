"""``casatwin demo walkthrough``: the running architecture, for an audience.

Nodes and the services placed on them come from the Ansible inventory the appliance was
converged from (``--inventory``, the garage's by default); topics, partitions and live
rates from the broker (end offsets sampled twice, ``sample_s`` apart); the services of
``make run`` from the Procfile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from casatwin.bus import topics
from casatwin.config import Settings
from casatwin.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
INVENTORY = ROOT / "inventory" / "garage" / "hosts.yml"
PROCFILE = ROOT / "Procfile"


def placement(inventory: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """node → (its hosts, the services placed on it).

    A group that other groups take as a child is a tier (the garage's ``kafka: {children:
    {broker: {}}}``): a node. A service group placed on hosts directly (the all-in-one
    inventory's ``kafka: {hosts: {localhost: }}``) puts its service on a node per host.
    """
    groups = {name: group or {} for name, group in inventory["all"]["children"].items()}
    tier_names = {child for group in groups.values() for child in group.get("children") or {}}
    nodes = {
        name: (sorted(group.get("hosts") or {}), [])
        for name, group in groups.items()
        if name in tier_names
    }
    for name, group in groups.items():
        if name in tier_names:
            continue
        for child in group.get("children") or {}:
            if child in nodes:
                nodes[child][1].append(name)
        for host in group.get("hosts") or {}:
            nodes.setdefault(host, ([host], []))[1].append(name)
    return nodes


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

    try:
        tiers = placement(yaml.safe_load(inventory.read_text()))
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"cannot read the inventory {inventory}: {exc}",
            hint="pass --inventory with the hosts.yml the twin was converged from "
            "(inventory/garage/hosts.yml, inventory/local/hosts.yml or your own)",
        ) from None
    shown = inventory.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    lines = ["CasaTwin — a real-time traffic twin of Casablanca", "", f"Nodes (inventory {shown}):"]
    for tier, (hosts, services) in tiers.items():
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
