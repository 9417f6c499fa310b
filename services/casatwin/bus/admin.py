"""Topic administration: create what is missing, list what is there."""

from __future__ import annotations

import time
from collections.abc import Iterable

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from casatwin.bus import topics as topic_specs
from casatwin.bus.consumer import list_topics, unreadable_topic
from casatwin.bus.producer import client_config
from casatwin.config import KafkaSettings
from casatwin.errors import UserError
from casatwin.logs import get_logger

log = get_logger("bus")


def admin_client(settings: KafkaSettings) -> AdminClient:
    return AdminClient(client_config(settings, "casatwin-admin"))


def wait_for_broker(settings: KafkaSettings, timeout_s: float = 10.0) -> list[str]:
    """The broker's topic names; :class:`UserError` if it does not answer in time."""
    metadata = list_topics(admin_client(settings), timeout_s)
    return sorted(metadata.topics)


def require_topics(settings: KafkaSettings, names: Iterable[str], timeout_s: float = 10.0) -> None:
    """A :class:`UserError` unless every topic of ``names`` exists and this process's
    principal may use it. Services check, they do not create: topics are the admin's
    (`casatwin topics create`, run by `make run` and by the appliance's services tier)."""
    admin = admin_client(settings)
    metadata = list_topics(admin, timeout_s)
    for name in names:
        info = metadata.topics.get(name)
        if info is None or info.error is not None:
            raise unreadable_topic(settings, name, admin, timeout_s)


def ensure_topics(
    settings: KafkaSettings,
    timeout_s: float = 15.0,
    specs: Iterable[topic_specs.TopicSpec] = topic_specs.TOPICS,
) -> list[str]:
    """Create every topic of ``specs`` (default: CasaTwin's) that does not exist yet;
    returns the ones created."""
    admin = admin_client(settings)
    existing = set(list_topics(admin, timeout_s).topics)
    wanted = [
        NewTopic(
            spec.name,
            num_partitions=topic_specs.partitions_for(spec, settings.partitions),
            replication_factor=-1,  # the broker's default: 1 on one node, 3 on a cluster
            config={"retention.ms": str(spec.retention_ms), **dict(spec.config)},
        )
        for spec in specs
        if spec.name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            created.append(name)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created:
        wait_for_leaders(admin, created, timeout_s)
        log.info("topics created", topics=",".join(sorted(created)))
    return sorted(created)


def leaders_serve(
    admin: AdminClient, names: Iterable[str] | None = None, timeout_s: float = 5.0
) -> bool:
    """Whether every partition of the topics ``names`` (default: every topic) has a leader
    that answers: Kafka elects the leaders a moment after it creates a topic or starts, and
    until then clients are told "not leader for partition"."""
    try:
        metadata = admin.list_topics(timeout=timeout_s)
        partitions = []
        for name in metadata.topics if names is None else names:
            info = metadata.topics.get(name)
            if info is None or info.error is not None:
                return False
            partitions += [confluent_kafka.TopicPartition(name, p) for p in info.partitions]
        if not partitions:
            return True
        asked = {tp: OffsetSpec.latest() for tp in partitions}
        for future in admin.list_offsets(asked, request_timeout=timeout_s).values():
            future.result()
    except confluent_kafka.KafkaException:
        return False
    return True


def wait_for_leaders(admin: AdminClient, names: Iterable[str], timeout_s: float) -> None:
    """Until every partition of ``names`` has a leader that answers (:func:`leaders_serve`)."""
    names = list(names)
    deadline = time.monotonic() + timeout_s
    while not leaders_serve(admin, names, timeout_s):
        if time.monotonic() > deadline:
            raise UserError(
                f"the broker elected no leader for some partitions of {', '.join(names)} "
                f"within {timeout_s:.0f} s",
                hint="is it overloaded? its log (server.log) says more",
            )
        time.sleep(0.1)


def describe(settings: KafkaSettings, timeout_s: float = 10.0) -> dict[str, int]:
    """Topic name → partition count, for every topic on the broker."""
    metadata = list_topics(admin_client(settings), timeout_s)
    return {name: len(t.partitions) for name, t in sorted(metadata.topics.items())}
