"""The rule book: the loi 52-05 table as data, read from a versioned YAML file.

:func:`load_rule_book` reads the bundled book (``loi_52_05.yaml``) or a file, checks it
completely and refuses it with every problem listed, each naming the rule and the field
(``rule speeding.20_to_30: field 'class': ...``). A value may be written
``{value: X, unverified: "why"}``: the book remembers which values are unverified so that
decisions relying on them say so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from casatwin.city.model import PARKING_KINDS
from casatwin.errors import UserError

FORMAT = "casatwin.rules/1"
BUNDLED = "loi_52_05.yaml"
OFFENCES: tuple[str, ...] = ("speeding", "red_light", "illegal_parking")
CLASSES: tuple[int, ...] = (1, 2, 3)


class RuleBookError(UserError):
    """A rule book that cannot be used; the message lists each problem with its place."""


@dataclass(frozen=True)
class FineClass:
    """The amounts of one contravention class (Art. 219)."""

    number: int
    fine_mad: int
    reduced_24h: int
    reduced_15d: int
    court_range_mad: tuple[int, int]
    article: str


@dataclass(frozen=True)
class Rule:
    """One offence: which facts it matches and what it costs."""

    id: str
    offence: str
    label: str
    offence_class: int
    points: int
    article: str
    delit: bool = False
    dispatch: bool = False
    over_kmh: tuple[float, float | None] | None = None  # speeding band [low, high)
    parking_kind: str | None = None
    court_range_mad: tuple[int, int] | None = None  # its own court range (délits), else the class's
    unverified: dict[str, str] = field(default_factory=dict)  # field → why

    def matches_over(self, over_kmh: float) -> bool:
        assert self.over_kmh is not None
        low, high = self.over_kmh
        return over_kmh >= low and (high is None or over_kmh < high)


@dataclass(frozen=True)
class RuleBook:
    version: str
    title: str
    source: str
    capital: int
    probation_capital: int
    capital_article: str
    annulment_article: str
    probation_article: str  # the probationary licence: its capital and length (Art. 23)
    probation_years: int
    probation_annulment_article: str  # a probationer who loses every point (Art. 24)
    retest_after_months: int
    new_probation_years: int
    new_probation_capital: int
    session_article: str  # a probationer who lost more than a fraction of the capital
    session_lost_fraction: tuple[int, int]  # (2, 3): more than two thirds
    classes: dict[int, FineClass]
    court_article: str
    repeat_class: int
    repeat_period_days: int
    refer_when_points_exhausted: bool
    invalid_licence_article: str
    invalid_licence_range_mad: tuple[int, int]
    automated_detection_article: str
    dispatch_when_court: bool
    dispatch_when_licence_annulled: bool
    rules: tuple[Rule, ...]
    unverified: dict[str, str]  # "court.repeat_period_days" / "rules.<id>.points" → why

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def bundled_path() -> Path:
    return Path(str(resources.files("casatwin.rules") / BUNDLED))


def load_rule_book(path: str | Path | None = None) -> RuleBook:
    """The bundled loi 52-05 book (``None`` or empty) or the book in ``path``; validated."""
    return _load(str(path) if path else str(bundled_path()))


@lru_cache(maxsize=8)
def _load(path: str) -> RuleBook:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleBookError(
            f"cannot read the rule book {path}: {exc.strerror}",
            hint="set CASATWIN_RULES_BOOK to a rule book file, or leave it empty for loi 52-05",
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleBookError(f"rule book {path} is not valid YAML: {exc}") from None
    return parse(raw, source=path)


def parse(raw: Any, source: str = "rule book") -> RuleBook:
    """A checked :class:`RuleBook`, or :class:`RuleBookError` listing every problem."""
    reader = _Reader()
    book = reader.book(raw, source)
    if reader.problems:
        shown = "\n  ".join(reader.problems)
        raise RuleBookError(
            f"{source} is not a valid rule book:\n  {shown}",
            hint="fix the fields named above; `casatwin rules check FILE` re-checks it",
        )
    assert book is not None
    return book


class _Reader:
    """Reads the raw YAML, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.unverified: dict[str, str] = {}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def value(self, raw: dict[str, Any], name: str, where: str, path: str, kind: Any) -> Any:
        """Field ``name`` of ``raw`` (a plain value or ``{value, unverified, article}``)."""
        if not isinstance(raw, dict) or name not in raw:
            self.problem(where, f"field {name!r} is missing")
            return None
        item = raw[name]
        if isinstance(item, dict):
            if "value" not in item:
                self.problem(where, f"field {name!r}: a mapping needs a 'value' key")
                return None
            note = item.get("unverified")
            if note is not None:
                if not isinstance(note, str) or not note.strip():
                    self.problem(where, f"field {name!r}: 'unverified' should say why, as text")
                else:
                    self.unverified[f"{path}.{name}"] = note
            item = item["value"]
        checked, message = kind(item)
        if message:
            self.problem(where, f"field {name!r}: {message}, got {item!r}")
            return None
        return checked

    def book(self, raw: Any, source: str) -> RuleBook | None:
        if not isinstance(raw, dict):
            self.problem(source, "the file should hold a mapping (format, version, rules, ...)")
            return None
        if raw.get("format") != FORMAT:
            self.problem(
                "top level", f"field 'format' should be {FORMAT!r}, got {raw.get('format')!r}"
            )
            return None
        version = self.value(raw, "version", "top level", "", _text)
        title = raw.get("title", "")
        points = raw.get("points") or {}
        capital = self.value(points, "capital", "points", "points", _int_range(1, 100))
        probation = self.value(points, "probation_capital", "points", "points", _int_range(1, 100))
        capital_article = _article_of(points.get("capital"))
        annulment_article = str(points.get("annulment_article", ""))
        if isinstance(capital, int) and isinstance(probation, int) and probation > capital:
            self.problem("points", "field 'probation_capital' should not exceed 'capital'")
        years = self.value(points, "probation_years", "points", "points", _int_range(1, 10))
        where = "points.probation_annulment"
        annul = points.get("probation_annulment") or {}
        annul_article = self.value(annul, "article", where, where, _text)
        retest = self.value(annul, "retest_after_months", where, where, _int_range(0, 120))
        new_years = self.value(annul, "new_probation_years", where, where, _int_range(1, 10))
        new_capital = self.value(annul, "new_probation_capital", where, where, _int_range(1, 100))
        if isinstance(new_capital, int) and isinstance(probation, int) and new_capital > probation:
            self.problem(
                where, "field 'new_probation_capital' should not exceed 'probation_capital'"
            )
        where = "points.probation_session"
        session = points.get("probation_session") or {}
        session_article = self.value(session, "article", where, where, _text)
        fraction = self.value(session, "lost_more_than", where, where, _fraction)
        classes = self.classes(raw.get("classes"))
        court = raw.get("court") or {}
        repeat_class = self.value(court, "repeat_class", "court", "court", _one_of(CLASSES))
        repeat_days = self.value(court, "repeat_period_days", "court", "court", _int_range(1, 3650))
        refer = self.value(court, "refer_when_points_exhausted", "court", "court", _bool)
        invalid = court.get("invalid_licence") or {}
        invalid_article = self.value(
            invalid, "article", "court.invalid_licence", "court.invalid_licence", _text
        )
        invalid_range = self.value(
            invalid, "court_range_mad", "court.invalid_licence", "court.invalid_licence", _range
        )
        dispatch = raw.get("dispatch") or {}
        when_court = self.value(dispatch, "when_court", "dispatch", "dispatch", _bool)
        when_annulled = self.value(dispatch, "when_licence_annulled", "dispatch", "dispatch", _bool)
        automated = str(raw.get("automated_detection_article", ""))
        rules = self.rules(raw.get("rules"), classes, capital)
        if self.problems:
            return None
        return RuleBook(
            version=version,
            title=str(title),
            source=source,
            capital=capital,
            probation_capital=probation,
            capital_article=capital_article,
            annulment_article=annulment_article,
            probation_article=_article_of(points.get("probation_capital")),
            probation_years=years,
            probation_annulment_article=annul_article,
            retest_after_months=retest,
            new_probation_years=new_years,
            new_probation_capital=new_capital,
            session_article=session_article,
            session_lost_fraction=fraction,
            classes=classes,
            court_article=str(court.get("article", "")),
            repeat_class=repeat_class,
            repeat_period_days=repeat_days,
            refer_when_points_exhausted=refer,
            invalid_licence_article=invalid_article,
            invalid_licence_range_mad=invalid_range,
            automated_detection_article=automated,
            dispatch_when_court=when_court,
            dispatch_when_licence_annulled=when_annulled,
            rules=tuple(rules),
            unverified=dict(self.unverified),
        )

    def classes(self, raw: Any) -> dict[int, FineClass]:
        if not isinstance(raw, dict):
            self.problem("classes", "should map each class (1, 2, 3) to its amounts")
            return {}
        out = {}
        for number in CLASSES:
            where = f"class {number}"
            row = raw.get(number)
            if not isinstance(row, dict):
                self.problem(where, "is missing (classes 1, 2 and 3 are all needed)")
                continue
            path = f"classes.{number}"
            amounts = [
                self.value(row, name, where, path, _int_range(0, 100_000))
                for name in ("fine_mad", "reduced_24h", "reduced_15d")
            ]
            court_range = self.value(row, "court_range_mad", where, path, _range)
            article = self.value(row, "article", where, path, _text)
            if None in amounts or court_range is None or article is None:
                continue
            fine, r24, r15 = amounts
            if not r24 <= r15 <= fine:
                self.problem(
                    where, "reduced amounts should be reduced_24h <= reduced_15d <= fine_mad"
                )
            out[number] = FineClass(number, fine, r24, r15, court_range, article)
        for extra in set(raw) - set(CLASSES):
            self.problem(f"class {extra}", "unknown class (only 1, 2 and 3 exist)")
        return out

    def rules(self, raw: Any, classes: dict[int, FineClass], capital: Any) -> list[Rule]:
        if not isinstance(raw, list) or not raw:
            self.problem("rules", "should be a non-empty list of rules")
            return []
        out: list[Rule] = []
        seen: set[str] = set()
        problems_before = len(self.problems)
        max_points = capital if isinstance(capital, int) else 100
        for position, item in enumerate(raw, start=1):
            rule_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(rule_id, str) or not rule_id:
                self.problem(f"rule #{position}", "field 'id' is missing")
                continue
            where = f"rule {rule_id}"
            if rule_id in seen:
                self.problem(where, "the id is used twice")
            seen.add(rule_id)
            rule = self.rule(item, rule_id, where, classes, max_points)
            if rule is not None:
                out.append(rule)
        if len(self.problems) == problems_before:  # a broken rule would show as a gap too
            self.coverage(out)
        return out

    def rule(
        self, raw: dict[str, Any], rule_id: str, where: str, classes: Any, max_points: int
    ) -> Rule | None:
        before = dict(self.unverified)
        path = f"rules.{rule_id}"
        offence = self.value(raw, "offence", where, path, _one_of(OFFENCES))
        label = self.value(raw, "label", where, path, _text)
        number = self.value(raw, "class", where, path, _one_of(CLASSES))
        points = self.value(raw, "points", where, path, _int_range(0, max_points))
        article = self.value(raw, "article", where, path, _text)
        delit = self.value(raw, "delit", where, path, _bool) if "delit" in raw else False
        dispatch = self.value(raw, "dispatch", where, path, _bool) if "dispatch" in raw else False
        over = parking = None
        court_range = None
        if "court_range_mad" in raw:
            court_range = self.value(raw, "court_range_mad", where, path, _range)
        if offence == "speeding":
            over = self.value(raw, "over_kmh", where, path, _band)
        elif "over_kmh" in raw:
            self.problem(where, "field 'over_kmh' only applies to speeding")
        if offence == "illegal_parking":
            parking = self.value(raw, "parking_kind", where, path, _one_of(PARKING_KINDS))
        elif "parking_kind" in raw:
            self.problem(where, "field 'parking_kind' only applies to illegal_parking")
        known = {"id", "offence", "label", "class", "points", "article", "delit", "dispatch"}
        for extra in sorted(set(raw) - known - {"over_kmh", "parking_kind", "court_range_mad"}):
            self.problem(where, f"unknown field {extra!r}")
        if None in (offence, label, number, points, article, delit, dispatch):
            return None
        if (offence == "speeding" and over is None) or (
            offence == "illegal_parking" and parking is None
        ):
            return None
        unverified = {
            k.removeprefix(f"{path}."): v for k, v in self.unverified.items() if k not in before
        }
        return Rule(
            id=rule_id,
            offence=offence,
            label=label,
            offence_class=number,
            points=points,
            article=article,
            delit=delit,
            dispatch=dispatch,
            over_kmh=over,
            parking_kind=parking,
            court_range_mad=court_range,
            unverified=unverified,
        )

    def coverage(self, rules: list[Rule]) -> None:
        """Every fact must match exactly one rule: bands contiguous, each kind once."""
        bands = sorted((r for r in rules if r.offence == "speeding"), key=lambda r: r.over_kmh[0])
        if not bands:
            self.problem("rules", "no speeding rule")
        else:
            if bands[0].over_kmh[0] != 0:
                self.problem(
                    f"rule {bands[0].id}", "field 'over_kmh': the first band should start at 0"
                )
            for prev, nxt in itertools.pairwise(bands):
                if prev.over_kmh[1] != nxt.over_kmh[0]:
                    self.problem(
                        f"rule {nxt.id}",
                        f"field 'over_kmh': starts at {nxt.over_kmh[0]:g} but rule {prev.id} "
                        f"ends at {prev.over_kmh[1]} (bands must follow each other without gap "
                        "or overlap)",
                    )
            if bands[-1].over_kmh[1] is not None:
                self.problem(
                    f"rule {bands[-1].id}", "field 'over_kmh': the last band should end at null"
                )
        red = [r for r in rules if r.offence == "red_light"]
        if len(red) != 1:
            self.problem("rules", f"expected one red_light rule, found {len(red)}")
        for kind in PARKING_KINDS:
            found = [r for r in rules if r.parking_kind == kind]
            if len(found) != 1:
                self.problem(
                    "rules", f"expected one illegal_parking rule for {kind!r}, found {len(found)}"
                )


