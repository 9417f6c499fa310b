"""The decision: what loi 52-05 says about one infraction, given the driver's history.

:func:`decide` is pure: facts and history in, :class:`Decision` out, no clock and no I/O.
It follows the law rather than the seed: the *class* and the court cases of Art. 219
(repeat class-1 offence, délit, simultaneous offences of which one cannot be settled)
decide "settle or court"; the *points balance* decides the licence (annulled at 0, Art. 22,
and then the case is referred to court, which is the seed's "too few points" case).

The licence's capital is the one in force at the offence: 20 points while the licence is
probationary (two years from issue, Art. 23), 30 after. A probationer who loses every point
has the licence annulled under Art. 24 (a new exam after 6 months at least, then a one-year
probation with 10 points); one who has lost more than two thirds of the 20 points must
follow a road-safety education session (Art. 26). A driver the law cannot have (more points
than the capital in force, a negative balance, a valid licence at 0 points) is refused with
:class:`InvalidHistory`, as facts that describe no offence are with :class:`InvalidFacts`.

The ledger calls :meth:`Decision.revised` with the history it reads under the driver's
row lock, so that two offences of one driver decided from the same snapshot still end with
the right balance, annulment and repeat status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from casatwin.rules.book import Rule, RuleBook, load_rule_book

__all__ = [
    "Decision",
    "DriverHistory",
    "InvalidFacts",
    "InvalidHistory",
    "OffenceFacts",
    "PastOffence",
    "decide",
    "licence_at",
    "load_rule_book",
    "probation_end_for",
]

DAY_MS = 86_400_000
LICENCE_STATUSES: tuple[str, ...] = ("valid", "suspended", "annulled")

# Why a case goes to court, as codes (for machines) and French (for the operator).
COURT_REASONS_FR = {
    "delit": "l'infraction constitue un délit",
    "repeat": "récidive d'une contravention de {cls} dans les {days} jours",
    "simultaneous": "infractions simultanées dont une n'est pas transigeable ({other})",
    "invalid_licence": "conduite avec un permis {status} ({article})",
    "points_exhausted": "le solde de points atteint 0 : permis annulé ({article})",
}


def _fraction_fr(fraction: tuple[int, int]) -> str:
    names = {(1, 2): "de la moitié", (1, 3): "du tiers", (2, 3): "des deux tiers"}
    return names.get(fraction, f"de {fraction[0]}/{fraction[1]}")


class InvalidFacts(ValueError):
    """Facts that describe no offence the book can decide; ``str()`` names the field."""


class InvalidHistory(InvalidFacts):
    """A driver the law cannot have (e.g. a probationer with more than 20 points); ``str()``
    names the field and the article. A kind of :class:`InvalidFacts`: whoever sets aside
    undecidable facts sets these aside too."""


@dataclass(frozen=True)
class OffenceFacts:
    """What happened, as the detector saw it."""

    type: str  # speeding | red_light | illegal_parking
    event_ts: int  # epoch ms
    measured: float | None = None  # km/h for speeding
    limit: float | None = None  # km/h for speeding
    parking_kind: str | None = None  # dangerous | pedestrian_crossing | other
    simultaneous: tuple[OffenceFacts, ...] = ()  # other offences committed at the same time

    @property
    def over_kmh(self) -> float:
        return float(self.measured or 0) - float(self.limit or 0)

    @classmethod
    def from_infraction(
        cls, infraction: Mapping[str, Any], simultaneous: tuple[OffenceFacts, ...] = ()
    ) -> OffenceFacts:
        """The facts of a ``casatwin.infractions`` message (``parking_kind`` for parking)."""
        return cls(
            type=infraction["type"],
            event_ts=int(infraction["event_ts"]),
            measured=infraction.get("measured"),
            limit=infraction.get("limit"),
            parking_kind=infraction.get("parking_kind"),
            simultaneous=simultaneous,
        )


class PastOffence(NamedTuple):
    event_ts: int
    offence_class: int


@dataclass(frozen=True)
class DriverHistory:
    """What the rules need to know about the driver, as of the offence."""

    cin: str
    points: int  # current balance
    status: str  # valid | suspended | annulled
    probation_end_ms: int  # the licence is probationary while event_ts < this
    offences: tuple[PastOffence, ...] = ()  # earlier recorded offences (repeat rule)

    def with_offence(self, decision: Decision) -> DriverHistory:
        """The history after ``decision`` was applied (for the next offence in a batch)."""
        return DriverHistory(
            cin=self.cin,
            points=self.points if decision.points_after is None else decision.points_after,
            status=decision.licence_status_after or self.status,
            probation_end_ms=self.probation_end_ms,
            offences=(
                *self.offences,
                PastOffence(decision.facts.event_ts, decision.offence_class),
            ),
        )


class Licence(NamedTuple):
    """The licence as of the offence: probationary or not, and the capital in force."""

    on_probation: bool
    capital: int
    article: str  # the article of that capital


def licence_at(history: DriverHistory, event_ts: int, book: RuleBook) -> Licence:
    """The licence in force at ``event_ts``; :class:`InvalidHistory` if the history is one
    the law cannot have. Probation ends at ``probation_end_ms`` (excluded)."""
    points, status = history.points, history.status
    if not isinstance(points, int) or isinstance(points, bool):
        raise InvalidHistory(f"driver: field 'points' should be a whole number, got {points!r}")
    if status not in LICENCE_STATUSES:
        raise InvalidHistory(
            f"driver: field 'status' is {status!r}; expected {', '.join(LICENCE_STATUSES)}"
        )
    if not isinstance(history.probation_end_ms, int) or isinstance(history.probation_end_ms, bool):
        raise InvalidHistory("driver: field 'probation_end_ms' should be a time in epoch ms")
    on_probation = event_ts < history.probation_end_ms
    if on_probation:
        licence = Licence(True, book.probation_capital, book.probation_article)
    else:
        licence = Licence(False, book.capital, book.capital_article)
    if points < 0:
        raise InvalidHistory(f"driver: field 'points' cannot be negative, got {points}")
    if points > licence.capital:
        kind = "a probationary licence" if on_probation else "a licence"
        where = licence.article
        if not on_probation and "points.capital" in book.unverified:
            where += ", a value still unverified"
        raise InvalidHistory(
            f"driver: field 'points' is {points}, but {kind} holds at most {licence.capital}"
            f" points ({where})"
        )
    if points == 0 and status != "annulled":
        raise InvalidHistory(
            f"driver: a licence with 0 points is annulled ({book.annulment_article}); field"
            f" 'status' is {status!r}"
        )
    return licence


def probation_end_for(issued: dt.date, book: RuleBook) -> dt.date:
    """The day a licence issued on ``issued`` stops being probationary (Art. 23: two
    years): the same day of the month, ``probation_years`` later (29 February → 1 March),
    as the registry's generator computes it."""
    first = dt.date(issued.year + book.probation_years, issued.month, 1)
    return first + dt.timedelta(days=issued.day - 1)


