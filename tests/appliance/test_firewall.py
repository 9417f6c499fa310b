"""The firewall's table derived for the garage test inventory (no containers, no Ansible run).

roles/firewall/filter_plugins/firewall.py turns the table of roles/firewall/defaults/main.yml
(``firewall_ports``) into each node's accept rules; here it runs on the groups of the
inventory the converge test uses (inventory/garage + garage-test-inventory.yml: Kafka on the
three nodes), with each node's address given. The rendered rulesets themselves, and nft's
check of them, are in test_static.py.
"""

from __future__ import annotations

import pytest
import yaml
from jinja2 import ChainableUndefined
from jinja2.nativetypes import NativeEnvironment

from casatwin.appliance import REPO, inventory_groups, role_plugin

pytestmark = pytest.mark.appliance

firewall = role_plugin("firewall", "filter_plugins/firewall.py")
ADDRESSES = {"lenovo": ["10.0.0.10"], "optiplex": ["10.0.0.11"], "prodesk": ["10.0.0.12"]}
OPERATORS = ["100.64.0.0/10", "fd7a:115c:a1e0::/48"]


def _defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())


def _render(value, context: dict):
    """A value of the defaults as Ansible templates it (native types: lists stay lists)."""
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    if isinstance(value, str) and "{{" in value:
        env = NativeEnvironment(undefined=ChainableUndefined)
        return env.from_string(value).render(context)
    return value


def table(context: dict | None = None) -> list[dict]:
    """firewall_ports rendered: with only the firewall's defaults (as in the base tier, where
    the other roles' variables are not loaded), or over a context of other roles' variables."""
    defaults = _defaults("firewall")
    return _render(defaults["firewall_ports"], {**defaults, **(context or {})})


@pytest.fixture(scope="module")
def groups() -> dict[str, list[str]]:
    return inventory_groups("inventory/garage", "tests/appliance/garage-test-inventory.yml")


def rules(groups, host: str) -> dict[str, dict]:
    found = firewall.firewall_rules(table(), groups, host, ADDRESSES, OPERATORS)
    return {rule["name"]: rule for rule in found}


def test_the_ports_are_the_owning_roles_defaults():
    """Without the other roles' variables (the base tier), every port falls back to exactly
    what the owning role's defaults say: the table renders the same either way."""
    context = {}
    for role in ("kafka", "mariadb", "mongodb", "spark", "monitoring", "casatwin"):
        context.update(_defaults(role))
    assert table() == table(context)
    ports = {entry["name"]: int(entry["port"]) for entry in table()}
    casatwin = _defaults("casatwin")["casatwin_services"]
    assert ports["dashboard"] == casatwin["dashboard"]["settings"]["CASATWIN_DASHBOARD_PORT"]
    assert ports["dashboard"] == _defaults("kiosk")["kiosk_dashboard_port"]
    fake_api = casatwin["gateway-fake-api"]["settings"]["CASATWIN_FAKE_API_PORT"]
    assert ports["fake-api"] == fake_api
    metrics = _defaults("monitoring")["monitoring_casatwin_metrics_ports"]
    assert {s: ports[f"{s}-metrics"] for s in metrics} == metrics


def test_the_service_groups_are_the_casatwin_roles():
    defaults = _defaults("firewall")
    services = _defaults("casatwin")["casatwin_services"]
    assert set(defaults["firewall_service_groups"]) == {s["group"] for s in services.values()}
    assert set(defaults["firewall_kafka_client_groups"]) == {
        s["group"] for s in services.values()
    } - {"gateway_fake_api"}  # the fake traffic API is the only service without the bus


def test_every_port_of_the_table_is_distinct_per_node(groups):
    """Two entries on one node never share a port (a copy-paste would open one to both)."""
    for host in groups["all"]:
        seen: dict[int, str] = {}
        for rule in rules(groups, host).values():
            first, _, last = rule["ports"].partition("-")
            for port in range(int(first), int(last or first) + 1):
                assert port not in seen, (host, port, seen[port], rule["name"])
                seen[port] = rule["name"]


