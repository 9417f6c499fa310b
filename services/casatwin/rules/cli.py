"""``casatwin rules``: show, check and try the loi 52-05 rule book."""

from __future__ import annotations

import argparse
import datetime as dt

import orjson

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    rules = subparsers.add_parser(
        "rules",
        help="the loi 52-05 rule book: show, check, try a decision",
        description="The rules the processor applies to every infraction (loi 52-05).",
    )
    actions = rules.add_subparsers(title="actions", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="the rules in force, unverified values flagged")
    show.add_argument("--book", help="a rule book file (default: CASATWIN_RULES_BOOK or loi 52-05)")
    show.set_defaults(handler=run_show)
    check = actions.add_parser("check", help="validate a rule book file")
    check.add_argument("file", help="the YAML rule book to check")
    check.set_defaults(handler=run_check)
    decide = actions.add_parser(
        "decide",
        help="decide one infraction from the command line (JSON)",
        description="Decide an infraction as the processor would, for a driver you describe.",
    )
    decide.add_argument("type", choices=("speeding", "red_light", "illegal_parking"))
    decide.add_argument("--measured", type=float, help="measured speed, km/h (speeding)")
    decide.add_argument("--limit", type=float, help="speed limit, km/h (speeding)")
    decide.add_argument(
        "--parking-kind", choices=("dangerous", "pedestrian_crossing", "other"), help="(parking)"
    )
    decide.add_argument(
        "--points",
        type=int,
        help="driver's balance: 0 to 30, or to 20 on probation (omit: unknown driver)",
    )
    decide.add_argument(
        "--status", choices=("valid", "suspended", "annulled"), help="the licence (default: valid)"
    )
    probation = decide.add_mutually_exclusive_group()
    probation.add_argument(
        "--probation", action="store_true", help="a probationary licence (under two years old)"
    )
    probation.add_argument(
        "--licence-issued",
        type=_iso_day,
        metavar="YYYY-MM-DD",
        help="the licence's issue day: probationary for two years from it (Art. 23)",
    )
    decide.add_argument(
        "--class1-days-ago", type=float, metavar="DAYS", help="an earlier class-1 offence, DAYS ago"
    )
    decide.add_argument("--book", help="a rule book file (default: CASATWIN_RULES_BOOK)")
    decide.set_defaults(handler=run_decide)


def _iso_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.rules.book import load_rule_book

    book = load_rule_book(args.book or settings.rules.book or None)
    print(f"{book.title} — rule book {book.version} ({book.source})")
    num, den = book.session_lost_fraction
    print(
        f"points: {book.capital} ({book.capital_article}); annulled at 0 ({book.annulment_article})"
    )
    print(
        f"probation: {book.probation_years} years from issue, {book.probation_capital} points"
        f" ({book.probation_article}); annulled at 0 ({book.probation_annulment_article}: new"
        f" exam after {book.retest_after_months} months, then {book.new_probation_years} year(s)"
        f" at {book.new_probation_capital} points); more than {num}/{den} of the points lost:"
        f" education session ({book.session_article})"
    )
    for number, fine in sorted(book.classes.items()):
        low, high = fine.court_range_mad
        print(
            f"class {number}: {fine.fine_mad} MAD (24 h: {fine.reduced_24h}, 15 days: "
            f"{fine.reduced_15d}); court {low}-{high} MAD ({fine.article})"
        )
    print(
        f"repeat: a class-{book.repeat_class} offence within {book.repeat_period_days} days"
        " of another goes to court"
    )
    for rule in book.rules:
        flags = " délit" if rule.delit else ""
        flags += " dispatch" if rule.dispatch else ""
        print(
            f"  {rule.id:<28} class {rule.offence_class}  -{rule.points} pts{flags}  {rule.label}"
        )
    if book.unverified:
        print("unverified values (used, and flagged in every decision relying on them):")
        for path, why in book.unverified.items():
            print(f"  {path}: {why}")
    return 0


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.rules.book import load_rule_book

    book = load_rule_book(args.file)
    print(f"{args.file}: valid rule book {book.version}, {len(book.rules)} rules")
    return 0


def run_decide(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.errors import UserError
    from casatwin.rules.engine import (
        DAY_MS,
        DriverHistory,
        InvalidFacts,
        OffenceFacts,
        PastOffence,
        decide,
        load_rule_book,
        probation_end_for,
    )

    hint = "see `casatwin rules decide --help`"
    book = load_rule_book(args.book or settings.rules.book or None)
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    facts = OffenceFacts(args.type, now, args.measured, args.limit, args.parking_kind)
    driver_options = {
        "--status": args.status is not None,
        "--probation": args.probation,
        "--licence-issued": args.licence_issued is not None,
        "--class1-days-ago": args.class1_days_ago is not None,
    }
    history = None
    if args.points is None:
        given = [name for name, present in driver_options.items() if present]
        if given:
            verb = "describes" if len(given) == 1 else "describe"
            raise UserError(
                f"{' and '.join(given)} {verb} the driver, but no --points were given (without"
                " them the driver is unknown)",
                hint="add --points N, the driver's balance",
            )
    else:
        offences = ()
        if args.class1_days_ago is not None:
            if not args.class1_days_ago >= 0:
                raise UserError(
                    f"--class1-days-ago should be 0 or more days, got {args.class1_days_ago:g}",
                    hint=hint,
                )
            offences = (PastOffence(now - int(args.class1_days_ago * DAY_MS), 1),)
        if args.licence_issued is not None:
            issued_ms = _day_ms(args.licence_issued)
            if issued_ms > now:
                raise UserError(
                    f"--licence-issued {args.licence_issued} is after the offence (today)",
                    hint=hint,
                )
            probation_end_ms = _day_ms(probation_end_for(args.licence_issued, book))
        else:
            probation_end_ms = now + DAY_MS if args.probation else now - DAY_MS
        history = DriverHistory(
            cin="(command line)",
            points=args.points,
            status=args.status or "valid",
            probation_end_ms=probation_end_ms,
            offences=offences,
        )
    try:
        decision = decide(facts, history, book)
    except InvalidFacts as exc:  # InvalidHistory too: a driver the law cannot have
        raise UserError(str(exc), hint=hint) from None
    print(orjson.dumps(decision.to_message(), option=orjson.OPT_INDENT_2).decode())
    return 0


def _day_ms(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