@dataclass(frozen=True)
class Decision:
    """The outcome for one infraction; :meth:`to_message` is the contract's ``decision``."""

    rule_id: str
    offence_class: int
    delit: bool
    settlement_offered: bool
    fine_mad: int  # the settlement fine; 0 when the case goes to court
    reduced_24h: int
    reduced_15d: int
    court_range_mad: tuple[int, int]
    points: int  # points the law removes for this offence
    points_removed: int  # removed from the balance (0 for an unknown driver)
    points_before: int | None
    points_after: int | None
    licence_status_after: str | None
    on_probation: bool | None
    capital: int | None  # the licence's capital at the offence (20 on probation, 30 after)
    education_session_required: bool  # a probationer past the session threshold (Art. 26)
    court: bool
    court_reasons: tuple[str, ...]
    court_reason: str  # French, empty when settled
    dispatch_required: bool
    legal_basis: str  # French, for the operator
    rule_book: str  # the book's version
    unverified: tuple[str, ...]  # unverified values this decision relies on
    facts: OffenceFacts = field(repr=False)
    book: RuleBook = field(repr=False, compare=False)

    def revised(self, history: DriverHistory | None) -> Decision:
        """The same facts decided again against ``history`` (the ledger's locked view)."""
        return decide(self.facts, history, self.book)

    def to_message(self) -> dict[str, Any]:
        return {
            "class": self.offence_class,
            "fine_mad": self.fine_mad,
            "reduced_24h": self.reduced_24h,
            "reduced_15d": self.reduced_15d,
            "points": self.points,
            "court": self.court,
            "legal_basis": self.legal_basis,
            "rule": self.rule_id,
            "rule_book": self.rule_book,
            "delit": self.delit,
            "settlement_offered": self.settlement_offered,
            "court_range_mad": list(self.court_range_mad),
            "court_reasons": list(self.court_reasons),
            "court_reason": self.court_reason,
            "points_removed": self.points_removed,
            "points_before": self.points_before,
            "points_after": self.points_after,
            "licence_status_after": self.licence_status_after,
            "on_probation": self.on_probation,
            "capital": self.capital,
            "education_session_required": self.education_session_required,
            "dispatch_required": self.dispatch_required,
            "unverified": list(self.unverified),
        }