def _article_of(item: Any) -> str:
    return str(item.get("article", "")) if isinstance(item, dict) else ""


# Field checkers: value → (converted value, problem or "").


def _text(v: Any) -> tuple[Any, str]:
    return (v, "") if isinstance(v, str) and v.strip() else (None, "should be non-empty text")


def _bool(v: Any) -> tuple[Any, str]:
    return (v, "") if isinstance(v, bool) else (None, "should be true or false")


def _int_range(low: int, high: int) -> Any:
    def check(v: Any) -> tuple[Any, str]:
        if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high:
            return v, ""
        return None, f"should be an integer from {low} to {high}"

    return check


def _one_of(choices: tuple[Any, ...]) -> Any:
    def check(v: Any) -> tuple[Any, str]:
        if v in choices and not isinstance(v, bool):
            return v, ""
        return None, f"should be one of {', '.join(map(str, choices))}"

    return check


def _range(v: Any) -> tuple[Any, str]:
    if (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        and 0 <= v[0] <= v[1]
    ):
        return (v[0], v[1]), ""
    return None, "should be [low, high] amounts with low <= high"


def _fraction(v: Any) -> tuple[Any, str]:
    if (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        and 0 < v[0] < v[1]
    ):
        return (v[0], v[1]), ""
    return None, "should be [numerator, denominator] with 0 < numerator < denominator"


def _band(v: Any) -> tuple[Any, str]:
    if isinstance(v, list) and len(v) == 2:
        low, high = v
        number = (int, float)
        if (
            isinstance(low, number)
            and not isinstance(low, bool)
            and low >= 0
            and (high is None or (isinstance(high, number) and high > low))
        ):
            return (float(low), None if high is None else float(high)), ""
    return None, "should be [low, high] km/h over the limit, high > low or null"
