"""``casatwin demo NAME``: the twin shown to an audience (docs/demo.md).

``normal``       the twin with normal traffic, and what to look at on the dashboard
``faults``       kill -9 the processor, MariaDB down 30 s, the broker restarted; recovery
                 on the dashboard; ground truth reconciled with the ledger
``gameday``      plays scenarios/gameday.yaml (the congestion issue's traffic spike)
``walkthrough``  prints the running architecture: nodes, services, topics, rates
``latency``      the latency budget, hop by hop (also ``casatwin bench latency-budget``)

Every demo but ``walkthrough`` runs on a private stack (servers on free ports in a
temporary directory), so it never disturbs ``make run`` or a colleague's servers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from casatwin.config import Settings

SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="demo scenarios: normal, faults, gameday, walkthrough, latency",
        description="Run a demo scenario on a private stack (docs/demo.md).",
    )
    names = demo.add_subparsers(dest="demo", required=True, metavar="NAME")

    normal = names.add_parser("normal", help="the twin with normal traffic")
    normal.add_argument("--seconds", type=float, default=600, help="how long (default 600)")
    normal.add_argument("--taxis", type=int, default=2000, help="taxis (default 2000)")
    normal.set_defaults(handler=run_normal)

    faults = names.add_parser("faults", help="three faults, recovery, reconciliation")
    faults.add_argument("--mariadb-down", type=float, default=30, metavar="S",
                        help="seconds MariaDB stays down (default 30)")  # fmt: skip
    faults.set_defaults(handler=run_faults)

    gameday = names.add_parser("gameday", help="play scenarios/gameday.yaml (a traffic spike)")
    gameday.add_argument("--scenario", type=Path, default=SCENARIOS / "gameday.yaml")
    gameday.set_defaults(handler=run_gameday)

    walk = names.add_parser("walkthrough", help="print the running architecture")
    walk.add_argument("--sample-s", type=float, default=5.0,
                      help="seconds over which topic rates are measured (default 5)")  # fmt: skip
    walk.add_argument("--inventory", type=Path, default=None,
                      help="the Ansible inventory the twin was converged from (default "
                           "inventory/garage/hosts.yml)")  # fmt: skip
    walk.set_defaults(handler=run_walkthrough)

    latency = names.add_parser("latency", help="the latency budget, hop by hop")
    latency.add_argument("--seconds", type=int, default=120, help="measured run (default 120)")
    latency.set_defaults(handler=run_latency)


def demo_settings(settings: Settings) -> Settings:
    """A demo's services on free ports, their metrics off (the defaults may be taken)."""
    from casatwin.devstack.servers import free_port

    return settings.replace(
        dashboard={"port": free_port(), "metrics_port": 0, "host": "127.0.0.1"},
        processor={"metrics_port": 0, "starting_offsets": "earliest"},
        simulator={"metrics_port": 0},
    )


def _prepared(settings: Settings):  # type: ignore[no-untyped-def]
    from casatwin.benchmarks import private_stack

    return private_stack(demo_settings(settings), prefix="casatwin-demo-")


def run_faults(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.demo import faults
    from casatwin.devstack.runner import prepare

    with _prepared(settings) as (private, stack):
        prepare(private)
        result = faults.run(private, stack, faults.FaultPlan(mariadb_down_s=args.mariadb_down))
    return 0 if result.clean else 1


def run_normal(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.demo.normal import play

    with _prepared(settings) as (private, _stack):
        play(private, ["--realtime", "--taxis", str(args.taxis), "--seconds", str(args.seconds)])
    return 0


def run_gameday(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.demo.normal import play
    from casatwin.errors import UserError

    if not args.scenario.exists():
        raise UserError(
            f"scenario {args.scenario} not found",
            hint="scenarios/gameday.yaml comes with the congestion work (issue 5); "
            "or pass --scenario FILE",
        )
    with _prepared(settings) as (private, _stack):
        play(private, ["--realtime", "--scenario", str(args.scenario)])
    return 0


def run_walkthrough(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.demo.walkthrough import INVENTORY, describe

    print(describe(settings, args.sample_s, args.inventory or INVENTORY))
    return 0


def run_latency(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from casatwin.demo.latency import budget

    with _prepared(settings) as (private, _stack):
        result = budget(private, args.seconds)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0
