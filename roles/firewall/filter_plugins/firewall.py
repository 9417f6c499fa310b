"""The firewall's table turned into one node's rules: who may reach which port here.

``firewall_ports`` (the role's defaults) says, port by port, on which inventory groups it
listens (``on_groups``) and which groups (``from_groups``; or the operators' networks, or
anyone) talk to it. For a node,
:func:`firewall_rules` keeps the ports that listen there and names the nodes allowed in by
their addresses, which the role resolves on the node (as the services resolve each other's
names). Pure functions of their arguments: tests/appliance/test_firewall.py runs them on the
garage's inventory.
"""

from __future__ import annotations

import ipaddress
from typing import Any

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _members(groups: dict[str, list[str]], names: list[str]) -> set[str]:
    """The hosts of these groups ('all' is every host); a group the inventory lacks is
    empty (an inventory without a kiosk opens nothing to it)."""
    return {host for name in names for host in groups.get(name) or []}


def _listens_here(entry: dict[str, Any], groups: dict[str, list[str]], host: str) -> bool:
    return host in _members(groups, list(entry["on_groups"]))


def _ports(entry: dict[str, Any]) -> str:
    first = int(entry["port"])
    last = int(entry.get("port_end") or first)
    if last < first:
        raise ValueError(f"firewall port {entry['name']}: port_end {last} < port {first}")
    return str(first) if last == first else f"{first}-{last}"


def firewall_peers(
    ports: list[dict[str, Any]], groups: dict[str, list[str]], host: str
) -> list[str]:
    """The other nodes some port of this node admits: their addresses are needed here."""
    peers: set[str] = set()
    for entry in ports:
        if _listens_here(entry, groups, host):
            peers |= _members(groups, list(entry.get("from_groups") or []))
    return sorted(peers - {host})


def resolved_addresses(results: list[dict[str, Any]]) -> dict[str, list[str]]:
    """``getent ahosts NAME`` outputs (the results of a looped command) → {name: addresses},
    loopback left out: a peer reaches this node from one of its own network addresses."""
    out: dict[str, list[str]] = {}
    for result in results:
        found = []
        for line in (result.get("stdout") or "").splitlines():
            address = line.split()[0] if line.split() else ""
            try:
                parsed = ipaddress.ip_address(address)
            except ValueError:
                continue
            if not any(parsed in net for net in LOOPBACK) and address not in found:
                found.append(address)
        out[result["item"]] = found
    return out


def _split(addresses: list[str]) -> tuple[list[str], list[str]]:
    v4, v6 = [], []
    for text in addresses:
        network = ipaddress.ip_network(text, strict=False)
        # A single address is written as one; a network with its prefix.
        shown = str(network.network_address) if network.num_addresses == 1 else str(network)
        (v4 if network.version == 4 else v6).append(shown)
    return sorted(set(v4)), sorted(set(v6))


def firewall_rules(
    ports: list[dict[str, Any]],
    groups: dict[str, list[str]],
    host: str,
    addresses: dict[str, list[str]],
    operator_networks: list[str],
) -> list[dict[str, Any]]:
    """This node's accept rules: for each port of the table that listens here, the proto,
    the port (or range), and the IPv4 and IPv6 sources (the peer nodes' addresses, the
    operators' networks) — or ``anywhere``. A port nobody may reach from another node is
    left out (closed; this node still reaches it over loopback)."""
    rules = []
    for entry in ports:
        if not _listens_here(entry, groups, host):
            continue
        peers = sorted(_members(groups, list(entry.get("from_groups") or [])) - {host})
        missing = [peer for peer in peers if not addresses.get(peer)]
        if missing:
            raise ValueError(f"firewall port {entry['name']}: no address for {missing}")
        sources = [a for peer in peers for a in addresses[peer]]
        if entry.get("from_operators"):
            sources += list(operator_networks)
        anywhere = bool(entry.get("from_anywhere"))
        v4, v6 = _split(sources)
        if not (anywhere or v4 or v6):
            continue
        rules.append({
            "name": entry["name"],
            "proto": entry.get("proto", "tcp"),
            "ports": _ports(entry),
            "anywhere": anywhere,
            "v4": [] if anywhere else v4,
            "v6": [] if anywhere else v6,
            "peers": peers,
            "operators": bool(entry.get("from_operators")),
            "why": entry.get("why", ""),
        })  # fmt: skip
    return rules


def firewall_admits(address: str, networks: list[str]) -> bool:
    """Whether an address is in one of these networks (an empty list admits anyone)."""
    if not networks:
        return True
    parsed = ipaddress.ip_address(address)
    return any(parsed in ipaddress.ip_network(n, strict=False) for n in networks)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "firewall_peers": firewall_peers,
            "firewall_rules": firewall_rules,
            "firewall_resolved_addresses": resolved_addresses,
            "firewall_admits": firewall_admits,
        }
