"""The synthetic registry: formats, determinism, uniqueness and a sane distribution."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from functools import cache

import numpy as np
import pytest

from casatwin import fleet
from casatwin.registry import identities as ids

SPEC = ids.Spec(52, dt.date(2025, 6, 1))
N = 140_000  # crosses two generator chunks and includes the whole fleet

CIN = re.compile(r"^(B|B[A-Z])\d{6}$")
LICENCE = re.compile(r"^\d{2}/\d{8}$")
PLATE = re.compile(r"^[1-9]\d{0,4}-[أبدهوط]-(6|7|8|9|1[0-6])$")


@cache
def drivers() -> list[list[str]]:
    return [line.split("\t") for line in ids.drivers_tsv(SPEC, 0, N).decode().splitlines()]


def test_every_row_has_every_column_in_a_valid_format():
    rows = drivers()
    assert len(rows) == N
    for row in rows[:: N // 5000]:
        cin, first, last, birth, licence, category, issue, probation_end, points, status = row
        assert CIN.match(cin) and LICENCE.match(licence), row
        assert first and last and category in ids.LICENCE_CATEGORIES
        born, issued, ends = (dt.date.fromisoformat(x) for x in (birth, issue, probation_end))
        assert (issued - born).days >= 18 * 365, row
        assert issued <= SPEC.as_of
        # The probation lasts two calendar years.
        assert (ends.year - issued.year, ends.month) in ((2, issued.month), (2, 3)), row
        capital = 20 if ends > SPEC.as_of else 30
        assert 0 <= int(points) <= capital
        assert status in ids.STATUSES and ((status == "annulled") == (points == "0")), row


def test_cins_and_licences_are_unique_and_sorted():
    rows = drivers()
    cins = [r[0] for r in rows]
    assert len(set(cins)) == N and len({r[4] for r in rows}) == N
    assert cins == sorted(cins)  # the file arrives in primary-key order
    assert cins[:3] == ["B000001", "B000002", "B000003"] and cins[12345] == ids.cin(12345)


def test_generation_is_deterministic_and_windows_join_up():
    whole = ids.drivers_tsv(SPEC, 60_000, 70_000)  # crosses the chunk boundary at 65,536
    assert whole == ids.drivers_tsv(SPEC, 60_000, 65_000) + ids.drivers_tsv(SPEC, 65_000, 70_000)
    assert whole == b"".join(
        line + b"\n" for line in ids.drivers_tsv(SPEC, 0, N).splitlines()[60_000:70_000]
    )
    other = ids.drivers_tsv(ids.Spec(53, SPEC.as_of), 60_000, 70_000)
    assert other != whole
    vehicles = ids.private_vehicles_tsv(SPEC, 1000, 70_000)
    assert vehicles == ids.private_vehicles_tsv(SPEC, 1000, 70_000)


def test_points_distribution_is_realistic():
    rows = drivers()[fleet.FLEET_SIZE :]
    points = np.array([int(r[8]) for r in rows])
    on_probation = np.array([dt.date.fromisoformat(r[7]) > SPEC.as_of for r in rows])
    capital = np.where(on_probation, 20, 30)
    status = Counter(r[9] for r in rows)
    assert 0.70 < np.mean(points == capital) < 0.80  # most drivers at their full capital
    assert 0.06 < on_probation.mean() < 0.12
    assert 0.0005 < np.mean(points <= 4) < 0.02  # a tail near 0
    assert 0 < status["annulled"] / len(rows) < 0.01
    assert 0.002 < status["suspended"] / len(rows) < 0.007
    assert points[on_probation].max() <= 20


def test_taxi_drivers_are_seasoned_and_valid_and_some_have_few_points():
    rows = drivers()[: fleet.FLEET_SIZE]
    assert all(r[9] == "valid" and r[5] == "B" for r in rows)
    assert all(dt.date.fromisoformat(r[7]) <= SPEC.as_of for r in rows)  # no probation
    points = np.array([int(r[8]) for r in rows])
    assert points.min() >= 1
    assert np.mean(points <= 4) > 0.01  # the seed's "too few points" case shows up


def test_taxis_have_their_driver_and_valid_plates():
    taxis = ids.taxis(SPEC)
    assert len(taxis) == fleet.FLEET_SIZE
    assert taxis[41].vehicle_id == "TX-00042" and taxis[41].driver_cin == ids.cin(41)
    assert taxis[0].kind == fleet.taxi_kind(0)
    assert all(PLATE.match(t.plate) for t in taxis)
    assert len({t.driver_cin for t in taxis}) == fleet.FLEET_SIZE


def test_private_vehicles_rows():
    lines = ids.private_vehicles_tsv(SPEC, 0, 20_000).decode().splitlines()
    rows = [line.split("\t") for line in lines]
    assert rows[0][0] == "PV-0000001" and rows[-1][0] == ids.private_vehicle_id(19_999)
    assert all(PLATE.match(r[1]) and r[2] == "private" and r[4] == "\\N" for r in rows)
    owners = [r[3] for r in rows]
    for k in (0, 777, 19_999):  # vehicle k belongs to one of drivers 4k .. 4k+3
        assert owners[k] in {ids.cin(4 * k + j) for j in range(4)}


def test_plates_are_unique_over_the_whole_space_in_use():
    n = 1_500_000  # taxis and the private vehicles of 6M drivers
    number, letter, code = ids.plate_parts(np.arange(n))
    keys = (number * 10 + letter) * 100 + code
    assert len(np.unique(keys)) == n
    assert math.gcd(ids._PLATE_STEP, ids.PLATE_CAPACITY) == 1  # a bijection for any count
    assert (
        ids.plate(5)
        == f"{number[5]}-{ids.PLATE_LETTERS[letter[5]]}-{ids.PREFECTURE_CODES[code[5]]}"
    )


@pytest.mark.parametrize(
    "typed,stored",
    [
        ("12345 b 6", "12345-ب-6"),
        ("12345-B-6", "12345-ب-6"),
        ("7|ط|13", "7-ط-13"),
        ("12-ب-6", "12-ب-6"),
    ],
)
def test_plates_as_people_type_them(typed, stored):
    assert ids.normalise_plate(typed) == stored


def test_cin_bounds():
    assert ids.cin(0) == "B000001" and ids.cin(ids.CIN_NUMBERS) == "BA000001"
    with pytest.raises(ValueError):
        ids.cin(ids.MAX_DRIVERS)
