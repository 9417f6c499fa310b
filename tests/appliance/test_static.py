"""The appliance without containers: lint, syntax, argument specs, the memory plan's preflight."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.appliance import ansible
from tests.appliance.ansible import BIN, REPO

pytestmark = pytest.mark.appliance

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())


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
    """Everything on one 4 GB node, production engines: the base play stops at preflight."""
    run = ansible.playbook(
        [
            "-i", "inventory/local", "--tags", "memory_plan",
            "-e", "memory_plan_memtotal_mb=4096",
            "-e", "kafka_engine=apache", "-e", "mongodb_engine=mongodb",
            "-e", f"ansible_python_interpreter={BIN / 'python'}",
            "-e", "vault_mariadb_passwords={} vault_grafana_admin_password=x",
        ],
        tmp_path / "preflight.log", timeout_s=180, playbook="playbooks/base.yml",
    )  # fmt: skip
    assert run.returncode != 0, run.tail()
    assert "localhost: the services placed on this node need at least" in run.output
    assert "but it has 4096 MB" in run.output
    assert "MB too many" in run.output
    assert "memory plan of localhost: 4096 MB total" in run.output


def test_plan_for_8gb_all_in_one_fits(tmp_path):
    """The design's promise: the whole appliance (production engines) fits one 8 GB node."""
    run = ansible.playbook(
        [
            "-i", "inventory/local", "--tags", "memory_plan",
            "-e", "memory_plan_memtotal_mb=7842",
            "-e", "kafka_engine=apache", "-e", "mongodb_engine=mongodb",
            "-e", f"ansible_python_interpreter={BIN / 'python'}",
            "-e", "vault_mariadb_passwords={} vault_grafana_admin_password=x",
        ],
        tmp_path / "plan.log", timeout_s=180, playbook="playbooks/base.yml",
    )  # fmt: skip
    assert run.returncode == 0, run.tail()
    assert "memory plan of localhost: 7842 MB total" in run.output
    assert "DOES NOT FIT" not in run.output
