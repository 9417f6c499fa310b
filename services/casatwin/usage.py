"""What each part of the twin costs while a benchmark runs: CPU and peak memory per service.

A :class:`UsageMonitor` samples, once per interval, every process of the run — the
benchmark runner and everything it started: the private servers, Spark's JVM and its
Python workers, the simulator, the dashboard, load generators — with ``psutil``, and
names each by what it runs (:func:`classify`). At the end each service gets its CPU
seconds per second of wall time (1.0 = one core busy) and its peak memory (the sum over its
processes at one sample), beside its budget in the appliance's memory plan
for the garage's 8 GB nodes (:func:`garage_budgets`), so the plan is checked against what
the services really use.

Memory is the proportional set size (PSS): a page shared by n processes counts 1/n in each,
so the sums are real (Chromium's and Spark's forked Python workers share most of their
pages; their RSS summed would count them many times). In Spark's ``local`` mode the
driver's JVM also runs the executors, which the garage gives a worker of their own
(``spark_worker``): the processor's figure holds both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from casatwin import appliance
from casatwin.logs import get_logger

log = get_logger(__name__)

# The garage's desktops: 8 GB, as Linux reports them (README, "The memory plan").
GARAGE_MEMTOTAL_MB = 7842

# What a process runs → the service it is (the memory plan's component names), first match.
# "service/part": a part of a service; the service's row sums its parts (and holds the budget).
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kafka", ("kafka.Kafka",)),
    ("mariadb", ("mariadbd",)),
    ("nx27017", ("nx-27017",)),
    ("processor/spark-jvm", ("org.apache.spark.deploy.SparkSubmit",)),
    ("processor/python-workers", ("pyspark.daemon", "pyspark/daemon.py")),
    ("simulator", ("casatwin.cli simulator",)),
    ("dispatcher", ("casatwin.cli dispatch",)),
    ("dashboard", ("casatwin.cli dashboard",)),
    ("kiosk", ("chromium",)),
    ("load generator", ("casatwin_dashboard.loadgen",)),
)
# A process the runner started with multiprocessing: its command line does not say what it
# does (the registry's generators, a benchmark's replay), so the benchmark says it.
HELPER = "multiprocessing"


def classify(
    cmdline: Sequence[str],
    *,
    is_runner: bool = False,
    runner_as: str = "runner",
    helpers_as: str | None = None,
) -> str:
    """The service a process is, from its command line; the runner is ``runner_as``, its
    multiprocessing children ``helpers_as`` (default: the runner's)."""
    if is_runner:
        return runner_as
    text = " ".join(cmdline)
    for service, needles in RULES:
        if any(needle in text for needle in needles):
            return service
    if HELPER in text:
        return helpers_as or runner_as
    return "other"


@dataclass(frozen=True)
class ProcessSample:
    """One process at one sample."""

    pid: int
    service: str
    cpu_s: float  # user + system since the process started
    pss_bytes: int  # proportional set size: shared pages split among their sharers
    started_before: bool  # it was already running when the monitor started


@dataclass(frozen=True)
class ServiceUsage:
    service: str
    cpu_s_per_s: float
    peak_pss_mb: float
    processes: int
    budget_mb: int | None  # the memory plan's, on the garage; None: no budget (tools)

    @property
    def over_budget(self) -> bool:
        return self.budget_mb is not None and self.peak_pss_mb > self.budget_mb

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpu_s_per_s": round(self.cpu_s_per_s, 3),
            "peak_pss_mb": round(self.peak_pss_mb, 1),
            "processes": self.processes,
            "budget_mb": self.budget_mb,
            "over_budget": self.over_budget,
        }


def summarise(
    samples: Sequence[Sequence[ProcessSample]],
    elapsed_s: float,
    budgets: dict[str, int],
) -> list[ServiceUsage]:
    """Per service: CPU used between its first and last sample of each process, over the
    elapsed time; the highest sum of its processes' PSS at one sample. A service made of
    parts ("processor/spark-jvm") has a row per part and one for the whole, which alone is
    held to the budget. Busiest first, each whole before its parts."""
    first: dict[int, ProcessSample] = {}
    last: dict[int, ProcessSample] = {}
    peak: dict[str, int] = {}
    for sample in samples:
        at_once: dict[str, int] = {}
        for proc in sample:
            first.setdefault(proc.pid, proc)
            last[proc.pid] = proc
            for row in _rows(proc.service):
                at_once[row] = at_once.get(row, 0) + proc.pss_bytes
        for row, pss in at_once.items():
            peak[row] = max(peak.get(row, 0), pss)
    cpu: dict[str, float] = {}
    pids: dict[str, int] = {}
    for pid, end in last.items():
        start = first[pid]
        # A process born during the run used all of its CPU time within it.
        used = max(end.cpu_s - (start.cpu_s if start.started_before else 0.0), 0.0)
        for row in _rows(end.service):
            cpu[row] = cpu.get(row, 0.0) + used
            pids[row] = pids.get(row, 0) + 1
    usage = {
        row: ServiceUsage(
            service=row,
            cpu_s_per_s=cpu[row] / elapsed_s if elapsed_s > 0 else 0.0,
            peak_pss_mb=peak.get(row, 0) / 2**20,
            processes=pids[row],
            budget_mb=None if "/" in row else budgets.get(row),
        )
        for row in cpu
    }
    return sorted(
        usage.values(),
        key=lambda u: (-usage[_whole(u.service)].cpu_s_per_s, _whole(u.service), u.service),
    )


