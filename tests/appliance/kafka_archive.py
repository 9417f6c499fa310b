"""A Kafka archive for the converge test, built from Maven Central's jars.

The kafka role installs the Apache archive (``kafka_<scala>-<version>.tgz``), which cannot be
downloaded here; garages without internet hand the role an archive from the controller
(``kafka_archive_src``) instead, and so does the test. This module builds one laid out as the
Apache archive is where the role looks (``kafka_<scala>-<version>/libs/*.jar``: the broker,
its tools and log4j2, resolved by Maven from ``kafka-archive.pom.xml``), at the version the
role pins, once per version (cached beside the root filesystem). The tar is reproducible:
the same jars give the same bytes, hence the same SHA-512 (``kafka_archive_sha512``).

Run it alone to build it: ``python -m tests.appliance.kafka_archive``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.appliance.ansible import REPO

POM = Path(__file__).with_name("kafka-archive.pom.xml")
DEVSTACK_POM = REPO / "services/casatwin/devstack/kafka-broker.pom.xml"
ROLE_DEFAULTS = REPO / "roles/kafka/defaults/main.yml"


@dataclass(frozen=True)
class KafkaArchive:
    path: Path
    sha512: str
    version: str
    scala: str

    @property
    def name(self) -> str:
        return f"kafka_{self.scala}-{self.version}"


def pom_property(pom: Path, name: str) -> str:
    found = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    assert found, f"{pom} has no <{name}>"
    return found[1].strip()


def role_version() -> tuple[str, str]:
    """(kafka_version, kafka_scala_version) of the kafka role."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return str(defaults["kafka_version"]), str(defaults["kafka_scala_version"])


def sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def kafka_archive(cache: Path) -> KafkaArchive:
    """The archive of the role's Kafka version, built once (Maven downloads the jars the
    first time only, checking Maven Central's checksums)."""
    version, scala = role_version()
    log4j = pom_property(DEVSTACK_POM, "log4j.version")
    key = hashlib.sha256(f"{POM.read_text()} {version} {scala} {log4j}".encode()).hexdigest()[:12]
    name = f"kafka_{scala}-{version}"
    target = cache / f"kafka-archive-{key}" / f"{name}.tgz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            libs = Path(scratch) / name / "libs"
            result = subprocess.run(
                ["mvn", "--batch-mode", "--quiet", "--file", str(POM),
                 "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={libs}", f"-Dkafka.version={version}",
                 f"-Dscala.binary.version={scala}", f"-Dlog4j.version={log4j}"],
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
            partial = target.with_suffix(".partial")
            _write_tgz(Path(scratch), name, partial)
            partial.rename(target)
        for stale in cache.glob("kafka-archive-*"):  # other versions
            if stale != target.parent:
                shutil.rmtree(stale, ignore_errors=True)
    return KafkaArchive(target, sha512(target), version, scala)


def _write_tgz(root: Path, top: str, dest: Path) -> None:
    """``root/top`` as a gzipped tar, entries sorted, times and owners fixed: reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [root / top, *sorted((root / top).rglob("*"))]:
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buffer.getvalue())


if __name__ == "__main__":
    from tests.appliance.rootfs import cache_dir

    built = kafka_archive(cache_dir())
    print(built.path, built.sha512)
