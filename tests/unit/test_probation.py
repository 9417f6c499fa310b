"""Probation under loi 52-05: the probationary capital, its end, a probationer's serious
offences (each case with the article it applies), and the inputs the law cannot have,
refused through the engine, the command line and the processor's decider."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from casatwin.rules.book import RuleBookError, bundled_path, load_rule_book, parse
from casatwin.rules.engine import (
    DAY_MS,
    DriverHistory,
    InvalidFacts,
    InvalidHistory,
    OffenceFacts,
    decide,
    licence_at,
    probation_end_for,
)

T = 1_780_000_000_000  # the event time of every case (epoch ms)
BOOK = load_rule_book()
REPO = Path(__file__).resolve().parents[2]

RED = OffenceFacts("red_light", T)
DELIT = OffenceFacts("speeding", T, 112.0, 60.0)  # 52 km/h over: the délit
CLASS2 = OffenceFacts("speeding", T, 85.0, 60.0)  # 25 km/h over: class 2, 2 points


def probationer(points: int, *, ends_in_ms: int = 200 * DAY_MS, status: str = "valid"):
    """A licence whose probation ends ``ends_in_ms`` after the offence (<= 0: it has ended)."""
    return DriverHistory("BE123456", points, status, probation_end_ms=T + ends_in_ms)


# (case, facts, driver, on probation, capital, points after, licence after, court,
#  education session, the article the case applies, a phrase of the French text)
CASES = [
    (
        "a new licence holds 20 points",
        RED, probationer(20), True, 20, 16, "valid", False, False,
        "Art. 23", "permis probatoire, capital de 20 points, Art. 23",
    ),
    (
        "a probationer's délit costs the points and goes to court",
        DELIT, probationer(20), True, 20, 14, "valid", True, False,
        "Art. 23", "délit",
    ),
    (
        "a class-2 offence on probation",
        CLASS2, probationer(15), True, 20, 13, "valid", False, False,
        "Art. 23", "solde 15 → 13",
    ),
    (
        "losing 13 of 20 points is not more than two thirds",
        CLASS2, probationer(9), True, 20, 7, "valid", False, False,
        "Art. 23", "solde 9 → 7",
    ),
    (
        "losing more than two thirds of the 20 points: education session",
        RED, probationer(10), True, 20, 6, "valid", False, True,
        "Art. 26", "session d'éducation à la sécurité routière obligatoire (Art. 26)",
    ),
    (
        "the délit that takes a probationer past two thirds",
        DELIT, probationer(12), True, 20, 6, "valid", True, True,
        "Art. 26", "Plus des deux tiers des 20 points du permis probatoire sont perdus",
    ),
    (
        "past two thirds already: no second session",
        RED, probationer(6), True, 20, 2, "valid", False, False,
        "Art. 23", "solde 6 → 2",
    ),
    (
        "a probationer's last points: annulled of right",
        RED, probationer(4), True, 20, 0, "annulled", True, False,
        "Art. 24", "permis annulé de plein droit (Art. 24)",
    ),
    (
        "a probationer's délit that takes the last points",
        DELIT, probationer(6), True, 20, 0, "annulled", True, False,
        "Art. 24", "permis probatoire d'un an à 10 points",
    ),
    (
        "the last millisecond of probation",
        RED, probationer(20, ends_in_ms=1), True, 20, 16, "valid", False, False,
        "Art. 23", "permis probatoire",
    ),
    (
        "probation has ended: the capital is 30",
        RED, probationer(25, ends_in_ms=0), False, 30, 21, "valid", False, False,
        "Art. 22", "permis, capital de 30 points, Art. 22",
    ),
    (
        "probation has ended: a 20-point balance is not credited",
        RED, probationer(20, ends_in_ms=-DAY_MS), False, 30, 16, "valid", False, False,
        "Art. 22", "solde 20 → 16",
    ),
    (
        "after probation, the last points annul under Art. 22",
        RED, probationer(4, ends_in_ms=-DAY_MS), False, 30, 0, "annulled", True, False,
        "Art. 22", "Le solde atteint 0 : permis annulé (Art. 22)",
    ),
    (
        "after probation, no session however many points are lost",
        RED, probationer(8, ends_in_ms=-DAY_MS), False, 30, 4, "valid", False, False,
        "Art. 22", "solde 8 → 4",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "facts,history,on_probation,capital,after,licence,court,session,article,phrase",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_probation_cases(
    facts, history, on_probation, capital, after, licence, court, session, article, phrase
):
    d = decide(facts, history, BOOK)
    assert (d.on_probation, d.capital) == (on_probation, capital)
    assert (d.points_after, d.licence_status_after) == (after, licence)
    assert (d.court, d.education_session_required) == (court, session)
    assert f"({article})" in d.legal_basis or f", {article})" in d.legal_basis
    assert phrase in d.legal_basis
    assert d.points_before <= d.capital and d.points_after <= d.capital  # never above
    message = d.to_message()
    assert message["capital"] == capital and message["education_session_required"] is session


def test_the_articles_each_case_applies():
    """The annulment article follows the licence; the session flags its unverified number."""
    on = decide(RED, probationer(4), BOOK)
    assert on.court_reasons == ("points_exhausted",) and "(Art. 24)" in on.court_reason
    assert "nouvel examen après 6 mois au moins" in on.legal_basis
    off = decide(RED, probationer(4, ends_in_ms=0), BOOK)
    assert "(Art. 22)" in off.court_reason and "Art. 24" not in off.legal_basis
    session = decide(RED, probationer(10), BOOK)
    assert "points.probation_session.article" in session.unverified
    assert "points.capital" not in session.unverified  # the 20 of Art. 23 was found
    assert "points.capital" in decide(RED, probationer(25, ends_in_ms=0), BOOK).unverified


def test_the_end_of_probation_is_two_years_after_issue():
    assert probation_end_for(dt.date(2025, 3, 14), BOOK) == dt.date(2027, 3, 14)
    assert probation_end_for(dt.date(2024, 2, 29), BOOK) == dt.date(2026, 3, 1)
    assert probation_end_for(dt.date(2024, 12, 31), BOOK) == dt.date(2026, 12, 31)


def test_a_batch_on_probation_never_goes_above_the_capital():
    history = probationer(20)
    for _ in range(8):
        d = decide(RED, history, BOOK)
        assert 0 <= d.points_after <= d.points_before <= 20
        history = history.with_offence(d)
    assert (history.points, history.status) == (0, "annulled")


# ---------------------------------------------------------------------------------------
# Impossible inputs


@pytest.mark.parametrize(
    "history,message",
    [
        (probationer(21), "a probationary licence holds at most 20 points (Art. 23)"),
        (probationer(30), "field 'points' is 30, but a probationary licence"),
        (probationer(31, ends_in_ms=0), "a licence holds at most 30 points (Art. 22"),
        (probationer(-1), "field 'points' cannot be negative, got -1"),
        (probationer(-4, ends_in_ms=0), "cannot be negative"),
        (probationer(0), "a licence with 0 points is annulled (Art. 22)"),
        (probationer(0, status="suspended"), "field 'status' is 'suspended'"),
        (probationer(10, status="revoked"), "field 'status' is 'revoked'"),
        (probationer(2.5), "field 'points' should be a whole number"),  # type: ignore[arg-type]
        (probationer(True), "field 'points' should be a whole number"),  # type: ignore[arg-type]
    ],
)
def test_the_engine_refuses_a_driver_the_law_cannot_have(history, message):
    with pytest.raises(InvalidHistory, match=message.replace("(", r"\(").replace(")", r"\)")):
        decide(RED, history, BOOK)
    with pytest.raises(InvalidFacts):  # whoever sets undecidable facts aside catches these
        licence_at(history, T, BOOK)


def test_an_annulled_licence_at_0_and_a_suspended_one_are_possible():
    assert decide(RED, probationer(0, status="annulled"), BOOK).court
    assert decide(RED, probationer(12, status="suspended"), BOOK).court


def test_a_negative_speed_limit_is_refused():
    with pytest.raises(InvalidFacts, match="'limit' should be a positive speed"):
        decide(OffenceFacts("speeding", T, 50.0, -10.0), None, BOOK)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run `casatwin ...` in-process; logging goes back to how it was afterwards."""
    import logging

    from casatwin.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(*args: str):
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse's own refusals
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["red_light", "--points", "30", "--probation"],
            "a probationary licence holds at most 20 points (Art. 23)",
        ),
        (["red_light", "--points", "21", "--probation"], "field 'points' is 21"),
        (["red_light", "--points", "31"], "a licence holds at most 30 points"),
        (["red_light", "--points", "-1"], "cannot be negative, got -1"),
        (["red_light", "--points", "0"], "a licence with 0 points is annulled (Art. 22)"),
        (
            ["red_light", "--points", "25", "--licence-issued", "2026-06-01"],
            "a probationary licence holds at most 20 points",
        ),
        (
            ["red_light", "--points", "20", "--licence-issued", "2999-01-01"],
            "--licence-issued 2999-01-01 is after the offence",
        ),
        (["red_light", "--probation"], "--probation describes the driver, but no --points"),
        (
            ["red_light", "--status", "suspended", "--class1-days-ago", "3"],
            "--status and --class1-days-ago describe the driver",
        ),
        (["red_light", "--points", "9", "--class1-days-ago", "-2"], "0 or more days, got -2"),
        (
            ["speeding", "--measured", "50", "--limit", "-10", "--points", "9"],
            "'limit' should be a positive speed",
        ),
    ],
)
def test_the_command_line_refuses_impossible_inputs(cli, argv, message):
    status, out, err = cli("rules", "decide", *argv)
    assert status == 2 and out == ""
    assert "casatwin: error: " in err and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--probation", "--licence-issued", "2026-01-01"], "not allowed with argument"),
        (["--licence-issued", "2026-13-01"], "'2026-13-01' is not a day"),
        (["--points", "many"], "invalid int value"),
    ],
)
def test_argument_mistakes_are_refused_by_the_parser(cli, argv, message):
    status, _, err = cli("rules", "decide", "red_light", *argv)
    assert status == 2 and message in err and "Traceback" not in err


