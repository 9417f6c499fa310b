"""``casatwin simulator`` (being built: see issue 2)."""

from __future__ import annotations

import argparse

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("simulator", help="run the fleet simulator")
    sim.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    raise NotImplementedError
