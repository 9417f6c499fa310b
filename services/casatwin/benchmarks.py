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
from pathlib import Path
from typing import Any

import orjson

from casatwin import usage
from casatwin.config import Settings

# What the runner process itself is while each benchmark runs (casatwin.usage): the
# benchmarks run their subject in-process where production runs it as its own service.
RUNNER_AS: dict[str, str] = {
    "registry-load": "registry loader",
    "registry-lookup": "registry lookups",
    "simulator": "simulator",
    "dashboard-fanout": "load generator",
    "processor-latency": "processor/python-driver",
    "processor-throughput": "processor/python-driver",
    "processor-latency-settings": "processor/python-driver",
    "dispatch": "dispatcher",
    "latency-budget": "processor/python-driver",
}
# Where the runner's multiprocessing children are not its own work (default: they are).
HELPERS_AS: dict[str, str] = {"processor-throughput": "load generator"}

# name → "module:function"; each issue adds its benchmarks here.
BENCHMARKS: dict[str, str] = {
    # The load comes first: the lookup benchmark runs on the 10M drivers it leaves.
    "registry-load": "casatwin.registry.bench:bench_load",
    "registry-lookup": "casatwin.registry.bench:bench_lookup",
    "simulator": "casatwin.simulator.bench:benchmark",
    "dashboard-fanout": "casatwin_dashboard.bench:fanout",
    "processor-latency": "casatwin.processor.bench:latency",
    "processor-throughput": "casatwin.processor.bench:throughput",
    "processor-latency-settings": "casatwin.processor.bench:latency_settings",
    "dispatch": "casatwin.dispatch.bench:bench_dispatch",
    "latency-budget": "casatwin.demo.latency:budget",
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
    results = {}
    budgets = usage.garage_budgets()
    with private_stack(settings) as (bench_settings, _stack):
        for name in names:
            module, function = BENCHMARKS[name].split(":")
            started = time.monotonic()
            with usage.UsageMonitor(
                runner_as=RUNNER_AS[name], helpers_as=HELPERS_AS.get(name), budgets=budgets
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
