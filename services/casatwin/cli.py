"""The one command line: ``casatwin <command>``.

Each subpackage contributes its commands through a light ``cli`` module with a
``register(subparsers)`` function; heavy imports (NumPy, Spark) happen inside the handlers
so that ``casatwin --help`` answers at once. A handler takes the parsed arguments and the
settings and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from casatwin import __version__, config, logs
from casatwin.errors import UserError

Handler = Callable[[argparse.Namespace, config.Settings], int]

# Order is the order of `casatwin --help`.
COMMAND_MODULES = (
    "casatwin.devstack.cli",
    "casatwin.city.cli",
    "casatwin.simulator.cli",
    "casatwin.gateway.cli",
    "casatwin.processor.cli",
    "casatwin.bus.cli",
    "casatwin.registry.cli",
    "casatwin.rules.cli",
    "casatwin.dispatch.cli",
    "casatwin_dashboard.cli",
    "casatwin.benchmarks",
    "casatwin.configcli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casatwin",
        description="CasaTwin: a real-time traffic digital twin of Casablanca.",
        epilog="Settings come from CASATWIN_* environment variables; see `casatwin config`.",
    )
    parser.add_argument("--version", action="version", version=f"casatwin {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = config.load()
        logs.configure(settings.general.log_level, settings.general.log_format)
        for name in config.unknown_variables():
            logs.get_logger("config").warning("ignoring unknown setting (a typo?)", variable=name)
        return handler(args, settings)
    except UserError as exc:
        print(f"casatwin: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"casatwin: hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