def test_the_command_line_accepts_what_the_law_allows(cli):
    status, out, _ = cli("rules", "decide", "red_light", "--points", "10", "--probation")
    assert status == 0
    message = yaml.safe_load(out)
    assert (message["capital"], message["points_after"]) == (20, 6)
    assert message["on_probation"] and message["education_session_required"]
    issued = (dt.date.today() - dt.timedelta(days=800)).isoformat()  # probation has ended
    argv = ("red_light", "--points", "25", "--licence-issued", issued)
    status, out, _ = cli("rules", "decide", *argv)
    assert status == 0 and yaml.safe_load(out)["capital"] == 30


def test_the_real_command_exits_2_with_one_line_and_no_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO / "services")}
    code = "import sys; from casatwin.cli import main; sys.exit(main())"
    argv = ["rules", "decide", "red_light", "--points", "30", "--probation"]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "casatwin: error: driver: field 'points' is 30, but a probationary licence holds at"
        " most 20 points (Art. 23)",
        "casatwin: hint: see `casatwin rules decide --help`",
    ]


def test_rules_show_states_the_probation_rules(cli):
    status, out, _ = cli("rules", "show")
    assert status == 0
    assert "probation: 2 years from issue, 20 points (Art. 23); annulled at 0 (Art. 24" in out
    assert "points.capital" in out and "speeding.50_and_over.court_range_mad" in out


