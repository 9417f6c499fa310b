"""The JVM jars of the one-machine stack, resolved from Maven Central by Maven itself.

Each set is a pom beside this module; nothing is built from it:

* ``kafka`` — Apache Kafka's broker (``kafka_2.13`` and its runtime dependencies, log4j2),
  which :class:`~casatwin.devstack.servers.KafkaBroker` runs;
* ``spark-kafka`` — Spark's Kafka connector at exactly the pyspark version, with the few jars
  Spark does not ship, which the processor hands to Spark (``spark.jars``).

``casatwin stack jars`` (run by ``make setup``) copies each set into ``<jars_dir>/<set>`` with
``mvn dependency:copy-dependencies``. Maven verifies every checksum and keeps what it
downloaded in its local repository, so a second set-up downloads nothing; a stamp holding the
pom's hash makes it copy nothing either while the pom is unchanged.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from casatwin.errors import UserError
from casatwin.logs import get_logger

log = get_logger("stack")

JAR_SETS = ("kafka", "spark-kafka")
_POMS = {"kafka": "kafka-broker.pom.xml", "spark-kafka": "spark-kafka.pom.xml"}
STAMP = ".pom-sha256"


def pom(name: str) -> Path:
    """The pom of the jar set ``name``."""
    if name not in _POMS:
        raise UserError(f"no jar set {name!r}", hint=f"choose one of {', '.join(JAR_SETS)}")
    return Path(str(resources.files("casatwin.devstack") / _POMS[name]))


def _digest(name: str) -> str:
    return hashlib.sha256(pom(name).read_bytes()).hexdigest()


def is_current(name: str, jars_dir: Path) -> bool:
    stamp = jars_dir / name / STAMP
    return stamp.exists() and stamp.read_text().strip() == _digest(name)


def jar_paths(name: str, jars_dir: Path) -> list[Path]:
    """The jars of set ``name`` (absolute paths); a clear error if there are none.

    On the appliance the roles place the jars (from an archive or Maven Central) without
    this module's stamp: what counts here is that they are there."""
    directory = (jars_dir / name).resolve()
    found = sorted(directory.glob("*.jar"))
    if not found:
        raise UserError(
            f"the {name} jars are missing from {directory}",
            hint="run `make setup` (or `casatwin stack jars`): Maven fetches them from "
            "Maven Central once (CASATWIN_GENERAL_JARS_DIR moves them)",
        )
    return found


def classpath(name: str, jars_dir: Path) -> str:
    """``jar_paths`` as a Java class path."""
    return ":".join(str(p) for p in jar_paths(name, jars_dir))


def resolve(name: str, jars_dir: Path) -> list[Path]:
    """Copy the jars of set ``name`` into ``<jars_dir>/<name>`` unless they are current."""
    if is_current(name, jars_dir):
        return jar_paths(name, jars_dir)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise UserError(
            "Maven (mvn) is not installed; it fetches the broker's and Spark's Kafka jars",
            hint="`make setup` installs it (apt-get install maven)",
        )
    jars_dir = jars_dir.resolve()  # Maven takes a relative path from the pom's directory
    target = jars_dir / name
    log.info("resolving jars from Maven Central (first time only)", jar_set=name)
    jars_dir.mkdir(parents=True, exist_ok=True)
    # Into a fresh directory, then swapped in: an interrupted copy never looks complete.
    with tempfile.TemporaryDirectory(dir=jars_dir, prefix=f".{name}-") as scratch:
        result = subprocess.run(
            [
                mvn, "--batch-mode", "--quiet", "--file", str(pom(name)),
                "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-DoutputDirectory={scratch}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise UserError(
                f"Maven could not resolve the {name} jars",
                hint=output[-1500:] or "mvn said nothing; run it by hand to see why",
            )
        Path(scratch, STAMP).write_text(_digest(name) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        Path(scratch).rename(target)
        Path(scratch).mkdir()  # for TemporaryDirectory's own clean-up
    jars = jar_paths(name, jars_dir)
    log.info("jars ready", jar_set=name, jars=len(jars), directory=str(target.resolve()))
    return jars
