"""Publish each micro-batch's messages to a topic once, even across a crash (kill -9).

Spark re-runs a micro-batch whose commit it did not record (same offsets, same state, hence
the same infractions with the same ids), so a sink sees some batches twice after a crash.
:class:`BatchPublisher` keeps a small journal next to the query's checkpoint:

1. before producing batch *b*, it writes ``b.intent`` with the topic's end offsets;
2. it produces the messages and waits until the broker has acknowledged every one;
3. it writes ``b.done``.

Re-running *b*: with ``b.done``, nothing is produced again; with only ``b.intent`` (the crash
hit between 1 and 3), it reads the topic from the recorded offsets and produces only the
messages whose key field (``infraction_id``) is not there yet. This relies on the query being
the topic's only writer (true of ``casatwin.infractions``: only the processor writes it).
The messages found on the topic are returned as they were published, so that the other
sinks record exactly what the topic carries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from casatwin.bus.messages import encode
from casatwin.bus.producer import DeliveryError, Producer
from casatwin.bus.ranges import OffsetMap, read_values, to_map
from casatwin.bus.watermarks import EndOffsets
from casatwin.config import KafkaSettings
from casatwin.logs import get_logger

log = get_logger("processor")

KEEP_BATCHES = 200  # journal entries kept (Spark itself keeps 100 batches of metadata)


class BatchPublisher:
    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        journal_dir: Path,
        client_id: str,
        id_field: str,
        key_field: str,
        timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.journal = journal_dir
        self.client_id = client_id
        self.id_field = id_field
        self.key_field = key_field
        self.timeout_s = timeout_s
        self._producer: Producer | None = None
        self._ends: EndOffsets | None = None

    def start(self) -> None:
        self.journal.mkdir(parents=True, exist_ok=True)
        # No lingering: a batch is flushed at once, and the dashboard is waiting.
        self._producer = Producer(self.settings, f"{self.client_id}-publisher", **{"linger.ms": 0})
        self._ends = EndOffsets(self.settings, f"{self.client_id}-journal")

    def stop(self) -> None:
        if self._producer is not None:
            self._producer.close(self.timeout_s)
            self._producer = None
        if self._ends is not None:
            self._ends.close()
            self._ends = None

    # -- the protocol ----------------------------------------------------------------------

    def publish(self, batch_id: int, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish ``messages`` of batch ``batch_id`` once; returns them as on the topic."""
        assert self._producer is not None and self._ends is not None, "start() first"
        if not messages:
            return []
        done, intent = self._path(batch_id, "done"), self._path(batch_id, "intent")
        already: dict[str, dict[str, Any]] = {}
        if done.exists():
            already = self._published_since(batch_id, orjson.loads(intent.read_bytes()))
            log.info("batch replayed after a restart; already published", batch=batch_id)
            return [already.get(m[self.id_field], m) for m in messages]
        if intent.exists():
            already = self._published_since(batch_id, orjson.loads(intent.read_bytes()))
            log.info(
                "batch replayed after a crash while publishing; sending only what is missing",
                batch=batch_id,
                already_published=len(already),
                missing=len(messages) - len(already),
            )
        else:
            ends = to_map(self._ends.ends([self.topic]))
            _write_atomically(intent, orjson.dumps(ends))
        out = []
        lost_before = self._producer.lost()
        now_ms = int(time.time() * 1000)
        for message in messages:
            if message[self.id_field] in already:
                out.append(already[message[self.id_field]])
                continue
            stamped = {**message, "published_ts": now_ms}
            if not self._producer.send(self.topic, encode(stamped), key=stamped[self.key_field]):
                raise DeliveryError(f"the producer's buffer is full; batch {batch_id} not sent")
            out.append(stamped)
        self._producer.confirm(lost_before, self.timeout_s, f"{self.topic}, batch {batch_id}")
        _write_atomically(done, b"")
        self._prune(batch_id)
        return out

    def _published_since(self, batch_id: int, ends: OffsetMap) -> dict[str, dict[str, Any]]:
        """Messages on the topic after the offsets recorded before batch ``batch_id``."""
        assert self._ends is not None
        now = to_map(self._ends.ends([self.topic]))
        values = read_values(
            self.settings, f"{self.client_id}-journal-reader", ends, now, self.timeout_s
        )
        messages = (orjson.loads(raw) for raw in values if raw is not None)
        return {message[self.id_field]: message for message in messages}

    # -- journal ---------------------------------------------------------------------------

    def _path(self, batch_id: int, kind: str) -> Path:
        return self.journal / f"{batch_id:012d}.{kind}"

    def _prune(self, batch_id: int) -> None:
        for path in self.journal.iterdir():
            stem = path.name.split(".", 1)[0]
            if stem.isdigit() and int(stem) < batch_id - KEEP_BATCHES:
                path.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