# ---------------------------------------------------------------------------------------
# The book


def _raw() -> dict:
    return yaml.safe_load(bundled_path().read_text())


def test_the_book_reads_the_probation_rules():
    assert (BOOK.probation_capital, BOOK.probation_years, BOOK.probation_article) == (
        20,
        2,
        "Art. 23",
    )
    assert (BOOK.probation_annulment_article, BOOK.retest_after_months) == ("Art. 24", 6)
    assert (BOOK.new_probation_years, BOOK.new_probation_capital) == (1, 10)
    assert (BOOK.session_article, BOOK.session_lost_fraction) == ("Art. 26", (2, 3))
    # Item 8 of issue 17: each value still unverified says what was searched.
    for path in (
        "rules.speeding.50_and_over.points",
        "rules.speeding.50_and_over.court_range_mad",
        "rules.speeding.20_to_30.points",
        "court.repeat_period_days",
        "points.capital",
    ):
        assert "searched" in BOOK.unverified[path], path
    assert BOOK.rule("speeding.50_and_over").court_range_mad == (700, 1400)


@pytest.mark.parametrize(
    "change,expected",
    [
        (
            lambda r: r["points"]["probation_annulment"].update({"new_probation_capital": 25}),
            "points.probation_annulment: field 'new_probation_capital' should not exceed",
        ),
        (
            lambda r: r["points"]["probation_session"].update({"lost_more_than": [3, 2]}),
            "points.probation_session: field 'lost_more_than'",
        ),
        (
            lambda r: r["points"].update({"probation_years": 0}),
            "points: field 'probation_years'",
        ),
        (
            lambda r: r["points"]["probation_annulment"].pop("article"),
            "points.probation_annulment: field 'article' is missing",
        ),
    ],
)
def test_a_malformed_probation_rule_is_named(change, expected):
    raw = _raw()
    change(raw)
    with pytest.raises(RuleBookError) as raised:
        parse(raw, source="book.yaml")
    assert expected in str(raised.value)


