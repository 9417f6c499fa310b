"""The offsets of partitions: the earliest kept and the end of the log.

On Apache Kafka the high watermark is the end of the log a consumer can read (the offset
the next record will have once acknowledged), so the end of a partition is its high
watermark, asked of the broker (one ListOffsets round trip per partition, never
librdkafka's cached value).
"""

from __future__ import annotations

from collections.abc import Iterable

import confluent_kafka

from casatwin.bus.consumer import list_topics, unreadable_topic
from casatwin.bus.producer import client_config
from casatwin.config import KafkaSettings

TopicPartitionKey = tuple[str, int]


class EndOffsets:
    """Partitions of some topics with their (earliest, end) offsets.

    Owns one group-less consumer, opened on first use; :meth:`close` releases it.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str,
        timeout_s: float = 10.0,
        **overrides: object,
    ) -> None:
        self._config = client_config(settings, client_id) | {
            "group.id": f"{client_id}-unused",  # librdkafka insists; no group is joined
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **overrides,
        }
        self._settings = settings
        self._timeout_s = timeout_s
        self._consumer: confluent_kafka.Consumer | None = None

    @property
    def consumer(self) -> confluent_kafka.Consumer:
        if self._consumer is None:
            self._consumer = confluent_kafka.Consumer(self._config)
        return self._consumer

    def partitions(
        self, topics: Iterable[str], missing_ok: bool = False
    ) -> list[TopicPartitionKey]:
        """Every partition of ``topics``; a topic that does not exist has none if
        ``missing_ok``, else it is a :class:`UserError`."""
        wanted = list(topics)
        metadata = list_topics(self.consumer, self._timeout_s)
        out = []
        for topic in wanted:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                if missing_ok:
                    continue
                raise unreadable_topic(self._settings, topic, self.consumer, self._timeout_s)
            out += [(topic, p) for p in sorted(info.partitions)]
        return out

    def bounds(
        self, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, tuple[int, int]]:
        """``{(topic, partition): (earliest offset, end offset)}``."""
        out = {}
        for topic, partition in partitions:
            low, high = self.consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition),
                timeout=self._timeout_s,
                cached=False,
            )
            out[(topic, partition)] = (max(low, 0), max(high, 0))
        return out

    def ends(self, topics: Iterable[str]) -> dict[TopicPartitionKey, int]:
        """End offset of every partition of ``topics``."""
        partitions = self.partitions(topics)
        return {key: end for key, (_, end) in self.bounds(partitions).items()}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
