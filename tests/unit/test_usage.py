"""casatwin.usage: which service a process is, what each used, against the memory plan."""

from __future__ import annotations

import subprocess
import sys

from casatwin import usage
from casatwin.usage import ProcessSample, classify, summarise

MB = 2**20


def test_processes_are_named_by_what_they_run():
    java = ["/usr/bin/java", "-Xmx512m", "-cp", "/x/*"]
    assert classify([*java, "kafka.Kafka", "/tmp/server.properties"]) == "kafka"
    assert classify(["/usr/sbin/mariadbd", "--no-defaults"]) == "mariadb"
    assert classify(["/v/bin/nx-27017", "--port", "1"]) == "nx27017"
    spark = [*java, "org.apache.spark.deploy.SparkSubmit", "pyspark-shell"]
    assert classify(spark) == "processor/spark-jvm"
    assert classify(["/v/bin/python3", "-m", "pyspark.daemon"]) == "processor/python-workers"
    assert classify(["/v/bin/python3", "-m", "casatwin.cli", "simulator", "--taxis", "500"]) == (
        "simulator"
    )
    assert classify(["/v/bin/python3", "-m", "casatwin.cli", "dashboard"]) == "dashboard"
    assert classify(["/usr/lib/chromium/chromium", "--headless"]) == "kiosk"
    spawned = [
        "python3",
        "-c",
        "from multiprocessing.spawn import spawn_main",
        "--multiprocessing-fork",
    ]
    assert classify(spawned, runner_as="registry loader") == "registry loader"
    assert classify(spawned, runner_as="processor", helpers_as="load generator") == (
        "load generator"
    )
    assert classify(["/v/bin/python3", "-m", "casatwin_dashboard.loadgen", "13000"]) == (
        "load generator"
    )
    assert classify(["/bin/sh", "-c", "true"]) == "other"
    assert classify(["anything"], is_runner=True, runner_as="processor") == "processor"


def _proc(pid: int, service: str, cpu_s: float, pss_mb: int, before: bool = True) -> ProcessSample:
    return ProcessSample(pid, service, cpu_s, pss_mb * MB, before)


def test_cpu_is_what_each_process_used_during_the_run_and_memory_the_peak_of_the_sum():
    samples = [
        [_proc(1, "kafka", 10.0, 500), _proc(2, "processor", 3.0, 700)],
        # pid 3 was born during the run (a Python worker): all its CPU counts.
        [
            _proc(1, "kafka", 12.0, 600),
            _proc(2, "processor", 5.0, 800),
            _proc(3, "processor", 1.5, 300, before=False),
        ],
        # pid 3 ended; the processor's peak stays that of the sample with both (1,100 MB).
        [_proc(1, "kafka", 14.0, 550), _proc(2, "processor", 7.0, 900)],
    ]
    by_service = {u.service: u for u in summarise(samples, 4.0, {"kafka": 512, "processor": 2048})}
    kafka, processor = by_service["kafka"], by_service["processor"]
    assert kafka.cpu_s_per_s == (14.0 - 10.0) / 4.0
    assert processor.cpu_s_per_s == ((7.0 - 3.0) + 1.5) / 4.0
    assert kafka.peak_pss_mb == 600 and processor.peak_pss_mb == 1100
    assert processor.processes == 2
    assert kafka.over_budget and not processor.over_budget
    report = kafka.as_dict()
    assert report["budget_mb"] == 512 and report["over_budget"] is True
    unbudgeted = summarise(samples, 4.0, {})
    assert unbudgeted[0].service == "processor"  # busiest first
    assert unbudgeted[0].budget_mb is None


def test_a_service_of_parts_has_a_row_for_the_whole_which_alone_has_the_budget():
    samples = [
        [_proc(1, "processor/spark-jvm", 1.0, 1500), _proc(2, "processor/python-driver", 1.0, 200)],
        [_proc(1, "processor/spark-jvm", 3.0, 1600), _proc(2, "processor/python-driver", 1.5, 250),
         _proc(3, "processor/python-workers", 0.5, 400, before=False), _proc(4, "kafka", 9, 300)],
    ]  # fmt: skip
    rows = summarise(samples, 2.0, {"processor": 2048, "kafka": 1792})
    assert [u.service for u in rows] == [
        "processor", "processor/python-driver", "processor/python-workers",
        "processor/spark-jvm", "kafka",
    ]  # fmt: skip
    by_row = {u.service: u for u in rows}
    assert by_row["processor"].cpu_s_per_s == (2.0 + 0.5 + 0.5) / 2.0
    assert (
        by_row["processor"].peak_pss_mb == 1600 + 250 + 400 and by_row["processor"].processes == 3
    )
    assert by_row["processor"].over_budget  # 2,250 MB over 2,048
    assert by_row["processor/spark-jvm"].budget_mb is None
    assert by_row["processor/spark-jvm"].peak_pss_mb == 1600


def test_budgets_are_the_garage_memory_plan():
    """The figures the README prints for the garage's three 8 GB nodes."""
    budgets = usage.garage_budgets()
    assert budgets["kafka"] == 1792 and budgets["mariadb"] == 2048
    assert budgets["processor"] == 2048 and budgets["spark_worker"] == 3072
    assert budgets["simulator"] == 1024 and budgets["dashboard"] == 768
    assert budgets["dispatcher"] == 512 and budgets["kiosk"] == 1024
    assert budgets["nx27017"] == budgets["mongod"] == 1536


def test_the_monitor_sees_a_child_process_work_and_grow():
    """A child that burns 0.5 s of CPU and holds 64 MB, alive until the monitor stops."""
    code = (
        "# casatwin.cli simulator\n"
        "import os, sys\n"
        "block = bytearray(64 * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])\n"
        "while sum(os.times()[:2]) < 0.5: pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with usage.UsageMonitor(runner_as="tests", interval_s=0.05, budgets={"simulator": 32}) as mon:
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "done\n"
            mon.stop()  # the last sample, with the child still there
        finally:
            child.communicate("", timeout=30)
    report = mon.report()
    child_usage = report["by_service"]["simulator"]
    assert child_usage["processes"] == 1, report
    assert child_usage["peak_pss_mb"] >= 64, report
    assert child_usage["cpu_s_per_s"] > 0, report
    assert {u.service: u for u in mon.usage()}["simulator"].cpu_s_per_s * mon.elapsed_s >= 0.5
    assert report["over_budget"] == ["simulator"], report
    assert "tests" in report["by_service"], report
