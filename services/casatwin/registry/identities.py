"""Synthetic Moroccan drivers and vehicles, generated with NumPy and written as TSV.

Pure and deterministic: row ``i``'s values depend only on the seed, the ``as_of`` day and
``i`` (rows are generated in chunks of :data:`CHUNK_ROWS`, each from its own random
stream), so a registry can be extended from 100,000 to 10,000,000 drivers and still hold
the same first 100,000, and two machines generate byte-identical files.

* CIN: a Casablanca-area letter prefix and six digits (``BE123456``), issued in order, so
  the file is sorted by the primary key and InnoDB appends instead of splitting pages;
* licence numbers ``NN/NNNNNNNN`` (issuing prefecture code / serial), unique and ascending;
* probation: licences under two years old hold 20 points instead of 30 (Art. 23);
* points: most drivers at their full capital, a tail down to 0 (annulled); a few suspended;
* taxis: taxi ``t`` of :mod:`casatwin.fleet` is driven by driver ``t`` (a seasoned, valid
  licence; taxi drivers lose points more often, so the seed's "too few points" case shows
  up in any simulated fleet); one private vehicle per :data:`DRIVERS_PER_PRIVATE_VEHICLE`
  drivers, owned by one of them;
* plates: ``number-letter-code`` (``12345-ب-6``), Arabic series letter, Casablanca-area
  prefecture codes; police vehicles use the letter ش.

Text columns are built as fixed-width byte slots in a 2-D array with 0 as padding, and the
padding is dropped in one pass: formatting 1M rows costs about a second, not a minute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from casatwin import fleet

GENERATOR_VERSION = 1
CHUNK_ROWS = 1 << 16  # rows per random stream: small loads generate little they do not need

CIN_PREFIXES = ("B", "BA", "BB", "BE", "BF", "BG", "BH", "BJ", "BK", "BL", "BM", "BN", "BR", "BW")
CIN_NUMBERS = 999_999  # 000001 .. 999999 under each prefix
MAX_DRIVERS = len(CIN_PREFIXES) * CIN_NUMBERS
DRIVERS_PER_PRIVATE_VEHICLE = 4

# Casablanca-area prefecture codes as they appear on plates and licences.
PREFECTURE_CODES = (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
PLATE_LETTERS = ("أ", "ب", "د", "ه", "و", "ط")
PLATE_LETTERS_LATIN = ("A", "B", "D", "H", "W", "T")  # what people type for them
POLICE_PLATE_LETTER = "ش"
PLATE_NUMBERS = 99_999
PLATE_CAPACITY = PLATE_NUMBERS * len(PLATE_LETTERS) * len(PREFECTURE_CODES)
_PLATE_STEP = 1_000_003  # prime, coprime with PLATE_CAPACITY: a bijection over plate space
_LICENCE_STRIDE = 5  # serials leave gaps, as cancelled numbers do
_LICENCE_BLOCK = 1_300_000  # drivers per issuing-office code (all codes cover MAX_DRIVERS)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.replace("\n", "").split("|"))


LICENCE_CATEGORIES = ("B", "A", "A1", "C", "D", "EB", "EC")
LICENCE_CATEGORY_SHARES = (0.86, 0.03, 0.02, 0.04, 0.02, 0.01, 0.02)

MALE_NAMES = _names("""
Mohamed|Ahmed|Youssef|Omar|Hamza|Mehdi|Karim|Rachid|Abdelaziz|Abdellah|Said|Mustapha|
Khalid|Hicham|Nabil|Driss|Hassan|Ayoub|Amine|Anas|Ismail|Othmane|Reda|Soufiane|Tarik|
Yassine|Zakaria|Adil|Aziz|Brahim|Jamal|Lahcen|Mourad|Noureddine|Redouane|Samir|Younes|
Abderrahim|Abdelkader|Mohammed|Bilal|Ilyas|Marouane|Taha|Walid|Yahya|Jalal|Fouad|
Mounir|Abdelhak|Badr|Chakib|Hamid|Idriss|Kamal|Larbi|Mostafa|Nordine|Saad|
Slimane|Yassir
""")
FEMALE_NAMES = _names("""
Fatima|Khadija|Aicha|Meryem|Salma|Zineb|Hajar|Imane|Nadia|Samira|Latifa|Naima|Hanane|
Sanae|Asmae|Houda|Ghizlane|Btissam|Laila|Loubna|Malika|Nawal|Rachida|Siham|Wafae|
Yasmine|Kawtar|Oumaima|Chaimae|Sara|Hind|Amina|Hayat|Souad|Karima|Nezha|Ikram|Majda|
Mouna|Rajae
""")
LAST_NAMES = _names("""
Alaoui|Benali|Bennani|Berrada|Chraibi|El Amrani|El Fassi|El Idrissi|Tazi|Lahlou|
Bennis|Benjelloun|Sqalli|Kettani|Cherkaoui|Ouazzani|El Ouafi|Hajji|Amrani|Bouzid|
Ziani|Naciri|Filali|Skalli|Lamrani|Mansouri|Rami|Jabri|Kabbaj|Sebti|Tahiri|Zniber|
Guessous|Benkirane|El Khatib|Belkadi|Bakkali|Bouazza|Daoudi|Essaidi|Fikri|Haddad|
Iraqi|Jamai|Kadiri|Lazrak|Mernissi|Naji|Ouali|Rahmouni|Saadi|Talbi|Ouahbi|Zouaoui|
El Mansouri|El Hachimi|Bouchta|Aït Taleb|Aït Ali|Amzil|Boukhari|Chafik|Doukkali|
El Bouhali|Fassi Fihri|Ghali|Hilali|Kasmi|Mekouar|Moussaoui|Nejjar|Slaoui|Tounsi|
Yacoubi|Zerhouni|Benslimane|Benchekroun|Alami|Bouhaddou|El Alami|Hamdaoui|Zeroual|
Khattabi|Belhaj|Ennaji|Sabri|Elkouri|Benmoussa
""")

_DATE_ORIGIN = np.datetime64("1920-01-01", "D")
_DATE_END = np.datetime64("2080-01-01", "D")

TAB, NEWLINE = 9, 10


@dataclass(frozen=True)
class Spec:
    """What a registry is generated from."""

    seed: int
    as_of: dt.date  # the day licences, probation and points are as of

    @property
    def as_of_day(self) -> int:
        return int((np.datetime64(self.as_of, "D") - _DATE_ORIGIN).astype(np.int64))


# ---------------------------------------------------------------------------------------
# Fixed-width byte slots → TSV


def _table(texts: list[str] | tuple[str, ...]) -> NDArray[np.uint8]:
    """Texts as a zero-padded (len, width) byte table for vectorised lookups."""
    encoded = [t.encode() for t in texts]
    out = np.zeros((len(encoded), max(len(e) for e in encoded)), np.uint8)
    for i, e in enumerate(encoded):
        out[i, : len(e)] = np.frombuffer(e, np.uint8)
    return out


@cache
def _dates() -> NDArray[np.uint8]:
    days = np.arange(_DATE_ORIGIN, _DATE_END)
    return np.frombuffer(days.astype("S10").tobytes(), np.uint8).reshape(-1, 10)


class _Rows:
    """Rows being assembled field by field into fixed-width slots; 0 bytes are padding."""

    def __init__(self, n: int, width: int) -> None:
        self.buf = np.zeros((n, width), np.uint8)
        self.at = 0

    def put(self, block: NDArray[np.uint8], end: int = TAB) -> None:
        width = block.shape[-1]
        self.buf[:, self.at : self.at + width] = block
        self.buf[:, self.at + width] = end
        self.at += width + 1

    def text(self, table: NDArray[np.uint8], index: NDArray[np.int64], end: int = TAB) -> None:
        self.put(table[index], end)

    def digits(
        self, values: NDArray[np.int64], width: int, *, strip: bool = False, end: int = TAB
    ) -> None:
        """Zero-padded decimal digits (``strip``: without the leading zeros)."""
        block = np.empty((len(values), width), np.uint8)
        rest = values.astype(np.int64, copy=True)
        for k in range(width - 1, -1, -1):
            block[:, k] = rest % 10 + 48
            rest //= 10
        if strip:
            leading = np.cumsum(block[:, :-1] != 48, axis=1) == 0
            block[:, :-1][leading] = 0
        self.put(block, end)

    def const(self, text: str, end: int = TAB) -> None:
        self.put(np.frombuffer(text.encode(), np.uint8)[None, :], end)

    def tsv(self) -> bytes:
        used = self.buf[:, : self.at]
        return used[used != 0].tobytes()


# ---------------------------------------------------------------------------------------
# Identifiers: pure functions of the row index


def cin_parts(index: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    return index // CIN_NUMBERS, index % CIN_NUMBERS + 1


def cin(index: int) -> str:
    """The CIN of driver ``index`` (0-based): ``0`` → ``B000001``."""
    if not 0 <= index < MAX_DRIVERS:
        raise ValueError(f"driver index {index} is outside 0..{MAX_DRIVERS - 1}")
    prefix, number = divmod(index, CIN_NUMBERS)
    return f"{CIN_PREFIXES[prefix]}{number + 1:06d}"


def plate_parts(index: NDArray[np.int64]) -> tuple[NDArray[np.int64], ...]:
    """(number, letter index, code index) of vehicle plate ``index``, scattered over the space."""
    j = (index.astype(np.int64) * _PLATE_STEP + 7) % PLATE_CAPACITY
    series = j // PLATE_NUMBERS
    return j % PLATE_NUMBERS + 1, series % len(PLATE_LETTERS), series // len(PLATE_LETTERS)


def plate(index: int) -> str:
    number, letter, code = (int(x[0]) for x in plate_parts(np.array([index])))
    return f"{number}-{PLATE_LETTERS[letter]}-{PREFECTURE_CODES[code]}"


def police_plate(number: int) -> str:
    return f"{number}-{POLICE_PLATE_LETTER}-{PREFECTURE_CODES[0]}"


def normalise_plate(text: str) -> str:
    """A plate as people type it (``12345 B 6``, ``12345-b-6``) in the stored form."""
    parts = [p for p in text.replace("|", "-").replace(" ", "-").split("-") if p]
    if len(parts) == 3:
        latin = {k: v for k, v in zip(PLATE_LETTERS_LATIN, PLATE_LETTERS)}
        parts[1] = latin.get(parts[1].upper(), parts[1])
    return "-".join(parts)


def private_vehicle_id(k: int) -> str:
    return f"PV-{k + 1:07d}"


def private_vehicles_for(drivers: int) -> int:
    return drivers // DRIVERS_PER_PRIVATE_VEHICLE


# ---------------------------------------------------------------------------------------
# Drivers


@cache
def _name_tables() -> tuple[
    NDArray[np.uint8],
    NDArray[np.uint8],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
]:
    first = _table(MALE_NAMES + FEMALE_NAMES)
    last = _table(LAST_NAMES)
    male_p = _zipf(len(MALE_NAMES), 0.9)
    female_p = _zipf(len(FEMALE_NAMES), 0.8)
    last_p = _zipf(len(LAST_NAMES), 0.6)
    return first, last, male_p, female_p, last_p


def _zipf(n: int, s: float) -> NDArray[np.float64]:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def driver_columns(spec: Spec, chunk: int) -> dict[str, NDArray[np.int64]]:
    """Every attribute of the drivers of ``chunk`` (rows from ``chunk * CHUNK_ROWS``), coded."""
    rng = np.random.default_rng([spec.seed, 1, chunk])
    index = np.arange(chunk * CHUNK_ROWS, (chunk + 1) * CHUNK_ROWS, dtype=np.int64)
    n = len(index)
    taxi = index < fleet.FLEET_SIZE
    _, _, male_p, female_p, last_p = _name_tables()
    female = rng.random(n) < 0.3
    first = np.where(
        female,
        len(MALE_NAMES) + rng.choice(len(FEMALE_NAMES), n, p=female_p),
        rng.choice(len(MALE_NAMES), n, p=male_p),
    )
    last = rng.choice(len(LAST_NAMES), n, p=last_p)

    # Age 18..80, most between 25 and 55; taxi drivers are at least 25.
    age_years = 18 + rng.beta(2.0, 3.5, n) * 62
    age_years = np.where(taxi, np.maximum(age_years, 25), age_years)
    age_days = (age_years * 365.25).astype(np.int64)
    birth = spec.as_of_day - age_days
    adult_days = age_days - int(18 * 365.25)
    # ~9% of licences are under two years old (on probation); taxi licences are 3+ years old.
    recent = (rng.random(n) < 0.09) & ~taxi
    held_min = np.where(taxi, 3 * 365, np.where(recent, 0, 731))
    held_max = np.maximum(np.where(recent, np.minimum(730, adult_days), adult_days), held_min)
    held = held_min + (rng.random(n) * (held_max - held_min + 1)).astype(np.int64)
    held = np.minimum(held, np.maximum(adult_days, 0))
    issue = spec.as_of_day - held
    issue_m = (_DATE_ORIGIN + issue).astype("datetime64[M]")
    day_of_month = (_DATE_ORIGIN + issue) - issue_m.astype("datetime64[D]")
    probation_end = ((issue_m + 24).astype("datetime64[D]") + day_of_month - _DATE_ORIGIN).astype(
        np.int64
    )
    on_probation = probation_end > spec.as_of_day

    category = np.where(taxi, 0, rng.choice(len(LICENCE_CATEGORIES), n, p=LICENCE_CATEGORY_SHARES))

    # Points: most at their capital; a long tail of lost points, heavier for taxi drivers.
    capital = np.where(on_probation, 20, 30)
    lost_some = rng.random(n) < np.where(taxi, 0.5, 0.26)
    lost = np.where(lost_some, 1 + rng.exponential(np.where(taxi, 9.0, 6.0), n).astype(np.int64), 0)
    points = np.maximum(capital - lost, 0)
    points = np.where(taxi, np.maximum(points, 1), points)
    status = np.where(points == 0, 2, np.where((rng.random(n) < 0.004) & ~taxi, 1, 0))

    # Licences are numbered in issue order too: ascending like the CINs, so the unique
    # index on them grows at its right edge during a load instead of being rebuilt.
    serial = index * _LICENCE_STRIDE + rng.integers(0, _LICENCE_STRIDE, n)
    office = index // _LICENCE_BLOCK
    return {
        "index": index,
        "first": first,
        "last": last,
        "birth": birth,
        "office": office,
        "serial": serial,
        "category": category,
        "issue": issue,
        "probation_end": probation_end,
        "points": points,
        "status": status,
    }


DRIVER_COLUMNS = (
    "cin", "first_name", "last_name", "birth_date", "licence_no", "licence_category",
    "issue_date", "probation_end", "points", "status",
)  # fmt: skip
STATUSES = ("valid", "suspended", "annulled")


def drivers_tsv(spec: Spec, start: int, stop: int) -> bytes:
    """Drivers ``start`` .. ``stop - 1`` as TSV lines in :data:`DRIVER_COLUMNS` order."""
    parts = []
    for chunk in range(start // CHUNK_ROWS, (stop - 1) // CHUNK_ROWS + 1):
        cols = driver_columns(spec, chunk)
        lo = max(start - chunk * CHUNK_ROWS, 0)
        hi = min(stop - chunk * CHUNK_ROWS, CHUNK_ROWS)
        parts.append(_drivers_rows({k: v[lo:hi] for k, v in cols.items()}))
    return b"".join(parts)


def _drivers_rows(cols: dict[str, NDArray[np.int64]]) -> bytes:
    first_t, last_t, *_ = _name_tables()
    dates = _dates()
    prefix, number = cin_parts(cols["index"])
    rows = _Rows(len(cols["index"]), 128)
    rows.text(_table(CIN_PREFIXES), prefix, end=0)
    rows.digits(number, 6)
    rows.text(first_t, cols["first"])
    rows.text(last_t, cols["last"])
    rows.text(dates, cols["birth"])
    rows.digits(np.asarray(PREFECTURE_CODES)[cols["office"]], 2, end=ord("/"))
    rows.digits(cols["serial"], 8)
    rows.text(_table(LICENCE_CATEGORIES), cols["category"])
    rows.text(dates, cols["issue"])
    rows.text(dates, cols["probation_end"])
    rows.digits(cols["points"], 2, strip=True)
    rows.text(_table(STATUSES), cols["status"], end=NEWLINE)
    return rows.tsv()


# ---------------------------------------------------------------------------------------
# Vehicles


VEHICLE_COLUMNS = ("vehicle_id", "plate", "kind", "owner_cin", "owner_name")


def private_vehicles_tsv(spec: Spec, start: int, stop: int) -> bytes:
    """Private vehicles ``start`` .. ``stop - 1`` (vehicle ``k`` owned by a driver near ``4k``)."""
    parts = []
    for chunk in range(start // CHUNK_ROWS, (stop - 1) // CHUNK_ROWS + 1):
        rng = np.random.default_rng([spec.seed, 2, chunk])
        k = np.arange(chunk * CHUNK_ROWS, (chunk + 1) * CHUNK_ROWS, dtype=np.int64)
        owner = k * DRIVERS_PER_PRIVATE_VEHICLE + rng.integers(
            0, DRIVERS_PER_PRIVATE_VEHICLE, len(k)
        )
        lo = max(start - chunk * CHUNK_ROWS, 0)
        hi = min(stop - chunk * CHUNK_ROWS, CHUNK_ROWS)
        parts.append(_private_rows(k[lo:hi], owner[lo:hi]))
    return b"".join(parts)


def _private_rows(k: NDArray[np.int64], owner: NDArray[np.int64]) -> bytes:
    rows = _Rows(len(k), 96)
    rows.const("PV-", end=0)
    rows.digits(k + 1, 7)
    _plate_columns(rows, k + fleet.FLEET_SIZE)
    rows.const("private")
    prefix, number = cin_parts(owner)
    rows.text(_table(CIN_PREFIXES), prefix, end=0)
    rows.digits(number, 6)
    rows.const("\\N", end=NEWLINE)
    return rows.tsv()


def _plate_columns(rows: _Rows, index: NDArray[np.int64]) -> None:
    number, letter, code = plate_parts(index)
    rows.digits(number, 5, strip=True, end=ord("-"))
    rows.text(_table(PLATE_LETTERS), letter, end=ord("-"))
    rows.digits(np.asarray(PREFECTURE_CODES)[code], 2, strip=True)


@dataclass(frozen=True)
class Taxi:
    vehicle_id: str
    plate: str
    kind: str
    owner_name: str  # the holder of the taxi licence (agrément), not a registered driver
    driver_cin: str


def taxis(spec: Spec, count: int = fleet.FLEET_SIZE) -> list[Taxi]:
    """Every taxi of the fleet with its licence holder and its current driver."""
    rng = np.random.default_rng([spec.seed, 3])
    _, _, male_p, _, last_p = _name_tables()
    first = rng.choice(len(MALE_NAMES), count, p=male_p)
    last = rng.choice(len(LAST_NAMES), count, p=last_p)
    number, letter, code = plate_parts(np.arange(count))
    return [
        Taxi(
            vehicle_id=fleet.taxi_id(t),
            plate=f"{number[t]}-{PLATE_LETTERS[letter[t]]}-{PREFECTURE_CODES[code[t]]}",
            kind=fleet.taxi_kind(t),
            owner_name=f"{MALE_NAMES[first[t]]} {LAST_NAMES[last[t]]} (agrément)",
            driver_cin=cin(t),
        )
        for t in range(count)
    ]
