"""The bus's table of principals (casatwin.bus.access): what the issue requires of it, and
that docs/security.md shows the table the broker gets."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AclOperation, ResourceType

from casatwin.bus import topics
from casatwin.bus.access import PRINCIPALS, USERS, acl_bindings, markdown_table, principal


def writers(topic: str) -> set[str]:
    return {
        b.principal.removeprefix("User:")
        for b in acl_bindings()
        if b.restype == ResourceType.TOPIC and b.name == topic and b.operation == AclOperation.WRITE
    }


def test_only_the_processor_writes_infractions_and_congestion():
    assert writers(topics.INFRACTIONS) == {"processor"}
    assert writers(topics.CONGESTION) == {"processor"}


def test_every_service_that_sets_bad_input_aside_may_write_the_dlq():
    # The gateway's bad readings, the processor's undecodable fixes and undecidable
    # infractions, the dispatcher's unplaceable infractions: refused by the broker, a dead
    # letter would be lost with its reason.
    assert writers(topics.DLQ) == {"gateway", "processor", "dispatcher"}


def test_the_simulator_cannot_read_infractions_and_the_dashboard_writes_nothing():
    assert topics.INFRACTIONS not in principal("simulator").reads
    assert principal("dashboard").writes == ()
    assert not any(
        b.principal == "User:dashboard" and b.operation != AclOperation.READ for b in acl_bindings()
    )


def test_every_topic_is_named_and_every_principal_has_a_password_file():
    named = {t for p in PRINCIPALS for t in p.reads + p.writes}
    assert named <= {spec.name for spec in topics.TOPICS}
    assert {p.name for p in PRINCIPALS} | {"admin", "controller"} == set(USERS)


def test_groups_are_granted_by_the_principal_s_own_prefix_only():
    groups = {(b.principal, b.name) for b in acl_bindings() if b.restype == ResourceType.GROUP}
    assert groups == {(f"User:{p.name}", f"casatwin-{p.name}") for p in PRINCIPALS}


def test_docs_show_the_table_the_broker_gets():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert markdown_table() in doc, "docs/security.md: paste `casatwin kafka-access show`"
