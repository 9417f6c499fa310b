"""``casatwin config``: the effective settings, or their reference table."""

from __future__ import annotations

import argparse

from casatwin import config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="print the effective settings",
        description="Print every setting with its value in this environment.",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the reference table of all settings"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: config.Settings) -> int:
    if args.markdown:
        print(config.markdown_reference(), end="")
        return 0
    for section, name, field, _ in config.describe():
        value = getattr(getattr(settings, section), name)
        shown = "***" if field.metadata["secret"] and value else config._format(value)
        print(f"{config.env_name(section, name)}={shown}")
    return 0
