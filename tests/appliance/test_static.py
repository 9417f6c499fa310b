"""The appliance without containers: lint, syntax, argument specs, the memory plan's preflight."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.appliance import ansible
from tests.appliance.ansible import BIN, REPO

pytestmark = pytest.mark.appliance

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())

# Everything inventory/local places on its one node, production engines, every service on:
# the floors (MB) of the memory plan's table, written out here so that a component the
# plan leaves out (or counts twice) changes the sums below.
ALL_IN_ONE_FLOORS = {
    "kafka": 768, "mongod": 512, "mariadb": 512, "spark_master": 384, "spark_worker": 1024,
    "processor": 768, "simulator": 256, "gateway": 128, "gateway_fake_api": 64,
    "dispatcher": 128, "dashboard": 256, "prometheus": 256, "grafana": 128,
    "node_exporter": 32, "kiosk": 512,
}  # fmt: skip
CASATWIN_COMPONENTS = {
    "processor", "simulator", "gateway", "gateway_fake_api", "dispatcher", "dashboard",
}  # fmt: skip
RESERVED_MB = 768
# The preflight's failure message (the [ERROR] line; the YAML copy may double the quote).
PREFLIGHT = re.compile(
    r"(?P<node>\S+): the services placed on this node need at least (?P<needed>\d+) MB "
    r"\((?P<floors>\d+) MB of budgets'+ floors \+ (?P<reserved>\d+) MB for the OS\) but it has "
    r"(?P<total>\d+) MB: (?P<overflow>\d+) MB too many\. Floors in MB: (?P<budgets>\{[^}]*\})"
)
# A component's line in the printed plan (the debug task's YAML list of lines).
PLAN_LINE = re.compile(r"^\s*- '  (?P<name>[a-z_]+) +(?P<mb>-?\d+) MB'$", re.M)


def printed_plan(output: str) -> dict[str, int]:
    """The budgets of the plan the base play printed (one node's run)."""
    return {m["name"]: int(m["mb"]) for m in PLAN_LINE.finditer(output)}


def all_in_one_plan(memtotal_mb: int, log: Path) -> ansible.Run:
    """The base play's memory plan for inventory/local with the production engines."""
    return ansible.playbook(
        [
            "-i", "inventory/local", "--tags", "memory_plan",
            "-e", f"memory_plan_memtotal_mb={memtotal_mb}",
            "-e", "kafka_engine=apache", "-e", "mongodb_engine=mongodb",
            "-e", f"ansible_python_interpreter={BIN / 'python'}",
            "-e", "vault_mariadb_passwords={} vault_grafana_admin_password=x",
        ],
        log, timeout_s=180, playbook="playbooks/base.yml",
    )  # fmt: skip


def test_ansible_lint_production_profile():
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--nocolor"],
        cwd=REPO, env=ansible.environment(), capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


@pytest.mark.parametrize("inventory", ["garage", "local"])
def test_syntax_check(inventory, tmp_path):
    run = ansible.playbook(
        ["-i", f"inventory/{inventory}", "--syntax-check"], tmp_path / "syntax.log", timeout_s=120
    )
    assert run.returncode == 0, run.tail()


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    """Every default is declared in meta/argument_specs.yml, and every declared option that
    has a default in the spec has it in defaults/main.yml (what prometheus-community checks)."""
    root = REPO / "roles" / role
    specs = yaml.safe_load((root / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"].get("options", {})
    defaults_file = root / "defaults/main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    assert set(defaults or {}) <= set(options), set(defaults) - set(options)
    for name, option in options.items():
        assert name.startswith(f"{role}_"), f"{role}: {name} is not prefixed with {role}_"
        assert option.get("description"), f"{role}: {name} has no description"
        assert name in (defaults or {}), f"{role}: {name} is declared but has no default"


def test_plan_that_does_not_fit_fails_in_preflight_naming_node_and_numbers(tmp_path):
    """Everything on one 4 GB node, production engines: the base play stops at preflight,
    naming the node, what its services need and by how much they overflow it."""
    run = all_in_one_plan(4096, tmp_path / "preflight.log")
    assert run.returncode != 0, run.tail()
    found = PREFLIGHT.search(" ".join(run.output.split()))
    assert found, run.tail()
    floors = sum(ALL_IN_ONE_FLOORS.values())
    needed = floors + RESERVED_MB
    assert (needed, needed - 4096) == (6496, 2400)  # the numbers README.md quotes
    assert found["node"] == "localhost"
    assert json.loads(found["budgets"]) == ALL_IN_ONE_FLOORS
    assert int(found["floors"]) == floors
    assert int(found["reserved"]) == RESERVED_MB
    assert int(found["needed"]) == needed
    assert int(found["total"]) == 4096
    assert int(found["overflow"]) == needed - 4096
    assert "memory plan of localhost: 4096 MB total" in run.output
    assert printed_plan(run.output) == ALL_IN_ONE_FLOORS  # no spare: every budget at its floor
    assert f"the floors need {floors} MB + {RESERVED_MB} MB for the OS" in " ".join(
        run.output.split()
    )


def test_plan_for_8gb_all_in_one_fits(tmp_path):
    """The design's promise: the whole appliance (production engines) fits one 8 GB node,
    the CasaTwin services included (inventory/local switches none of them)."""
    run = all_in_one_plan(7842, tmp_path / "plan.log")
    assert run.returncode == 0, run.tail()
    assert "memory plan of localhost: 7842 MB total" in run.output
    assert "DOES NOT FIT" not in run.output
    budgets = printed_plan(run.output)
    assert set(budgets) >= CASATWIN_COMPONENTS, budgets
    assert set(budgets) == set(ALL_IN_ONE_FLOORS), budgets
    assert all(budgets[c] >= floor for c, floor in ALL_IN_ONE_FLOORS.items()), budgets
    assert sum(budgets.values()) + RESERVED_MB <= 7842


def test_every_inventory_sees_the_one_services_enabled_default():
    """One map of switched-on services: the memory plan's default, which the casatwin role's
    default of casatwin_services_enabled is, names every service of the role, all on."""
    roles = REPO / "roles"
    plan_defaults = yaml.safe_load((roles / "memory_plan/defaults/main.yml").read_text())
    casatwin_defaults = yaml.safe_load((roles / "casatwin/defaults/main.yml").read_text())
    default = plan_defaults["memory_plan_services_enabled"]
    assert default == dict.fromkeys(casatwin_defaults["casatwin_services"], True)
    assert casatwin_defaults["casatwin_services_enabled"] == "{{ memory_plan_services_enabled }}"
    local = yaml.safe_load((REPO / "inventory/local/group_vars/all/main.yml").read_text())
    assert "casatwin_services_enabled" not in local  # the plans above run on the default
