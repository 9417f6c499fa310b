"""A Spark standalone cluster from the pyspark distribution: the master and worker commands.

The appliance's systemd units and the cluster test start the same processes. A worker runs
the executors with this interpreter (``spark.pyspark.python``), so every node needs the
casatwin virtualenv at the same path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent


def spark_class(main_class: str, *args: str) -> list[str]:
    return [str(SPARK_HOME / "bin" / "spark-class"), main_class, *args]


def master_command(host: str, port: int, webui_port: int) -> list[str]:
    return spark_class(
        "org.apache.spark.deploy.master.Master",
        "--host", host, "--port", str(port), "--webui-port", str(webui_port),
    )  # fmt: skip


def worker_command(
    master_url: str, host: str, cores: int, memory: str, work_dir: Path, webui_port: int
) -> list[str]:
    return spark_class(
        "org.apache.spark.deploy.worker.Worker", master_url,
        "--host", host, "--cores", str(cores), "--memory", memory,
        "--work-dir", str(work_dir), "--webui-port", str(webui_port),
    )  # fmt: skip


def environment(log_dir: Path) -> dict[str, str]:
    """What the master and worker processes need in their environment."""
    return {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOG_DIR": str(log_dir),
        "SPARK_NO_DAEMONIZE": "1",
    }