def _whole(service: str) -> str:
    return service.partition("/")[0]


def _rows(service: str) -> tuple[str, ...]:
    """The rows a process counts in: its service's, and its part's when it is one."""
    whole = _whole(service)
    return (whole,) if whole == service else (whole, service)


def garage_budgets() -> dict[str, int]:
    """Each component's budget in the memory plan of the garage node it is placed on (every
    service on), as ``ansible-playbook -i inventory/garage site.yml --tags memory_plan``
    prints it. Empty when the checkout's roles or Ansible are not at hand."""
    try:
        plan = appliance.role_plugin("memory_plan", "filter_plugins/memory_plan.py")
        groups = appliance.inventory_groups(appliance.GARAGE_INVENTORY)
    except (ImportError, OSError):
        return {}
    everything_on = {service: True for service in plan.SERVICE_GROUPS.values()}
    budgets: dict[str, int] = {}
    for host in groups.get("all", []):
        member_of = [g for g, hosts in groups.items() if host in hosts]
        components = plan.placed_components(member_of, "mongodb", everything_on)
        budgets.update(plan.memory_plan(components, GARAGE_MEMTOTAL_MB, host)["budgets_mb"])
    if "mongod" in budgets:  # the read model of `make run` and the benchmarks stands in for it
        budgets["nx27017"] = budgets["mongod"]
    return budgets


class UsageMonitor:
    """Samples the process tree of ``root`` (default: this process) in a thread.

    ``with UsageMonitor(runner_as="processor") as monitor: ...`` then ``monitor.report()``.
    """

    def __init__(
        self,
        *,
        runner_as: str = "runner",
        helpers_as: str | None = None,
        interval_s: float = 1.0,
        budgets: dict[str, int] | None = None,
        root: int | None = None,
    ) -> None:
        self.runner_as = runner_as
        self.helpers_as = helpers_as
        self.interval_s = interval_s
        self.budgets = garage_budgets() if budgets is None else budgets
        self.root = psutil.Process(root) if root is not None else psutil.Process()
        self._samples: list[list[ProcessSample]] = []
        self._known: set[int] = set()
        # (pid, start time) → service: a command line is read once per process, not per sample
        self._services: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._elapsed = 0.0

    def __enter__(self) -> UsageMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        self._known = {p.pid for p in self._processes()}
        self._sample()
        self._thread = threading.Thread(target=self._run, name="usage-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return  # stopped already (a caller may stop it inside its `with`)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 * self.interval_s + 5)
        self._sample()
        self._elapsed = time.monotonic() - self._started

    @property
    def elapsed_s(self) -> float:
        return self._elapsed

    def usage(self) -> list[ServiceUsage]:
        return summarise(self._samples, self._elapsed, self.budgets)

    def report(self) -> dict[str, Any]:
        """Per service, busiest first, and the services over their budget."""
        usage = self.usage()
        return {
            "by_service": {u.service: u.as_dict() for u in usage},
            "over_budget": [u.service for u in usage if u.over_budget],
            "samples": len(self._samples),
            "note": "CPU s per s of wall time (1.0 = one core); peak PSS (shared pages split "
            "among their processes); budgets: the garage's memory plan (8 GB nodes)",
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _processes(self) -> Iterable[psutil.Process]:
        yield self.root
        try:
            yield from self.root.children(recursive=True)
        except psutil.Error:
            return

    def _service_of(self, proc: psutil.Process) -> str:
        key = (proc.pid, proc.create_time())
        if key not in self._services:
            self._services[key] = classify(
                proc.cmdline(),
                is_runner=proc.pid == self.root.pid,
                runner_as=self.runner_as,
                helpers_as=self.helpers_as,
            )
        return self._services[key]

    def _sample(self) -> None:
        found: list[ProcessSample] = []
        for proc in self._processes():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    found.append(
                        ProcessSample(
                            pid=proc.pid,
                            service=self._service_of(proc),
                            cpu_s=times.user + times.system,
                            pss_bytes=proc.memory_full_info().pss,
                            started_before=proc.pid in self._known,
                        )
                    )
            except psutil.Error:
                continue  # it ended between the listing and the reading
        self._samples.append(found)


def format_usage(usage: Sequence[ServiceUsage]) -> list[str]:
    """Lines for an operator: service, CPU, peak memory against the budget."""
    lines = [f"  {'service':<26} {'CPU s/s':>8} {'peak PSS MB':>12} {'budget MB':>10}"]
    for u in usage:
        budget = "—" if u.budget_mb is None else str(u.budget_mb)
        flag = "  OVER BUDGET" if u.over_budget else ""
        lines.append(
            f"  {u.service:<26} {u.cpu_s_per_s:>8.2f} {u.peak_pss_mb:>12.0f} {budget:>10}{flag}"
        )
    return lines
