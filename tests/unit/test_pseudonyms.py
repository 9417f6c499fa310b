"""Pseudonymous driver references and the secret files their key lives in."""

from __future__ import annotations

import stat

import pytest

from casatwin.config import Settings
from casatwin.devstack.vault import generate_secrets
from casatwin.errors import UserError
from casatwin.registry.pseudonyms import driver_ref, key_path, load_key
from casatwin.secretfiles import generate_secret, read_secret


def test_a_driver_keeps_one_reference_that_only_the_key_makes():
    key = b"k" * 32
    ref = driver_ref(key, "BE123456")
    assert ref == driver_ref(key, "BE123456")  # two infractions of one driver: one reference
    assert ref.startswith("drv-") and len(ref) == 24 and "123456" not in ref
    assert ref != driver_ref(key, "BE123457")
    assert ref != driver_ref(b"K" * 32, "BE123456")  # without the key, no way from a CIN to it


def test_the_devstack_generates_the_key_once_private_to_its_user(tmp_path):
    settings = Settings().replace(general={"data_dir": tmp_path})
    generate_secrets(settings)
    path = key_path(settings)
    assert path == tmp_path / "secrets" / "driver-pseudonym.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(settings)
    generate_secrets(settings)  # a second start keeps it: published pseudonyms stay valid
    assert load_key(settings) == key and len(key) >= 32
    assert not generate_secret(path)


def test_a_missing_or_weak_key_is_refused_with_a_hint(tmp_path):
    settings = Settings().replace(
        general={"data_dir": tmp_path}, privacy={"pseudonym_key_file": str(tmp_path / "k")}
    )
    with pytest.raises(UserError, match="drivers' pseudonym key is missing") as error:
        load_key(settings)
    assert "vault" in error.value.hint
    (tmp_path / "k").write_text("short\n")
    with pytest.raises(UserError, match="too short"):
        read_secret(tmp_path / "k", "key")
