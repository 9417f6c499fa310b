"""The true offsets of partitions: earliest kept and end of log, on any Kafka broker.

The embedded Tansu broker reports as high watermark the first offset of the partition's
last record batch + 1, not the end of the log. :class:`EndOffsets` reads the truth: it asks
for the watermarks, then fetches from ``high - 1`` and takes the last record returned + 1.
Probes are cached by reported high watermark (a partition whose watermark has not moved
has not grown), so a quiet topic costs one ListOffsets round trip per call; a busy one can
be read without probes (``exact=False``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import confluent_kafka

from casatwin.bus.consumer import list_topics
from casatwin.bus.producer import client_config
from casatwin.config import KafkaSettings
from casatwin.errors import UserError

TopicPartitionKey = tuple[str, int]


class EndOffsets:
    """Partitions of some topics with their (earliest, true end) offsets.

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
            "fetch.wait.max.ms": 10,
            **overrides,
        }
        self._bootstrap = settings.bootstrap
        self._timeout_s = timeout_s
        self._consumer: confluent_kafka.Consumer | None = None
        # Per partition: (reported high watermark, end offset known for it, probed or not)
        self._seen: dict[TopicPartitionKey, tuple[int, int, bool]] = {}

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
                raise UserError(
                    f"topic {topic} does not exist on the broker at {self._bootstrap}",
                    hint="`casatwin topics create` creates the CasaTwin topics.",
                )
            out += [(topic, p) for p in sorted(info.partitions)]
        return out

    def bounds(
        self, partitions: Iterable[TopicPartitionKey], exact: bool = True
    ) -> dict[TopicPartitionKey, tuple[int, int]]:
        """``{(topic, partition): (earliest offset, end offset)}``.

        ``exact`` reads the true end of every partition that grew. Otherwise a partition
        still growing reports its high watermark — a lower bound, short of the true end by
        at most the records of the last producer batch, which the next call picks up — and
        only a partition that has stopped growing is probed: a busy stream costs no reads,
        and the tail of a quiet one is found at once.
        """
        reported = {}
        for topic, partition in partitions:
            low, high = self.consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition),
                timeout=self._timeout_s,
                cached=False,
            )
            reported[(topic, partition)] = (max(low, 0), max(high, 0))
        to_probe = {}
        for key, (low, high) in reported.items():
            seen_high, _, probed = self._seen.get(key, (-1, -1, False))
            if high > low and not (seen_high == high and probed) and (exact or seen_high == high):
                to_probe[key] = high
            elif seen_high != high:
                self._seen[key] = (high, high, False)
        if to_probe:
            for key, end in self._probe(to_probe).items():
                self._seen[key] = (to_probe[key], end, True)
        return {key: (low, self._seen.get(key, (high, high, False))[1] if high > low else high)
                for key, (low, high) in reported.items()}  # fmt: skip

    def ends(self, topics: Iterable[str], exact: bool = True) -> dict[TopicPartitionKey, int]:
        """End offset of every partition of ``topics`` (see :meth:`bounds`)."""
        partitions = self.partitions(topics)
        return {key: end for key, (_, end) in self.bounds(partitions, exact).items()}

    def _probe(self, highs: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, int]:
        """Read from ``high - 1`` in every partition; the last record seen + 1 is the end."""
        consumer = self.consumer
        consumer.assign(
            [confluent_kafka.TopicPartition(t, p, high - 1) for (t, p), high in highs.items()]
        )
        last: dict[TopicPartitionKey, int] = {}
        deadline = time.monotonic() + self._timeout_s
        try:
            while time.monotonic() < deadline:
                batch = consumer.consume(10_000, 0.002)
                if not batch and len(last) == len(highs):
                    break  # every partition answered and nothing more is queued
                for message in batch:
                    if message.error() is not None:
                        continue
                    key = (message.topic(), message.partition())
                    last[key] = max(last.get(key, -1), message.offset())
            else:
                missing = sorted(set(highs) - set(last))
                raise UserError(
                    f"the broker at {self._bootstrap} returned no record for {missing} "
                    f"within {self._timeout_s:.0f} s",
                    hint="is the broker overloaded or restarting?",
                )
        finally:
            consumer.unassign()
        return {key: max(high, last.get(key, high - 1) + 1) for key, high in highs.items()}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._seen.clear()
