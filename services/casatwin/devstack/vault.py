"""The devstack's stand-in for the appliance's vault: it generates the secrets once.

`make run`, the demos, the benchmarks and the tests get the same secret files the appliance's
vault provides, in the data directory, and the services read them the same way
(:func:`casatwin.secretfiles.read_secret`). A secret that exists is kept: what was made with
it (the pseudonyms already in the read model) stays valid across restarts.
"""

from __future__ import annotations

from pathlib import Path

from casatwin.config import Settings
from casatwin.gateway import fakeapi
from casatwin.logs import get_logger
from casatwin.registry import pseudonyms
from casatwin.secretfiles import generate_secret

log = get_logger("devstack")


def secret_files(settings: Settings) -> dict[str, Path]:
    """Every secret the services of this settings read, by what it is."""
    return {
        pseudonyms.KEY_WHAT: pseudonyms.key_path(settings),
        fakeapi.ADMIN_TOKEN_WHAT: fakeapi.admin_token_path(settings),
    }


def generate_secrets(settings: Settings) -> None:
    """Create each missing secret file (mode 0600)."""
    for what, path in secret_files(settings).items():
        if generate_secret(path):
            log.info("secret generated", secret=what, file=str(path))
    generate_kafka_passwords(settings.kafka.credentials_path())


def generate_kafka_passwords(credentials_dir: Path) -> None:
    """A password file for every Kafka user (the broker's own and each service's)."""
    from casatwin.bus.access import USERS
    from casatwin.config import KafkaSettings

    files = KafkaSettings(credentials_dir=str(credentials_dir))
    made = [user for user in USERS if generate_secret(files.password_file(user))]
    if made:
        log.info("Kafka passwords generated", users=",".join(made), directory=str(credentials_dir))
