"""``lookup('kafka_random_uuid')``: a new KRaft cluster id, made on the controller.

What ``kafka-storage.sh random-uuid`` prints (Kafka's ``Uuid.randomUuid``), without needing
the Kafka archive on a node: a version 4 UUID's 16 bytes in URL-safe base64 without padding
(22 characters, what ``Uuid.fromString`` decodes), never one of Kafka's reserved ids (all
zeros, and 1: the metadata topic's) and never starting with ``-`` (a command line would take
it for an option).
"""

from __future__ import annotations

import base64
import uuid

from ansible.plugins.lookup import LookupBase

DOCUMENTATION = """
name: kafka_random_uuid
short_description: a new Kafka (KRaft) cluster id
description:
  - 16 random bytes (a version 4 UUID) in URL-safe base64 without padding, as Kafka's
    Uuid.randomUuid makes them; never a reserved id, never starting with a dash.
"""

RETURN = """
_raw:
  description: one cluster id of 22 characters
  type: list
  elements: str
"""

# Kafka's Uuid.RESERVED: ZERO_UUID and ONE_UUID (METADATA_TOPIC_ID).
RESERVED = {bytes(16), bytes(15) + b"\x01"}


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def random_uuid() -> str:
    while True:
        raw = uuid.uuid4().bytes
        text = encode(raw)
        if raw not in RESERVED and not text.startswith("-"):
            return text


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [random_uuid()]
