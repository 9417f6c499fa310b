"""Running the appliance's playbooks from the tests: the project's ansible, the repo's roles."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from casatwin.appliance import REPO
from casatwin.bus import access

BIN = Path(sys.executable).parent
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)


@dataclass
class Run:
    """One ansible-playbook run: its exit status, output and per-host recap."""

    returncode: int
    output: str
    log: Path
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP.finditer(self.output)
        }

    def changed_tasks(self) -> list[str]:
        """The tasks that reported a change (for a useful idempotence failure)."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                tasks.append(f"{current} -> {line[:120]}")
        return tasks

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def pyspark_version() -> str:
    """The pyspark version the project pins (pyproject.toml): the processor's and Spark's."""
    return re.search(r'"pyspark==([^"]+)"', (REPO / "pyproject.toml").read_text())[1]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_LOCAL_TEMP="/tmp/casatwin-ansible-local",
        ANSIBLE_REMOTE_TEMP="/tmp/.ansible-remote",
    )
    return env


def playbook(
    args: list[str], log: Path, timeout_s: float = 1800, playbook: str = "site.yml"
) -> Run:
    """``ansible-playbook <args> <playbook>`` from the repository root, logged to ``log``."""
    started = time.monotonic()
    with open(log, "w") as out:
        result = subprocess.run(
            [str(BIN / "ansible-playbook"), *args, playbook],
            cwd=REPO, env=environment(), stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout_s, check=False,
        )  # fmt: skip
    return Run(result.returncode, log.read_text(), log, time.monotonic() - started)


# The MongoDB users of the vault: the administrator and the read model's services (the
# mongodb role's mongodb_service_privileges).
MONGODB_USERS = ("admin", "processor", "dispatcher", "dashboard")


def test_vault(directory: Path) -> tuple[Path, Path]:
    """A vault made for this test session: random secrets, a random password, encrypted."""
    password_file = directory / "vault-pass"
    password_file.write_text(secrets.token_urlsafe(24) + "\n")
    password_file.chmod(0o600)
    accounts = ("migrator", "simulator", "gateway", "processor", "dispatcher", "dashboard")
    lines = [
        f"vault_tailscale_authkey: tskey-test-{secrets.token_hex(8)}",
        f"vault_grafana_admin_password: {secrets.token_urlsafe(18)}",
        f"vault_casatwin_pseudonym_key: {secrets.token_urlsafe(32)}",
        f"vault_casatwin_fake_api_admin_token: {secrets.token_urlsafe(32)}",
        f"vault_pki_ca_passphrase: {secrets.token_urlsafe(32)}",
        "vault_mariadb_passwords:",
        *(f"  {name}: {secrets.token_urlsafe(18)}" for name in accounts),
        f"vault_spark_auth_secret: {secrets.token_urlsafe(32)}",
        "vault_mongodb_passwords:",
        *(f"  {name}: {secrets.token_urlsafe(24)}" for name in MONGODB_USERS),
        "vault_kafka_passwords:",
        # The broker's users and each service's.
        *(f"  {name}: {secrets.token_urlsafe(24)}" for name in access.USERS),
    ]
    vault = directory / "vault.yml"
    vault.write_text("\n".join(lines) + "\n")
    subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file),
         str(vault)],
        cwd=REPO, env=environment(), check=True, capture_output=True,
    )  # fmt: skip
    return vault, password_file


def build_wheel() -> Path:
    """The project's wheel in dist/ (``make wheel``): what the casatwin role installs."""
    subprocess.run(["make", "-s", "wheel"], cwd=REPO, check=True, capture_output=True)
    wheels = sorted((REPO / "dist").glob("casatwin-*.whl"))
    assert wheels, "make wheel left no wheel in dist/"
    return wheels[-1]


def wheelhouse(cache: Path) -> Path:
    """Every dependency of ``casatwin[spark]`` as wheels, built once per dependency set.

    pyspark is a 456 MB sdist: its wheel is built once (pip's cache keeps it too) and the
    containers install from this directory with ``--no-index``.
    """
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    target = cache / f"wheelhouse-{key}"
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(BIN / "pip"), "wheel", "--quiet", "-w", str(target), f"{REPO}[spark]"],
        check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    # The project's own wheel comes from dist/ (make wheel), never from here.
    for own in target.glob("casatwin-*.whl"):
        own.unlink()
    (target / ".complete").write_text("")
    for stale in cache.glob("wheelhouse-*"):  # older dependency sets
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    return target
