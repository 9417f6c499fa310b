"""Pseudonymous driver references: what leaves MariaDB instead of an identity.

Topics, the DLQ and the read model name a driver by ``drv-`` and 20 hex digits of
HMAC-SHA256(key, CIN). The same driver gets the same reference (an operations room can see
that two infractions are one driver's), nobody without the key can compute it from a CIN,
and a CIN cannot be recovered from it: Moroccan CINs are few enough (letters and six digits)
that an unkeyed hash would be reversed by trying them all. The key is a secret file
(:mod:`casatwin.secretfiles`); only the processor, which names drivers in its messages, reads
it. An operator who must know who the driver is asks the dashboard, which reads the identity
from the ledger by infraction id and audits the view.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from casatwin.config import Settings
from casatwin.secretfiles import read_secret

PREFIX = "drv-"
HEX_DIGITS = 20  # 80 bits: no collision among 10M drivers (p ~ 4e-11)
KEY_WHAT = "drivers' pseudonym key"


def driver_ref(key: bytes, cin: str) -> str:
    """The pseudonymous reference of the driver with this CIN."""
    digest = hmac.new(key, cin.encode("ascii"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_DIGITS]


def key_path(settings: Settings) -> Path:
    return settings.privacy.key_file(settings.general.data_dir)


def load_key(settings: Settings) -> bytes:
    """The key from its file; a :class:`~casatwin.errors.UserError` says what is missing."""
    return read_secret(key_path(settings), KEY_WHAT)
