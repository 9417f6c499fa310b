"""``casatwin bench`` (``make bench``): every benchmark, against private servers.

A benchmark is a function ``(settings) -> dict`` that measures its figure *and* a reference
in the same run (for example the raw producer rate of the same Kafka client) and reports
their ratio. The runner starts a broker, a read-model server and MariaDB on free ports in a
temporary directory (as the tests do), runs the benchmarks in order, prints one JSON object
per benchmark and keeps the whole run in ``<data_dir>/bench/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from casatwin.config import Settings


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark's function is ("module:function"), and what the runner process is
    while it runs (casatwin.usage): the benchmarks run their subject in-process where
    production runs it as its own service."""

    target: str
    runner_as: str
    helpers_as: str | None = None  # its multiprocessing children, when not its own work


DRIVER = "processor/python-driver"
# Each issue adds its benchmarks here, in the order they run.
BENCHMARKS: dict[str, Benchmark] = {
    # The load comes first: the lookup benchmark runs on the 10M drivers it leaves.
    "registry-load": Benchmark("casatwin.registry.bench:bench_load", "registry loader"),
    "registry-lookup": Benchmark("casatwin.registry.bench:bench_lookup", "registry lookups"),
    "simulator": Benchmark("casatwin.simulator.bench:benchmark", "simulator"),
    "dashboard-fanout": Benchmark("casatwin_dashboard.bench:fanout", "load generator"),
    "processor-latency": Benchmark("casatwin.processor.bench:latency", DRIVER),
    "processor-throughput": Benchmark(
        "casatwin.processor.bench:throughput", DRIVER, helpers_as="load generator"
    ),
    "processor-latency-settings": Benchmark("casatwin.processor.bench:latency_settings", DRIVER),
    "dispatch": Benchmark("casatwin.dispatch.bench:bench_dispatch", "dispatcher"),
    "latency-budget": Benchmark("casatwin.demo.latency:budget", DRIVER),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="run the benchmarks (make bench)",
        description="Run every benchmark (or the ones named) against private servers.",
    )
    bench.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})"
    )
    bench.set_defaults(handler=run)


@contextlib.contextmanager
def private_stack(
    settings: Settings, prefix: str = "casatwin-bench-"
) -> Iterator[tuple[Settings, Any]]:
    """A broker, a read-model server and MariaDB on free ports in a temporary directory,
    the bus provisioned (topics, the services' users and ACLs); yields the settings that
    point at them and the running :class:`~casatwin.devstack.stack.Stack` (benchmarks,
    demos)."""
    from casatwin.bus.access import provision
    from casatwin.devstack.servers import free_port
    from casatwin.devstack.stack import Stack
    from casatwin.devstack.vault import generate_secrets

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        private = settings.replace(
            general={"data_dir": Path(tmp)},
            kafka={"bootstrap": f"127.0.0.1:{free_port()}"},
            mongo={"url": f"mongodb://127.0.0.1:{free_port()}"},
            mariadb={"port": free_port()},
        )
        stack = Stack.from_settings(private)
        stack.start()
        try:
            generate_secrets(private)
            provision(private.kafka)  # the services it starts log in as themselves
            yield private, stack
        finally:
            stack.stop()


def run(args: argparse.Namespace, settings: Settings) -> int:
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        from casatwin.errors import UserError

        raise UserError(
            f"unknown benchmark {unknown[0]!r}", hint=f"choose among {', '.join(BENCHMARKS)}"
        )
    from casatwin import usage  # psutil: not needed for `casatwin --help`

    results = {}
    budgets = usage.garage_budgets()
    with private_stack(settings) as (bench_settings, _stack):
        for name in names:
            benchmark = BENCHMARKS[name]
            module, function = benchmark.target.split(":")
            started = time.monotonic()
            with usage.UsageMonitor(
                runner_as=benchmark.runner_as, helpers_as=benchmark.helpers_as, budgets=budgets
            ) as monitor:
                result: dict[str, Any] = getattr(importlib.import_module(module), function)(
                    bench_settings
                )
            result = {
                "benchmark": name,
                **result,
                "wall_s": round(time.monotonic() - started, 1),
                "usage": monitor.report(),
            }
            results[name] = result
            print(f"{name}: CPU and memory per service", file=sys.stderr)
            print("\n".join(usage.format_usage(monitor.usage())), file=sys.stderr)
            sys.stdout.write(orjson.dumps(result).decode() + "\n")
            sys.stdout.flush()
    out = settings.general.data_dir / "bench" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0
