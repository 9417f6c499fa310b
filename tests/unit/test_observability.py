"""Metrics catalogue, Grafana dashboards, alert rules and the scrape configuration.

The dashboards and rules must only name metrics the services export (a renamed metric
breaks this test, not a dashboard at 3 a.m.), and Prometheus's own checker must accept the
rules and the scrape configuration the monitoring role renders from the inventory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from casatwin.observability import catalog
from casatwin.observability.families import HOP_SECONDS, observe_event_latency

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
DASHBOARDS = sorted((ROLE / "files" / "dashboards").glob("*.json"))
RULES = ROLE / "files" / "rules" / "casatwin.yml"

# Series that come from Prometheus itself and from node_exporter, not from our services.
FOREIGN = re.compile(r"^(up|node_\w+)$")
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (label matchers, grouping labels, ranges,
    strings and function names removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    tokens = re.finditer(r"(?<![\w:.])[a-zA-Z_:][\w:]*\b(?!\s*\()", expr)
    return {t.group() for t in tokens} - PROMQL_WORDS


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: `make setup` installs the Debian package prometheus")
    return subprocess.run(
        ["promtool", *args], check=False, capture_output=True, text=True, timeout=60
    )


def test_metric_names_in_promql():
    expr = (
        'histogram_quantile(0.95, sum by (le, hop) (rate(casatwin_hop_seconds_bucket{hop="x"}'
        "[5m]))) > 0.2 and deriv(casatwin_processor_lag_records[5m]) > 0"
    )
    assert metric_names(expr) == {"casatwin_hop_seconds_bucket", "casatwin_processor_lag_records"}


def test_every_service_exports_the_shared_families_and_its_own():
    for service in catalog.SERVICES:
        names = catalog.exported_names(service)
        assert {"casatwin_bus_consumed_total", "casatwin_dlq_messages_total"} <= names, service
        assert "casatwin_hop_seconds_bucket" in names
    assert "casatwin_gateway_breaker_state" in catalog.exported_names("gateway")
    assert "casatwin_processor_batch_seconds_bucket" in catalog.exported_names("processor")
    assert "casatwin_dashboard_queued_messages" in catalog.exported_names("dashboard")
    assert "casatwin_dispatch_response_seconds_bucket" in catalog.exported_names("dispatcher")
    assert "casatwin_gateway_breaker_state" not in catalog.exported_names("simulator")


def test_event_latency_is_observed_from_event_ts():
    before = HOP_SECONDS.labels("test_hop")._sum.get()
    observe_event_latency("test_hop", [{"event_ts": 1_000}, {"no": "event_ts"}], now_ms=1_250)
    assert HOP_SECONDS.labels("test_hop")._sum.get() - before == pytest.approx(0.25)


def test_each_new_batch_of_a_querys_progress_is_observed_once():
    from casatwin.observability.families import SPARK_BATCH_ROWS, SPARK_BATCH_SECONDS
    from casatwin.processor.progress import new_batches, observe_batches

    def progress(batch_id: int, rows: int) -> dict:
        return {
            "batchId": batch_id,
            "numInputRows": rows,
            "batchDuration": 120,
            "durationMs": {"triggerExecution": 118},
            "processedRowsPerSecond": 333.0,
        }

    recent = [progress(7, 10), progress(5, 1), progress(6, 40)]  # Spark keeps the last 100
    rows, seconds = SPARK_BATCH_ROWS.labels("test_query"), SPARK_BATCH_SECONDS.labels("test_query")
    before_rows, before_s = rows._value.get(), seconds._sum.get()
    new = new_batches(recent, after_batch=5)
    assert [p["batchId"] for p in new] == [6, 7]
    observe_batches("test_query", new)
    assert rows._value.get() - before_rows == 50
    assert seconds._sum.get() - before_s == pytest.approx(0.24)
    assert new_batches(recent, after_batch=7) == []


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_panels_query_exported_metrics(path: Path):
    exported = catalog.exported_names()
    dashboard = json.loads(path.read_text())
    assert dashboard["panels"], f"{path.name} has no panels"
    for panel in dashboard["panels"]:
        assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{path.name}: {panel['title']!r} reads no metric"
            unknown = {n for n in names if n not in exported and not FOREIGN.match(n)}
            assert not unknown, f"{path.name}: {panel['title']!r} reads unexported {unknown}"


def test_dashboards_have_unique_uids():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)) and len(uids) >= 4


def test_alert_rules_pass_promtool_and_name_exported_metrics():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    exported = catalog.exported_names()
    alerts = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            alerts[rule["alert"]] = rule["expr"]
            unknown = {n for n in metric_names(rule["expr"]) if n not in exported}
            assert not unknown - {"up"}, f"{rule['alert']} reads unexported {unknown}"
    for needed in ("ServiceDown", "ConsumerLagGrowing", "BreakerOpen", "LatencyP95OverTarget"):
        assert f"CasaTwin{needed}" in alerts


@pytest.mark.parametrize("inventory", ["garage", "local"])
def test_scrape_config_rendered_from_the_inventory_passes_promtool(inventory, tmp_path):
    """The role's template, rendered by Ansible for the inventory's Prometheus host with
    every service switched on, names one job per service at its metrics port."""
    play = tmp_path / "render.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Render prometheus.yml",
                    "hosts": "prometheus",
                    "gather_facts": False,
                    "connection": "local",
                    "vars_files": [str(ROLE / "defaults" / "main.yml")],
                    "tasks": [
                        {
                            "name": "Render",
                            "ansible.builtin.template": {
                                "src": str(ROLE / "templates" / "prometheus.yml.j2"),
                                "dest": str(tmp_path / "prometheus.yml"),
                                "mode": "0644",
                            },
                        }
                    ],
                }
            ]
        )
    )
    services = {s: True for s in catalog.SERVICES}
    extra = {
        "monitoring_prometheus_rules_dir": str(RULES.parent),
        "casatwin_services_enabled": services,
        "ansible_python_interpreter": sys.executable,
    }
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", f"inventory/{inventory}", str(play),
         "-e", json.dumps(extra)],
        cwd=REPO, check=False, capture_output=True, text=True, timeout=120,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = tmp_path / "prometheus.yml"
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    ports = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for service, port in ports["monitoring_casatwin_metrics_ports"].items():
        targets = jobs[f"casatwin-{service}"]["static_configs"][0]["targets"]
        assert targets and all(t.endswith(f":{port}") for t in targets), (service, targets)
