"""How every Kafka client proves who it is: SASL/SCRAM with a password kept in a file.

Each process authenticates as one principal (:meth:`KafkaSettings.principal`) with the
password in ``<credentials_dir>/<user>.password``, the same file whether the devstack
generated it or the vault put it there. librdkafka (the services) and the Java client
(Spark's connector, Kafka's own tools) get the same identity in their own words.
"""

from __future__ import annotations

from typing import Any

from casatwin.config import KafkaSettings
from casatwin.secretfiles import read_secret

MECHANISM = "SCRAM-SHA-512"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"  # the appliance's tailnet encrypts node to node
ADMIN = "admin"  # super user: creates topics, users and ACLs; the command-line tools
CONTROLLER = "controller"  # the brokers among themselves on the controller listener (PLAIN)


def password(settings: KafkaSettings, user: str) -> str:
    return read_secret(settings.password_file(user), f"Kafka password of {user!r}").decode()


def librdkafka_auth(settings: KafkaSettings) -> dict[str, Any]:
    """The SASL part of a librdkafka client's configuration."""
    user = settings.principal()
    return {
        "security.protocol": SECURITY_PROTOCOL,
        "sasl.mechanisms": MECHANISM,
        "sasl.username": user,
        "sasl.password": password(settings, user),
    }


def jaas(module: str, user: str, secret: str, **extra: str) -> str:
    """A ``sasl.jaas.config`` value (Kafka's Java side)."""
    fields = " ".join(
        f'{key}="{value}"' for key, value in {"username": user, "password": secret, **extra}.items()
    )
    return f"{module} required {fields};"


SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


def java_auth(settings: KafkaSettings) -> dict[str, str]:
    """The SASL part of a Java Kafka client's configuration (Spark's connector prefixes
    each key with ``kafka.``)."""
    user = settings.principal()
    return {
        "security.protocol": SECURITY_PROTOCOL,
        "sasl.mechanism": MECHANISM,
        "sasl.jaas.config": jaas(SCRAM_LOGIN, user, password(settings, user)),
    }