def match(facts: OffenceFacts, book: RuleBook) -> Rule:
    """The rule of the book that these facts break; :class:`InvalidFacts` if none."""
    if facts.type == "speeding":
        for name in ("measured", "limit"):
            value = getattr(facts, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InvalidFacts(f"speeding: field {name!r} should be a speed in km/h")
        if facts.limit <= 0:
            raise InvalidFacts(
                f"speeding: field 'limit' should be a positive speed in km/h, got {facts.limit:g}"
            )
        if facts.over_kmh <= 0:
            raise InvalidFacts(
                f"speeding: measured {facts.measured:g} km/h is not above the limit "
                f"{facts.limit:g} km/h"
            )
        candidates = [r for r in book.rules if r.offence == "speeding"]
        found = [r for r in candidates if r.matches_over(facts.over_kmh)]
    elif facts.type == "red_light":
        found = [r for r in book.rules if r.offence == "red_light"]
    elif facts.type == "illegal_parking":
        found = [
            r
            for r in book.rules
            if r.offence == "illegal_parking" and r.parking_kind == facts.parking_kind
        ]
        if not found:
            raise InvalidFacts(
                f"illegal_parking: field 'parking_kind' is {facts.parking_kind!r}; expected "
                "dangerous, pedestrian_crossing or other"
            )
    else:
        raise InvalidFacts(
            f"field 'type' is {facts.type!r}; expected speeding, red_light or illegal_parking"
        )
    return found[0]  # the book guarantees exactly one (coverage check)


def decide(facts: OffenceFacts, history: DriverHistory | None, book: RuleBook) -> Decision:
    """Decide one infraction. ``history`` is ``None`` for a vehicle with no known driver."""
    rule = match(facts, book)
    licence = None if history is None else licence_at(history, facts.event_ts, book)
    fine = book.classes[rule.offence_class]
    unverified = [f"{rule.id}.{name}" for name in rule.unverified]
    reasons: list[str] = []
    details: dict[str, str] = {}

    if rule.delit:
        reasons.append("delit")
    if history is not None and rule.offence_class == book.repeat_class:
        window_start = facts.event_ts - book.repeat_period_days * DAY_MS
        earlier = [
            o
            for o in history.offences
            if o.offence_class == book.repeat_class and window_start <= o.event_ts < facts.event_ts
        ]
        if earlier:
            reasons.append("repeat")
            details["repeat"] = COURT_REASONS_FR["repeat"].format(
                cls=_class_fr(book.repeat_class), days=book.repeat_period_days
            )
            unverified.append("court.repeat_period_days")
    others = [match(other, book) for other in facts.simultaneous]
    blocking = [r for r in others if r.delit]
    if blocking:
        reasons.append("simultaneous")
        details["simultaneous"] = COURT_REASONS_FR["simultaneous"].format(other=blocking[0].label)
    if history is not None and history.status != "valid":
        reasons.append("invalid_licence")
        details["invalid_licence"] = COURT_REASONS_FR["invalid_licence"].format(
            status="suspendu" if history.status == "suspended" else "annulé",
            article=book.invalid_licence_article,
        )
        unverified += [
            f"court.invalid_licence.{k}"
            for k in ("article", "court_range_mad")
            if f"court.invalid_licence.{k}" in book.unverified
        ]

    points_before = points_after = status_after = on_probation = capital = None
    removed = 0
    session = False
    if history is not None and licence is not None:
        on_probation, capital = licence.on_probation, licence.capital
        if not on_probation and "points.capital" in book.unverified:
            unverified.append("points.capital")
        points_before = history.points
        removed = min(rule.points, history.points)
        points_after = history.points - removed
        status_after = history.status
        if points_after == 0 and status_after != "annulled":
            status_after = "annulled"
            if points_before > 0 and book.refer_when_points_exhausted:
                reasons.append("points_exhausted")
                details["points_exhausted"] = COURT_REASONS_FR["points_exhausted"].format(
                    article=_annulment_article(on_probation, book)
                )
        if on_probation and status_after != "annulled":
            num, den = book.session_lost_fraction
            before, after = capital - points_before, capital - points_after
            session = after * den > num * capital >= before * den
            if session and "points.probation_session.article" in book.unverified:
                unverified.append("points.probation_session.article")

    court = bool(reasons)
    annulled_now = status_after == "annulled" and (history is None or history.status != "annulled")
    dispatch = (
        rule.dispatch
        or (court and book.dispatch_when_court)
        or (annulled_now and book.dispatch_when_licence_annulled)
    )
    court_reason = "; ".join(details.get(r, COURT_REASONS_FR[r]) for r in reasons)
    decision = Decision(
        rule_id=rule.id,
        offence_class=rule.offence_class,
        delit=rule.delit,
        settlement_offered=not court,
        fine_mad=0 if court else fine.fine_mad,
        reduced_24h=0 if court else fine.reduced_24h,
        reduced_15d=0 if court else fine.reduced_15d,
        court_range_mad=rule.court_range_mad or fine.court_range_mad,
        points=rule.points,
        points_removed=removed,
        points_before=points_before,
        points_after=points_after,
        licence_status_after=status_after,
        on_probation=on_probation,
        capital=capital,
        education_session_required=session,
        court=court,
        court_reasons=tuple(reasons),
        court_reason=court_reason[:1].upper() + court_reason[1:] if court_reason else "",
        dispatch_required=dispatch,
        legal_basis="",
        rule_book=book.version,
        unverified=tuple(dict.fromkeys(unverified)),
        facts=facts,
        book=book,
    )
    return replace(decision, legal_basis=legal_basis(decision, rule, history, book))


def legal_basis(d: Decision, rule: Rule, history: DriverHistory | None, book: RuleBook) -> str:
    """The decision in French, as the operator reads it."""
    fine = book.classes[rule.offence_class]
    facts = d.facts
    what = rule.label
    if facts.type == "speeding":
        what += (
            f" : {facts.over_kmh:.0f} km/h de trop ({facts.measured:.0f} km/h mesurés, "
            f"{facts.limit:.0f} km/h autorisés)"
        )
    nature = "délit" if rule.delit else f"contravention de {_class_fr(rule.offence_class)}"
    parts = [f"{what} — {nature} ({rule.article})."]
    if d.settlement_offered:
        parts.append(
            f"Amende transactionnelle et forfaitaire de {_mad(fine.fine_mad)}, réduite à "
            f"{_mad(fine.reduced_24h)} si elle est payée sous 24 heures et à "
            f"{_mad(fine.reduced_15d)} sous 15 jours ({fine.article} ; constatation "
            f"automatisée, {book.automated_detection_article})."
        )
    else:
        low, high = d.court_range_mad
        parts.append(
            f"Pas de transaction : renvoi au tribunal ({book.court_article}) — "
            f"{d.court_reason[:1].lower()}{d.court_reason[1:]}. Amende encourue : "
            f"{_amount(low)} à {_mad(high)}."
        )
        if "invalid_licence" in d.court_reasons:
            low, high = book.invalid_licence_range_mad
            parts.append(
                f"Conduite sans permis valide : {_amount(low)} à {_mad(high)} "
                f"({book.invalid_licence_article})."
            )
    if history is None:
        if d.points:
            parts.append(
                f"Conducteur non identifié : aucun point ne peut être retiré ; les {d.points} "
                "points seront retirés au titulaire du permis une fois identifié."
            )
        else:
            parts.append("Conducteur non identifié.")
    else:
        licence = "permis probatoire" if d.on_probation else "permis"
        article = book.probation_article if d.on_probation else book.capital_article
        if d.points:
            parts.append(
                f"Retrait de {d.points} points : solde {d.points_before} → {d.points_after} "
                f"({licence}, capital de {d.capital} points, {article})."
            )
        else:
            parts.append(
                f"Aucun retrait de points : solde {d.points_before} ({licence}, capital de "
                f"{d.capital} points, {article})."
            )
        if "points_exhausted" in d.court_reasons and d.on_probation:
            parts.append(
                "Le solde atteint 0 pendant la période probatoire : permis annulé de plein "
                f"droit ({book.probation_annulment_article}) ; nouvel examen après "
                f"{book.retest_after_months} mois au moins, puis permis probatoire "
                f"{_years_fr(book.new_probation_years)} à {book.new_probation_capital} points ;"
                " dossier transmis au tribunal."
            )
        elif "points_exhausted" in d.court_reasons:
            parts.append(
                f"Le solde atteint 0 : permis annulé ({book.annulment_article}), dossier "
                "transmis au tribunal."
            )
        if d.education_session_required:
            parts.append(
                f"Plus {_fraction_fr(book.session_lost_fraction)} des {d.capital} points du "
                "permis probatoire sont perdus : session d'éducation à la sécurité routière "
                f"obligatoire ({book.session_article})."
            )
    if d.dispatch_required:
        parts.append("Intervention d'une unité de police demandée.")
    if d.unverified:
        parts.append(f"Valeurs à vérifier : {', '.join(d.unverified)}.")
    return " ".join(parts)


def _annulment_article(on_probation: bool, book: RuleBook) -> str:
    return book.probation_annulment_article if on_probation else book.annulment_article


def _years_fr(years: int) -> str:
    return "d'un an" if years == 1 else f"de {years} ans"


def _class_fr(number: int) -> str:
    return "1re classe" if number == 1 else f"{number}e classe"


def _amount(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _mad(value: int) -> str:
    return f"{_amount(value)} MAD"
