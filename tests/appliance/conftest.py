"""Fixtures of the appliance tests: the garage's three nodes as booted systemd containers.

``converged`` debootstraps once (cached in ``CASATWIN_APPLIANCE_CACHE``), boots ``lenovo``,
``optiplex`` and ``prodesk`` on a private bridge and converges ``site.yml`` with the garage
inventory, Apache Kafka on the three nodes (``garage-test-inventory.yml``), installed from
an archive built from Maven Central's jars and Spark's Kafka connector from `make setup`'s
jars, both handed over from the controller as a garage without internet would; everything
is torn down when the module that uses it ends (not at the end of the session: the three
running nodes would take the CPU of every test after them), also after a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.appliance import ansible
from tests.appliance.kafka_archive import KafkaArchive, kafka_archive
from tests.appliance.machines import WORKDIR_PREFIX, Garage
from tests.appliance.rootfs import base_rootfs, cache_dir

NODES = ("lenovo", "optiplex", "prodesk")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.appliance)


def _missing_tools() -> list[str]:
    tools = ("debootstrap", "systemd-nspawn", "nsenter", "ip", "ssh")
    return [t for t in tools if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]


@dataclass
class Converged:
    """The garage after ``site.yml``: its machines and how to run the playbook again."""

    garage: Garage
    args: list[str]
    first: ansible.Run
    logs: Path
    vault: Path
    vault_password: Path
    kafka_archive: KafkaArchive
    # The appliance's CA, made by the pki role on the controller (here: the test's directory).
    ca_dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "casatwin-ca.crt"

    def playbook(self, *extra: str, name: str = "run", playbook: str = "site.yml") -> ansible.Run:
        return ansible.playbook([*self.args, *extra], self.logs / f"{name}.log", playbook=playbook)

    def machine(self, name: str):
        return self.garage.machines[name]


def spark_kafka_jars() -> Path:
    """The directory of Spark's Kafka connector that `make setup` fills (Maven resolves it
    here if it has not: nothing is downloaded twice)."""
    from casatwin.config import load
    from casatwin.devstack import jars

    jars_dir = load().general.jars_dir
    jars_dir = jars_dir if jars_dir.is_absolute() else ansible.REPO / jars_dir
    jars.resolve("spark-kafka", jars_dir)
    return (jars_dir / "spark-kafka").resolve()


@pytest.fixture(scope="session")
def appliance_logs(artifacts_dir: Path) -> Path:
    logs = artifacts_dir / "appliance"
    logs.mkdir(parents=True, exist_ok=True)
    return logs


@pytest.fixture(scope="module")
def converged(
    tmp_path_factory: pytest.TempPathFactory, appliance_logs: Path
) -> Iterator[Converged]:
    if os.geteuid() != 0:
        pytest.skip("the appliance tests boot containers: they run as root")
    missing = _missing_tools()
    if missing:
        pytest.fail(f"missing tools {missing}: run `make setup` (scripts/install-system-packages)")
    work = tmp_path_factory.mktemp("garage")
    archive = kafka_archive(cache_dir())
    connector = spark_kafka_jars()
    garage = Garage(
        base=base_rootfs(),
        workdir=Path("/var/tmp") / f"{WORKDIR_PREFIX}{os.getpid()}",
        names=NODES,
        wheelhouse=ansible.wheelhouse(cache_dir()),
    )
    try:
        ansible.build_wheel()
        garage.create()
        vault, password = ansible.test_vault(work)
        args = [
            "-i", "inventory/garage",
            "-i", "tests/appliance/garage-test-inventory.yml",
            "-i", str(garage.inventory(work / "reach.yml")),
            "-e", "@tests/appliance/garage-test-vars.yml",
            "-e", f"kafka_archive_src={archive.path}",
            "-e", f"kafka_archive_sha512={archive.sha512}",
            "-e", f"spark_kafka_connector_src={connector}",
            # The CA in the test's directory, not in the repository's inventory/garage/pki.
            "-e", f"pki_ca_dir={work / 'ca'}",
            # The host plays the operators' machine (the dashboard's and Spark's pages, which
            # the tests open from here): the firewall admits it as it does the tailnet.
            "-e", json.dumps({"firewall_operator_networks": [f"{garage.gateway}/32"]}),
            "-e", f"@{vault}",
            "--vault-password-file", str(password),
        ]  # fmt: skip
        first = ansible.playbook(args, appliance_logs / "converge.log")
        yield Converged(garage, args, first, appliance_logs, vault, password, archive, work / "ca")
    finally:
        garage.destroy()
