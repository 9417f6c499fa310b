"""``casatwin city``: inspect, validate, build and import city packs."""

from __future__ import annotations

import argparse
import sys

import orjson

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    city = subparsers.add_parser(
        "city", help="inspect, validate and import city packs", description=__doc__
    )
    actions = city.add_subparsers(title="actions", metavar="ACTION", required=True)

    stats = actions.add_parser("stats", help="print a pack's counts as one JSON object")
    stats.add_argument("pack", nargs="?", help="pack name or file (default: CASATWIN_CITY_PACK)")
    stats.set_defaults(handler=run_stats)

    validate = actions.add_parser("validate", help="check a pack and name every offending feature")
    validate.add_argument("pack", nargs="?", help="pack name or file (default: CASATWIN_CITY_PACK)")
    validate.set_defaults(handler=run_validate)


def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.city.load import load

    pack = load(args.pack or settings.city.pack)
    sys.stdout.write(orjson.dumps(pack.stats()).decode() + "\n")
    return 0


def run_validate(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from casatwin.city import load

    name = args.pack or settings.city.pack
    path = load.bundled_path(name) or Path(name)
    found = load.problems(load.read_raw(path))
    if found:
        print(f"{path}: {len(found)} problem(s)", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{path}: valid")
    return 0
