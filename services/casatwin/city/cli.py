"""``casatwin city``: inspect, validate, build and import city packs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from casatwin.config import Settings

PACK_HELP = "bundled pack name or pack file (default: CASATWIN_CITY_PACK)"


def register(subparsers: argparse._SubParsersAction) -> None:
    city = subparsers.add_parser(
        "city",
        help="inspect, validate, build and import city packs",
        description=__doc__,
        epilog="The pack format and the Casablanca pack are described in docs/city.md.",
    )
    actions = city.add_subparsers(title="actions", metavar="ACTION", required=True)

    stats = actions.add_parser(
        "stats",
        help="print a pack's counts as one JSON object",
        description="Print a pack's counts as one JSON object. Without PACK: the configured "
        "city, with the configured speed limits (CASATWIN_CITY_LIMIT_*) applied.",
    )
    stats.add_argument("pack", nargs="?", help=PACK_HELP)
    stats.set_defaults(handler=run_stats)

    validate = actions.add_parser(
        "validate",
        help="check a pack and name every offending feature",
        description="Check a pack: strong connectivity, coordinates inside the bounds, sane "
        "signal plans, zones, stations and districts. Exit 1 and list every problem if not.",
    )
    validate.add_argument("pack", nargs="?", help=PACK_HELP)
    validate.set_defaults(handler=run_validate)

    build = actions.add_parser(
        "build",
        help="compile a city sketch (YAML) into a pack",
        description="Compile a hand-drawn city sketch (YAML, e.g. "
        "services/casatwin/city/sources/casablanca.yaml) into a pack and print its counts.",
    )
    build.add_argument("sketch", type=Path, help="the sketch file")
    _add_output(build, "the sketch's")
    build.set_defaults(handler=run_build)

    imp = actions.add_parser(
        "import",
        help="build a pack from an OpenStreetMap extract (.osm or .osm.pbf)",
        description="Build a pack from an OpenStreetMap extract with pyosmium: drivable "
        "highway=* ways, traffic signals, police stations. Keeps the largest strongly "
        "connected part and reports what it dropped. Data © OpenStreetMap contributors, ODbL.",
    )
    imp.add_argument("file", type=Path, help="the extract, FILE.osm or FILE.osm.pbf")
    _add_output(imp, "the extract's")
    imp.add_argument("--name", help="the pack's name (default: the file's name)")
    imp.add_argument("--title", help="the pack's title (default: its name)")
    imp.add_argument("--units-per-station", type=int, default=4, help="police units per station")
    imp.add_argument(
        "--highway-stations", type=int, default=6, help="detector stations to place on motorways"
    )
    imp.set_defaults(handler=run_import)


def _add_output(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help=f"pack file to write, .json or .json.gz (default: {whose} name with .json.gz, "
        "in the current directory)",
    )


def _print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def _default_output(source: Path) -> Path:
    stem = source.name
    for suffix in (".osm.pbf", ".osm", ".pbf", ".yaml", ".yml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return Path(f"{stem}.json.gz")


def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.city.load import load, load_city

    pack = load(args.pack) if args.pack else load_city(settings.city)
    _print_json(pack.stats())
    return 0


def run_validate(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.city import load

    name = args.pack or settings.city.pack
    path = load.bundled_path(name) or Path(name)
    if not path.exists():
        raise load.PackError(
            f"no city pack named {name!r}",
            hint="use a bundled pack (casablanca) or the path of a pack file",
        )
    found = load.problems(load.read_raw(path))
    if found:
        print(f"casatwin: {path}: {len(found)} problem(s)", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{path}: valid")
    return 0


def run_build(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.city import load, sketch

    raw = sketch.compile_file(args.sketch)
    output = args.output or _default_output(args.sketch)
    load.write(raw, output)
    print(f"wrote {output}", file=sys.stderr)
    _print_json(load.from_dict(raw, source=str(output)).stats())
    return 0


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.city import load, osm

    output = args.output or _default_output(args.file)
    name = args.name or _default_output(args.file).name.removesuffix(".json.gz")
    result = osm.import_file(
        args.file,
        name=name,
        title=args.title or name,
        units_per_station=args.units_per_station,
        highway_stations=args.highway_stations,
    )
    pack = load.from_dict(result.raw, source=str(args.file))
    load.write(result.raw, output)
    print(f"wrote {output} ({osm.ATTRIBUTION})", file=sys.stderr)
    _print_json({**pack.stats(), "import": result.report()})
    return 0
