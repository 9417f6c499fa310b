"""The loi 52-05 rules: every boundary of the table, the court cases, the licence."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from casatwin.bus.messages import Decision as DecisionContract
from casatwin.rules.book import RuleBookError, bundled_path, load_rule_book, parse
from casatwin.rules.engine import (
    DAY_MS,
    DriverHistory,
    InvalidFacts,
    OffenceFacts,
    PastOffence,
    decide,
)

T = 1_780_000_000_000  # the event time of every case (epoch ms)
BOOK = load_rule_book()


def driver(points: int = 30, *, probation: bool = False, status: str = "valid", offences=()):
    """A driver whose probation ends a day after (or ended a year before) the event."""
    end = T + DAY_MS if probation else T - 365 * DAY_MS
    return DriverHistory("BE123456", points, status, end, tuple(offences))


def speeding(measured: float, limit: float = 60.0, **kw) -> OffenceFacts:
    return OffenceFacts("speeding", T, measured, limit, **kw)


RED = OffenceFacts("red_light", T)


def parking(kind: str) -> OffenceFacts:
    return OffenceFacts("illegal_parking", T, parking_kind=kind)


# (case, facts, class, settlement fine, 24 h, 15 days, points, court, délit)
TABLE = [
    ("0.5 over", speeding(60.5), 3, 300, 150, 200, 0, False, False),
    ("19 over", speeding(79), 3, 300, 150, 200, 0, False, False),
    ("19.9 over", speeding(79.9), 3, 300, 150, 200, 0, False, False),
    ("20 over", speeding(80), 2, 500, 300, 350, 2, False, False),
    ("29 over", speeding(89), 2, 500, 300, 350, 2, False, False),
    ("29.9 over", speeding(89.9), 2, 500, 300, 350, 2, False, False),
    ("30 over", speeding(90), 1, 700, 400, 500, 4, False, False),
    ("49 over", speeding(109), 1, 700, 400, 500, 4, False, False),
    ("49.9 over", speeding(109.9), 1, 700, 400, 500, 4, False, False),
    ("50 over: délit", speeding(110), 1, 0, 0, 0, 6, True, True),
    ("80 over in the centre", speeding(120, 40), 1, 0, 0, 0, 6, True, True),
    ("red light", RED, 1, 700, 400, 500, 4, False, False),
    ("dangerous parking", parking("dangerous"), 1, 700, 400, 500, 0, False, False),
    ("parking on a crossing", parking("pedestrian_crossing"), 2, 500, 300, 350, 0, False, False),
    ("other parking", parking("other"), 3, 300, 150, 200, 0, False, False),
]


@pytest.mark.parametrize(
    "facts,cls,fine,r24,r15,points,court,delit",
    [row[1:] for row in TABLE],
    ids=[r[0] for r in TABLE],
)
def test_the_table(facts, cls, fine, r24, r15, points, court, delit):
    d = decide(facts, driver(30), BOOK)
    assert (d.offence_class, d.fine_mad, d.reduced_24h, d.reduced_15d) == (cls, fine, r24, r15)
    assert (d.points, d.court, d.delit, d.settlement_offered) == (points, court, delit, not court)
    assert d.court_range_mad == {1: (700, 1400), 2: (500, 1000), 3: (300, 600)}[cls]
    assert d.points_after == 30 - points
    assert d.legal_basis  # French text for the operator, always


def test_the_delit_goes_to_court_and_says_why():
    d = decide(speeding(112), driver(30), BOOK)
    assert d.court_reasons == ("delit",)
    assert "délit" in d.legal_basis and "tribunal" in d.legal_basis
    assert "Pas de transaction" in d.legal_basis
    assert d.dispatch_required  # the vehicle must be stopped
    assert "speeding.50_and_over.delit" in d.unverified  # flagged, not hidden


def test_dangerous_parking_asks_for_a_unit_other_parking_does_not():
    assert decide(parking("dangerous"), driver(), BOOK).dispatch_required
    assert not decide(parking("other"), driver(), BOOK).dispatch_required
    assert not decide(RED, driver(), BOOK).dispatch_required


@pytest.mark.parametrize(
    "probation,points,after,capital", [(True, 20, 16, "20"), (False, 30, 26, "30")]
)
def test_probation_versus_full_licence(probation, points, after, capital):
    d = decide(RED, driver(points, probation=probation), BOOK)
    assert d.on_probation is probation
    assert (d.points_before, d.points_after, d.licence_status_after) == (points, after, "valid")
    assert f"capital de {capital} points" in d.legal_basis
    assert ("probatoire" in d.legal_basis) is probation


def test_probation_ends_at_its_end_time():
    history = DriverHistory("BE1", 20, "valid", probation_end_ms=T)
    assert decide(RED, history, BOOK).on_probation is False
    history = DriverHistory("BE1", 20, "valid", probation_end_ms=T + 1)
    assert decide(RED, history, BOOK).on_probation is True


@pytest.mark.parametrize(
    "earlier,court",
    [
        (PastOffence(T - 10 * DAY_MS, 1), True),  # second class-1 within the period
        (PastOffence(T - 365 * DAY_MS, 1), True),  # on the last day of the period
        (PastOffence(T - 365 * DAY_MS - 1, 1), False),  # just outside it
        (PastOffence(T - 10 * DAY_MS, 2), False),  # an earlier class-2 is no repeat
        (PastOffence(T + DAY_MS, 1), False),  # a later offence is no earlier one
    ],
)
def test_repeat_class_1_offence_goes_to_court(earlier, court):
    d = decide(speeding(95), driver(30, offences=[earlier]), BOOK)
    assert d.court is court
    assert ("repeat" in d.court_reasons) is court
    if court:
        assert "récidive" in d.court_reason.lower() and d.fine_mad == 0


def test_a_class_2_offence_after_a_class_1_is_no_repeat():
    d = decide(speeding(85), driver(30, offences=[PastOffence(T - DAY_MS, 1)]), BOOK)
    assert not d.court


@pytest.mark.parametrize("points", [4, 3, 1])
def test_the_offence_that_takes_points_to_0_annuls_and_refers(points):
    d = decide(RED, driver(points), BOOK)
    assert (d.points_after, d.licence_status_after) == (0, "annulled")
    assert d.points_removed == points  # never below 0
    assert d.court and "points_exhausted" in d.court_reasons
    assert d.dispatch_required
    assert "permis annulé" in d.legal_basis and "tribunal" in d.legal_basis


def test_one_point_more_keeps_the_licence():
    d = decide(RED, driver(5), BOOK)
    assert (d.points_after, d.licence_status_after, d.court) == (1, "valid", False)


def test_the_seeds_case_a_driver_with_too_few_points():
    """The seed sent this driver to court for lack of points; the law annuls and refers."""
    d = decide(speeding(95), driver(2), BOOK)
    message = d.to_message()
    assert message["court"] is True
    assert message["licence_status_after"] == "annulled"
    assert message["court_reasons"] == ["points_exhausted"]
    assert message["points_before"] == 2 and message["points_after"] == 0
    assert (
        "Le solde atteint 0 : permis annulé (Art. 22), dossier transmis au tribunal"
        in (message["legal_basis"])
    )


def test_simultaneous_offences_with_one_non_settleable_go_to_court():
    with_delit = OffenceFacts("red_light", T, simultaneous=(speeding(115),))
    d = decide(with_delit, driver(), BOOK)
    assert d.court and d.court_reasons == ("simultaneous",)
    assert "simultanées" in d.court_reason
    settleable = OffenceFacts("red_light", T, simultaneous=(speeding(70),))
    assert not decide(settleable, driver(), BOOK).court


@pytest.mark.parametrize("status", ["suspended", "annulled"])
def test_driving_without_a_valid_licence_goes_to_court(status):
    d = decide(parking("other"), driver(10 if status == "suspended" else 0, status=status), BOOK)
    assert d.court and "invalid_licence" in d.court_reasons
    assert "Art. 148" in d.legal_basis


def test_an_unknown_driver_is_decided_without_points():
    d = decide(speeding(95), None, BOOK)
    assert (d.offence_class, d.fine_mad, d.points) == (1, 700, 4)
    assert d.points_removed == 0
    assert d.points_before is d.points_after is d.licence_status_after is None
    assert "non identifié" in d.legal_basis and "aucun point" in d.legal_basis


def test_the_message_carries_the_contract_fields():
    message = decide(speeding(95), driver(), BOOK).to_message()
    for name, kind in DecisionContract.__annotations__.items():
        assert isinstance(message[name], kind), name
    assert message["rule"] == "speeding.30_to_50" and message["rule_book"] == BOOK.version


def test_revised_decides_the_same_facts_against_new_history():
    first = decide(RED, driver(30), BOOK)
    again = first.revised(driver(2))
    assert again.facts == first.facts and again.licence_status_after == "annulled"


@pytest.mark.parametrize(
    "facts,message",
    [
        (speeding(60), "is not above the limit"),
        (speeding(50), "is not above the limit"),
        (OffenceFacts("speeding", T, None, 60), "'measured'"),
        (parking("nowhere"), "'parking_kind'"),
        (OffenceFacts("illegal_parking", T), "'parking_kind'"),
        (OffenceFacts("jaywalking", T), "'type'"),
    ],
)
def test_facts_that_are_no_offence_are_refused(facts, message):
    with pytest.raises(InvalidFacts, match=message):
        decide(facts, driver(), BOOK)


def test_facts_from_an_infraction_message():
    facts = OffenceFacts.from_infraction(
        {
            "type": "illegal_parking",
            "event_ts": T,
            "measured": 300,
            "limit": 0,
            "parking_kind": "dangerous",
        }
    )
    assert facts.parking_kind == "dangerous" and facts.event_ts == T


# ---------------------------------------------------------------------------------------
# The rule book file


def raw_book() -> dict:
    return yaml.safe_load(bundled_path().read_text())


def test_the_bundled_book_flags_its_unverified_values():
    assert "court.repeat_period_days" in BOOK.unverified
    assert "rules.speeding.20_to_30.points" in BOOK.unverified
    assert BOOK.rule("red_light").unverified == {}


def test_the_repeat_period_is_configurable(tmp_path: Path):
    raw = raw_book()
    raw["court"]["repeat_period_days"] = {"value": 730, "unverified": "trying two years"}
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    book = load_rule_book(path)
    history = driver(30, offences=[PastOffence(T - 500 * DAY_MS, 1)])
    assert decide(RED, history, book).court
    assert not decide(RED, history, BOOK).court


def _broken(change) -> dict:
    raw = copy.deepcopy(raw_book())
    change(raw)
    return raw


def _rule(raw: dict, rule_id: str) -> dict:
    return next(r for r in raw["rules"] if r["id"] == rule_id)


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda r: _rule(r, "red_light").update({"class": 5}), "rule red_light: field 'class'"),
        (
            lambda r: _rule(r, "red_light").pop("points"),
            "rule red_light: field 'points' is missing",
        ),
        (
            lambda r: _rule(r, "speeding.20_to_30").update(
                {"points": {"value": 2, "unverified": ""}}
            ),
            "rule speeding.20_to_30: field 'points': 'unverified' should say why",
        ),
        (
            lambda r: _rule(r, "speeding.20_to_30").update({"over_kmh": [21, 30]}),
            "rule speeding.20_to_30: field 'over_kmh': starts at 21",
        ),
        (
            lambda r: _rule(r, "parking.other").update({"parking_kind": "kerb"}),
            "rule parking.other: field 'parking_kind'",
        ),
        (
            lambda r: _rule(r, "red_light").update({"colour": "red"}),
            "rule red_light: unknown field 'colour'",
        ),
        (
            lambda r: r["rules"].append(dict(_rule(r, "red_light"))),
            "rule red_light: the id is used twice",
        ),
        (lambda r: r["classes"][2].update({"reduced_24h": 900}), "class 2: reduced amounts"),
        (
            lambda r: r["court"].update({"repeat_period_days": -1}),
            "court: field 'repeat_period_days'",
        ),
        (lambda r: r.update({"format": "other/1"}), "field 'format'"),
    ],
)
def test_a_malformed_book_names_the_rule_and_the_field(change, expected):
    with pytest.raises(RuleBookError) as raised:
        parse(_broken(change), source="book.yaml")
    assert expected in str(raised.value)


def test_unreadable_and_invalid_yaml_files_are_refused(tmp_path: Path):
    with pytest.raises(RuleBookError, match="cannot read the rule book"):
        load_rule_book(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed")
    with pytest.raises(RuleBookError, match="not valid YAML"):
        load_rule_book(bad)


# ---------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run `casatwin ...` in-process; logging goes back to how it was afterwards."""
    import logging

    from casatwin.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield lambda *args: (main(list(args)), *capsys.readouterr())
    root.handlers[:] = handlers
    root.setLevel(level)


def test_rules_decide_shows_the_seeds_case(cli):
    status, out, _ = cli(
        "rules", "decide", "speeding", "--measured", "95", "--limit", "60", "--points", "2"
    )
    assert status == 0
    message = yaml.safe_load(out)  # JSON is YAML
    assert message["court"] and message["licence_status_after"] == "annulled"


def test_rules_check_names_the_rule_and_the_field(cli, tmp_path: Path):
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(_broken(lambda r: _rule(r, "red_light").update({"class": 4}))))
    status, _, err = cli("rules", "check", str(path))
    assert status == 2
    assert "rule red_light: field 'class': should be one of 1, 2, 3, got 4" in err
    assert "expected one red_light rule" not in err  # no echo of the same mistake
    status, out, _ = cli("rules", "check", str(bundled_path()))
    assert status == 0 and "valid rule book 2026.1, 8 rules" in out
    status, out, _ = cli("rules", "show")
    assert status == 0 and "court.repeat_period_days" in out
