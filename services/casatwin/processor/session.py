"""The processor's SparkSession: one per process, configured from the settings."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from pyspark.sql import SparkSession

from casatwin.config import Settings
from casatwin.errors import UserError

LOG_CONFIG = resources.files("casatwin.processor") / "log4j2.properties"
SCHEDULER_POOLS = resources.files("casatwin.processor") / "scheduler-pools.xml"
SCHEDULERS = ("fifo", "fair")

STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}


def spark_config(settings: Settings, master: str) -> dict[str, str]:
    """Everything the processor sets on Spark, and why."""
    p = settings.processor
    if p.state_store not in STATE_STORES:
        raise UserError(
            f"CASATWIN_PROCESSOR_STATE_STORE={p.state_store!r} is not a state store",
            hint=f"choose {' or '.join(STATE_STORES)}",
        )
    if p.scheduler not in SCHEDULERS:
        raise UserError(
            f"CASATWIN_PROCESSOR_SCHEDULER={p.scheduler!r} is not a scheduler",
            hint=f"choose {' or '.join(SCHEDULERS)}",
        )
    log_config = f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}"
    config = {
        "spark.master": master,
        "spark.app.name": "casatwin-processor",
        "spark.driver.extraJavaOptions": log_config,
        "spark.executor.extraJavaOptions": log_config,
        "spark.driver.memory": p.driver_memory,
        "spark.executor.memory": p.executor_memory,
        # Executors run this very interpreter, which has the casatwin package installed.
        "spark.pyspark.python": sys.executable,
        # Spark's Kafka connector (``format("kafka")``): shipped to the executors from here.
        "spark.jars": ",".join(str(jar) for jar in kafka_connector_jars(settings)),
        "spark.pyspark.driver.python": sys.executable,
        "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
        "spark.python.worker.reuse": "true",
        # PySpark's own pandas calls warn of pandas' future behaviour, once per worker.
        "spark.executorEnv.PYTHONWARNINGS": "ignore::FutureWarning",
        "spark.sql.shuffle.partitions": str(p.shuffle_partitions),
        "spark.sql.adaptive.enabled": "false",  # not for streaming (Spark says so, twice)
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[p.state_store],
        # RocksDB: upload a changelog per batch instead of a snapshot (much shorter commits).
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.streaming.stateStore.maintenanceInterval": "30s",
        # Offset and commit logs through the FileSystem API: ~35 ms less per log write
        # than the FileContext default, and still write-then-rename (atomic on POSIX and
        # NFS, the filesystems a checkpoint lives on here).
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.checkpointing."
            "FileSystemBasedCheckpointFileManager"
        ),
        "spark.sql.streaming.minBatchesToRetain": "100",
        # Poll for new data every 10 ms when idle (the Kafka source answers in a few ms).
        "spark.sql.streaming.pollingDelay": "10ms",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
    }
    if p.scheduler == "fair":
        # Each query's jobs run in the pool of its name (ProcessorApp sets it as it starts).
        config["spark.scheduler.mode"] = "FAIR"
        config["spark.scheduler.allocation.file"] = f"file:{SCHEDULER_POOLS}"
    if p.spark_auth_file:
        # The secret comes with the properties file (submit_args); the switch may be said here.
        config["spark.authenticate"] = "true"
    if master.startswith("local"):
        # Everything in this process: stay on loopback, whatever the hostname resolves to.
        config["spark.driver.host"] = config["spark.driver.bindAddress"] = "127.0.0.1"
    return config


# What spark_config sets that a running session takes for the queries started after.
RUNTIME = ("spark.sql.shuffle.partitions", "spark.sql.streaming.stateStore.providerClass")


def reconfigure(spark: SparkSession, settings: Settings) -> None:
    """Give ``spark`` the :data:`RUNTIME` part of ``settings`` (for queries started next)."""
    config = spark_config(settings, spark.sparkContext.master)
    for key in RUNTIME:
        spark.conf.set(key, config[key])


def timer_conf(settings: Settings) -> dict[str, str]:
    """What a query with the detectors' timers starts with: Spark's empty batches only
    with ``processor.timer_batches`` (see :mod:`~casatwin.processor.timers`). A query reads
    it as it starts, so the congestion windows keep Spark's default."""
    enabled = str(settings.processor.timer_batches).lower()
    return {"spark.sql.streaming.noDataMicroBatches.enabled": enabled}


