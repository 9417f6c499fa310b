"""Secrets kept in files: the services read them, nobody else writes them but their maker.

A secret never sits in a setting's value (settings are printed, passed on command lines and
copied into every child's environment); a setting names the file. On the appliance the vault
provides the file (mode 0600, the service's own user); for `make run`, the demos and the
tests the devstack generates it once (:func:`generate_secret`). The services read it the same
way in both cases (:func:`read_secret`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from casatwin.errors import UserError

MIN_BYTES = 16  # below this a key is guessable; refuse to run with it


def read_secret(path: Path, what: str) -> bytes:
    """The secret in ``path`` (surrounding whitespace stripped), or a :class:`UserError`."""
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        raise UserError(
            f"the {what} is missing: no file {path}",
            hint="`make run` and `casatwin stack up` generate it; on the appliance the vault "
            "provides it (see docs/security.md)",
        ) from None
    except PermissionError:
        raise UserError(
            f"the {what} in {path} cannot be read by this user",
            hint="run the service as the user that owns the file (mode 0600)",
        ) from None
    if len(value) < MIN_BYTES:
        raise UserError(
            f"the {what} in {path} is too short ({len(value)} bytes, at least {MIN_BYTES})",
            hint="make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return value


def generate_secret(path: Path) -> bool:
    """Write a new random secret to ``path`` (mode 0600) unless one is there; True if new.

    Created with ``O_EXCL``: two processes preparing the same state directory cannot both
    write one, and an existing key (the pseudonyms already published depend on it) is never
    replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return True
