"""Consumer helpers: group consumers with the configured timeouts, and group-less readers.

Group consumers take their session, heartbeat and poll timeouts from the ``kafka.*_ms``
settings, so that a group forms and rebalances quickly. Readers that need no group
(``tail``, the dashboard's snapshot, tests) assign partitions directly and start at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka

from casatwin.bus.producer import client_config
from casatwin.config import KafkaSettings
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.observability.families import CONSUMER_ERRORS, count_consumed

log = get_logger("bus")

Message = confluent_kafka.Message


def group_consumer(
    settings: KafkaSettings,
    group_id: str,
    topics: list[str],
    client_id: str,
    offset_reset: str = "latest",
    on_assign: Callable[[confluent_kafka.Consumer, list[Any]], None] | None = None,
    **overrides: Any,
) -> confluent_kafka.Consumer:
    """A consumer in ``group_id`` subscribed to ``topics``; commits are the caller's job.
    ``on_assign`` is called (on the consuming thread) with the partitions given to it."""
    config = client_config(settings, client_id) | {
        "group.id": group_id,
        "auto.offset.reset": offset_reset,
        "enable.auto.commit": False,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        "enable.partition.eof": False,
    }
    config.update(overrides)
    consumer = confluent_kafka.Consumer(config)
    if on_assign is None:
        consumer.subscribe(topics)
    else:
        consumer.subscribe(topics, on_assign=on_assign)
    return consumer


def reader(
    settings: KafkaSettings,
    topics: list[str],
    client_id: str,
    start: str = "latest",
    timeout_s: float = 10.0,
    **overrides: Any,
) -> confluent_kafka.Consumer:
    """A group-less consumer assigned to every partition of ``topics``.

    ``start`` is ``earliest``, ``latest`` or ``-N`` (the last N messages of each partition).
    """
    config = client_config(settings, client_id) | {
        "group.id": f"{client_id}-unused",  # librdkafka insists; no group is joined
        "enable.auto.commit": False,
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        "enable.partition.eof": False,
    }
    config.update(overrides)
    consumer = confluent_kafka.Consumer(config)
    metadata = list_topics(consumer, timeout_s)
    assignment = []
    for topic in topics:
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise unreadable_topic(settings, topic, consumer, timeout_s)
        for partition in metadata.topics[topic].partitions:
            assignment.append(_start_position(consumer, topic, partition, start, timeout_s))
    consumer.assign(assignment)
    return consumer


def unreadable_topic(
    settings: KafkaSettings, topic: str, client: Any, timeout_s: float
) -> UserError:
    """Why ``topic`` is not in the cluster's metadata: missing, or not this principal's
    (a listing leaves out the topics a principal may not see; asked by name, the broker
    says so)."""
    try:
        info = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except confluent_kafka.KafkaException:
        info = None
    denied = (
        info is not None
        and info.error is not None
        and info.error.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    if denied:
        return UserError(
            f"the Kafka user {settings.principal()!r} may not use topic {topic}",
            hint="docs/security.md lists what each principal may read and write; "
            "CASATWIN_KAFKA_USER chooses the principal",
        )
    return UserError(
        f"topic {topic} does not exist on the broker at {settings.bootstrap}",
        hint="`casatwin topics create` creates them; `casatwin topics list` lists them.",
    )


def _start_position(
    consumer: confluent_kafka.Consumer, topic: str, partition: int, start: str, timeout_s: float
) -> confluent_kafka.TopicPartition:
    if start == "earliest":
        return confluent_kafka.TopicPartition(topic, partition, confluent_kafka.OFFSET_BEGINNING)
    if start == "latest":
        return confluent_kafka.TopicPartition(topic, partition, confluent_kafka.OFFSET_END)
    last_n = -int(start)
    low, high = consumer.get_watermark_offsets(
        confluent_kafka.TopicPartition(topic, partition), timeout=timeout_s
    )
    return confluent_kafka.TopicPartition(topic, partition, max(low, high - last_n))


def list_topics(client: Any, timeout_s: float) -> Any:
    """Cluster metadata, or a :class:`UserError` saying the broker cannot be reached."""
    try:
        return client.list_topics(timeout=timeout_s)
    except confluent_kafka.KafkaException as exc:
        raise UserError(
            f"cannot reach the Kafka broker ({exc.args[0].str()})",
            hint="is it running? `make run` starts one; CASATWIN_KAFKA_BOOTSTRAP says where it is.",
        ) from None


def messages(
    consumer: confluent_kafka.Consumer,
    max_messages: int = 1000,
    timeout_s: float = 0.5,
) -> list[Message]:
    """One batch of good messages, as soon as there is one (at most ``timeout_s`` of
    waiting); transport errors are logged, not raised.

    librdkafka's ``consume(n, timeout)`` waits until it has *n* messages or the timeout
    has passed, which would hold a lone message back for the whole timeout: wait for the
    first message only, then take whatever else is already queued.
    """
    first = consumer.consume(1, timeout_s)
    batch = first + consumer.consume(max_messages - 1, 0) if first and max_messages > 1 else first
    good = []
    for message in batch:
        error = message.error()
        if error is None:
            good.append(message)
        elif error.fatal():
            raise confluent_kafka.KafkaException(error)
        else:
            CONSUMER_ERRORS.labels(error.name()).inc()
            log.warning("consumer error", reason=error.str())
    if good:
        count_consumed(m.topic() for m in good)
    return good


def read_to_end(consumer: confluent_kafka.Consumer, timeout_s: float = 10.0) -> list[Message]:
    """Every message of a ``reader(start="earliest" or "-N")`` up to the end of each
    partition at the call (its high watermark): a non-empty partition is done once its
    record at ``high - 1`` has arrived. Bounded by ``timeout_s``.
    """
    pending: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        if high > low:
            pending[(tp.topic, tp.partition)] = high - 1
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        batch = messages(consumer, max_messages=5000, timeout_s=0.2)
        for message in batch:
            where = (message.topic(), message.partition())
            if where in pending and message.offset() >= pending[where]:
                del pending[where]
        out += batch
    return out


def stream(
    consumer: confluent_kafka.Consumer, max_messages: int = 1000, timeout_s: float = 0.5
) -> Iterator[Message]:
    """Every good message, forever (the caller breaks out)."""
    while True:
        yield from messages(consumer, max_messages, timeout_s)