# ---------------------------------------------------------------------------------------
# The chain: the registry's drivers and the processor's decider


def test_every_generated_driver_is_one_the_engine_accepts():
    """The registry carries the licence's issue day and probation end; the generator's
    probation is Art. 23's and its balances fit the capital in force."""
    from casatwin.registry import identities as ids
    from casatwin.registry.lookup import DriverRecord

    spec = ids.Spec(52, dt.date(2025, 6, 1))
    as_of_ms = int(dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp() * 1000)
    rows = [line.split("\t") for line in ids.drivers_tsv(spec, 0, 20_000).decode().splitlines()]
    on_probation = 0
    for cin, first, last, _birth, licence, category, issue, end, points, status in rows:
        assert probation_end_for(dt.date.fromisoformat(issue), BOOK).isoformat() == end
        record = DriverRecord(cin, first, last, licence, category, issue, end, int(points), status)
        licence_now = licence_at(record.history(), as_of_ms, BOOK)
        on_probation += licence_now.on_probation
    assert on_probation > 100  # the sample has probationers to check


def test_the_processor_sets_aside_a_probationer_above_the_capital(monkeypatch):
    """A registry row the law cannot have goes to the DLQ with the reason; the others are
    decided and recorded."""
    from casatwin.processor.decisions import RegistryDecider
    from casatwin.registry import ledger, lookup
    from casatwin.registry.lookup import DriverRecord, VehicleRecord

    future = (dt.date(2026, 5, 28) + dt.timedelta(days=300)).isoformat()
    good = DriverRecord("BE1", "A", "B", "01/1", "B", "2025-01-01", future, 20, "valid")
    bad = DriverRecord("BE2", "C", "D", "01/2", "B", "2025-01-01", future, 25, "valid")
    records = {
        "TX-00001": VehicleRecord("TX-00001", "1-ب-6", "taxi_petit", "x", good),
        "TX-00002": VehicleRecord("TX-00002", "2-ب-6", "taxi_petit", "y", bad),
    }
    recorded: list = []

    def record_many(conn, items):
        recorded.extend(items)
        return [
            ledger.RecordOutcome(i["infraction_id"], True, d.to_message(), "c", 0, 0, "valid")
            for i, d in items
        ]

    monkeypatch.setattr(lookup, "lookup_vehicles", lambda conn, ids, **kw: records)
    monkeypatch.setattr(ledger, "record_many", record_many)
    decider = RegistryDecider.__new__(RegistryDecider)
    decider._conn, decider._book, decider._pseudonym_key = object(), BOOK, b"k" * 32
    detections = [
        {"infraction_id": f"inf-{n}", "vehicle_id": f"TX-0000{n}", "kind": "taxi_petit",
         "type": "red_light", "event_ts": T, "lat": 33.5, "lon": -7.6}
        for n in (1, 2)
    ]  # fmt: skip
    first, second = decider.decide(detections)
    assert first.rejected is None and first.decision["capital"] == 20
    assert first.decision["points_after"] == 16
    assert second.rejected is not None
    assert "a probationary licence holds at most 20 points (Art. 23)" in second.rejected
    assert [i["infraction_id"] for i, _ in recorded] == ["inf-1"]
