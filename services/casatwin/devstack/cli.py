"""``casatwin stack``: the one-machine stack behind ``make run``."""

from __future__ import annotations

import argparse

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser(
        "stack",
        help="run the whole twin on this machine (make run)",
        description=(
            "Start Apache Kafka, the MongoDB-wire server and MariaDB, create the "
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
    jars = actions.add_parser(
        "jars",
        help="fetch the JVM jars (Kafka's broker, Spark's Kafka connector) with Maven",
        description=(
            "Resolve Apache Kafka's broker and Spark's Kafka connector from Maven Central "
            "into CASATWIN_JARS_DIR (make setup runs it; a second run downloads nothing)."
        ),
    )
    jars.set_defaults(handler=run_jars)


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.devstack.runner import run

    return run(settings, args.procfile, servers_only=args.servers_only)


def run_jars(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.devstack import jars

    for name in jars.JAR_SETS:
        jars.resolve(name, settings.general.jars_dir)
    return 0