def test_mariadb_admits_exactly_the_services_nodes(groups):
    """On the broker node: MariaDB from the edge and compute nodes (the services' nodes), not
    from itself over the network (loopback is free anyway)."""
    mariadb = rules(groups, "optiplex")["mariadb"]
    assert mariadb["peers"] == ["lenovo", "prodesk"]
    assert mariadb["v4"] == ["10.0.0.10", "10.0.0.12"] and not mariadb["anywhere"]
    assert "mariadb" not in rules(groups, "lenovo") and "mariadb" not in rules(groups, "prodesk")


def test_kafka_admits_its_clients_and_the_controllers_only_the_brokers(groups):
    for host in ("lenovo", "optiplex", "prodesk"):
        here = rules(groups, host)
        others = sorted(set(ADDRESSES) - {host})
        assert here["kafka"]["peers"] == others, host  # every node is a client or a broker
        assert here["kafka-controller"]["peers"] == others, host  # the three voters


def test_the_spark_callbacks_are_open_to_the_spark_nodes_only(groups):
    compute, broker = rules(groups, "prodesk"), rules(groups, "optiplex")
    assert compute["spark-driver"]["ports"] == "7079-7080"
    assert compute["spark-driver"]["peers"] == ["optiplex"]  # the master; executors are local
    # One worker, beside the processor: its executors' block managers are called over
    # loopback only, and stay closed to the network...
    assert "spark-executors" not in compute
    assert compute["spark-worker"]["peers"] == ["optiplex"]
    # ...a second worker (on the broker node) opens them to the other Spark node.
    two = {**groups, "spark_worker": ["prodesk", "optiplex"]}
    executors = {r["name"]: r for r in firewall.firewall_rules(
        table(), two, "prodesk", ADDRESSES, OPERATORS)}["spark-executors"]  # fmt: skip
    assert (executors["ports"], executors["peers"]) == ("7081-7089", ["optiplex"])
    assert broker["spark-master"]["peers"] == ["prodesk"]
    assert "spark-driver" not in broker and "spark-driver" not in rules(groups, "lenovo")


def test_the_screens_are_open_to_the_operators_and_the_metrics_to_prometheus(groups):
    edge, compute = rules(groups, "lenovo"), rules(groups, "prodesk")
    # The kiosk is on the dashboard's node (loopback): the operators only.
    assert edge["dashboard"]["peers"] == [] and edge["dashboard"]["operators"]
    assert edge["dashboard"]["v4"] == ["100.64.0.0/10"]
    assert edge["dashboard"]["v6"] == ["fd7a:115c:a1e0::/48"]
    assert compute["processor-metrics"]["peers"] == ["lenovo"]  # Prometheus
    assert compute["node-exporter"]["peers"] == ["lenovo"]
    # The fake traffic API and the gateway share the edge node: nobody else gets in.
    assert "fake-api" not in edge


def test_a_port_nobody_else_reaches_is_left_closed():
    only = [{"name": "lonely", "port": 1234, "on_groups": ["a"], "from_groups": ["a"]}]
    assert firewall.firewall_rules(only, {"a": ["x"]}, "x", {}, OPERATORS) == []


def test_a_peer_without_an_address_is_an_error_not_a_narrower_rule():
    entry = [{"name": "db", "port": 3306, "on_groups": ["db"], "from_groups": ["app"]}]
    with pytest.raises(ValueError, match="no address for"):
        firewall.firewall_rules(entry, {"db": ["x"], "app": ["y"]}, "x", {}, OPERATORS)


def test_resolved_addresses_leave_loopback_out():
    results = [
        {"item": "a", "stdout": "10.1.2.3  STREAM a\n10.1.2.3  DGRAM\nfd00::3 STREAM a\n"},
        {"item": "b", "stdout": "127.0.1.1  STREAM b\n"},
        {"item": "c", "stdout": ""},
    ]
    assert firewall.resolved_addresses(results) == {"a": ["10.1.2.3", "fd00::3"], "b": [], "c": []}


def test_ssh_sources_must_admit_the_controller():
    assert firewall.firewall_admits("192.168.1.5", [])
    assert firewall.firewall_admits("192.168.1.5", ["192.168.1.0/24"])
    assert not firewall.firewall_admits("10.0.0.1", ["192.168.1.0/24", "fd00::/8"])