@contextlib.contextmanager
def query_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """``conf`` on the session while a query starts (the query keeps what it started
    with), then the session's own values back."""
    previous = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


CONNECTOR = "spark-sql-kafka-0-10_2.13"


def kafka_connector_jars(settings: Settings) -> list[Path]:
    """The jars of Spark's Kafka connector (absolute paths), checked to be at exactly
    pyspark's version: a connector built for another Spark fails at its first batch with a
    linkage error far from the cause."""
    import pyspark

    from casatwin.devstack.jars import jar_paths

    jars = jar_paths("spark-kafka", settings.general.jars_dir)
    versions = [
        jar.name[len(CONNECTOR) + 1 : -len(".jar")]
        for jar in jars
        if jar.name.startswith(f"{CONNECTOR}-")
    ]
    if versions != [pyspark.__version__]:
        directory = settings.general.jars_dir.resolve() / "spark-kafka"
        found = f"version {', '.join(versions)}" if versions else "no connector jar"
        raise UserError(
            f"Spark's Kafka connector in {directory} does not match pyspark "
            f"{pyspark.__version__} ({found})",
            hint="run `make setup` (or `casatwin stack jars`): it copies "
            f"{CONNECTOR}-{pyspark.__version__} from Maven Central",
        )
    return jars


def submit_args(settings: Settings, current: str | None) -> str:
    """PYSPARK_SUBMIT_ARGS for the JVM PySpark launches: ``current`` (the environment's, or
    PySpark's default ``pyspark-shell``), with ``--properties-file`` naming the file of
    Spark's shared secret when there is one.

    Not ``builder.config``: PySpark hands every one of those to spark-submit as ``--conf
    key=value``, on a command line any user of the node can read (``ps``). spark-submit
    reads a properties file inside the JVM. A standalone driver must have
    ``spark.authenticate.secret`` in its configuration (Spark 4 reads secret files only on
    Kubernetes), so the file is a properties file rather than the bare secret.
    """
    args = current or "pyspark-shell"
    auth_file = settings.processor.spark_auth_file
    if not auth_file:
        return args
    path = Path(auth_file)
    if not os.access(path, os.R_OK) or not path.is_file():
        raise UserError(
            f"cannot read Spark's shared secret in {path} (CASATWIN_PROCESSOR_SPARK_AUTH_FILE)",
            hint="on the appliance the casatwin role writes it from the vault "
            "(vault_spark_auth_secret), readable by casatwin-processor only",
        )
    tokens = shlex.split(args)
    if "--properties-file" in tokens:
        named = tokens[tokens.index("--properties-file") + 1 :][:1]
        if named == [str(path)]:
            return args  # a session of this process before: already there
        raise UserError(
            "PYSPARK_SUBMIT_ARGS already names a --properties-file, and "
            "CASATWIN_PROCESSOR_SPARK_AUTH_FILE another: spark-submit reads only one",
            hint="keep the secret's file in CASATWIN_PROCESSOR_SPARK_AUTH_FILE alone",
        )
    return shlex.join(["--properties-file", str(path)]) + " " + args


def build_session(settings: Settings, master: str | None = None) -> SparkSession:
    """The processor's session (or the existing one of this process, reconfigured)."""
    master = master or settings.processor.master
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Read by PySpark when it launches the JVM (the first session of the process).
    os.environ["PYSPARK_SUBMIT_ARGS"] = submit_args(settings, os.environ.get("PYSPARK_SUBMIT_ARGS"))
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for key, value in spark_config(settings, master).items():
        builder = builder.config(key, value)
    with jvm_ignores_stop_signals():
        return builder.getOrCreate()


@contextlib.contextmanager
def jvm_ignores_stop_signals() -> Iterator[None]:
    """Launch the JVM with SIGTERM ignored (PySpark already ignores SIGINT for it).

    honcho and systemd signal the whole process group: a JVM that died at once would leave
    the Python side stopping its queries against a dead gateway (stack traces, lost
    in-flight batch). HotSpot installs no handler for a stop signal ignored at start, so the
    JVM stays up until ``spark.stop()`` ends it, after the queries have stopped.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal dispositions can only be changed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
