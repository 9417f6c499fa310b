"""``casatwin stack``: the one-machine stack behind ``make run``."""

from __future__ import annotations

import argparse

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser(
        "stack",
        help="run the whole twin on this machine (make run)",
        description=(
            "Start the embedded broker, the MongoDB-wire server and MariaDB, create the "
            "topics and the schema, then run every service of the Procfile until Ctrl-C."
        ),
    )
    actions = stack.add_subparsers(title="actions", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up", help="start the servers and the services", description="Start everything."
    )
    up.add_argument("--procfile", default="Procfile", help="process list (default: Procfile)")
    up.add_argument("--servers-only", action="store_true", help="start the servers but no service")
    up.set_defaults(handler=run_up)


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.devstack.runner import run

    return run(settings, args.procfile, servers_only=args.servers_only)
