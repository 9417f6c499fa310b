"""Nothing is marked done before the broker has it: each producer of the processor, with its
broker cut under it, neither loses what it sent nor marks it done; with the broker back,
the work done again delivers everything once.

"Marked done" is what the producer's caller does next: a Spark batch that succeeds (its
offsets are then committed), a row written in the read model. Each test kills the module's
broker (as a crash would), checks that the step fails and marks nothing, starts the broker
on the same log directory, and does the step again, as Spark re-runs a failed batch.
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from casatwin.bus import topics
from casatwin.bus.dlq import payload
from casatwin.bus.producer import DeliveryError
from casatwin.processor.congestion import CongestionSink
from casatwin.processor.decisions import RegistryDecider
from casatwin.processor.network import for_city
from casatwin.processor.sink import InfractionSink
from casatwin.processor.telemetry_source import TelemetryDecoder
from casatwin.readmodel.store import CONGESTION, connect
from tests.processor_support import (
    congestion_window,
    grid_city,
    kafka_batch,
    read_topic,
    topic_ends,
)

pytestmark = pytest.mark.integration

NOW = 1_800_000_000_000


@pytest.fixture
def settings(base_settings, cuttable_broker, mongo, mariadb, tmp_path):
    from tests.conftest import scratch_database

    database = scratch_database(mariadb, "casatwin_delivery")
    return base_settings.replace(
        # Messages the broker does not acknowledge within 2 s fail (30 s in production).
        kafka={**cuttable_broker.client_fields, "message_timeout_ms": 2000},
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb={"host": mariadb.host, "port": mariadb.port, "database": database.database},
        city=grid_city(tmp_path),
    )


def test_congestion_windows_are_indexed_only_once_the_broker_has_them(settings, cuttable_broker):
    sink = CongestionSink(settings)
    sink.start()
    db = connect(settings.mongo)
    key = f"S-{uuid.uuid4().hex[:6]}"
    since = topic_ends(settings, topics.CONGESTION)
    try:
        cuttable_broker.kill()
        with pytest.raises(DeliveryError, match=r"casatwin\.congestion"):
            sink.write([congestion_window(key, NOW, 19.0)])
        assert db[CONGESTION].count_documents({"key": key}) == 0  # not indexed: not done

        cuttable_broker.start()
        sink.write([congestion_window(key, NOW, 19.0)])  # Spark runs the batch again
    finally:
        sink.stop()
    published = [m for m in read_topic(settings, topics.CONGESTION, since) if m["key"] == key]
    assert [(m["window_start"], m["avg_speed_kmh"]) for m in published] == [(NOW, 19.0)]
    assert db[CONGESTION].count_documents({"key": key}) == 1


def test_a_bad_fix_fails_its_read_task_until_the_dlq_has_it(settings, cuttable_broker):
    marker = uuid.uuid4().hex
    bad = b'{"vehicle_id": "TX-' + marker.encode() + b'", "kind": "taxi_petit"'
    decoder = TelemetryDecoder(settings.kafka, settings.city, f"test-{marker}", True)
    since = topic_ends(settings, topics.DLQ)

    cuttable_broker.kill()
    with pytest.raises(DeliveryError, match=r"casatwin\.dlq"):
        list(decoder(iter([kafka_batch([bad])])))  # the task fails: its batch is not done

    cuttable_broker.start()
    assert list(decoder(iter([kafka_batch([bad])]))) == []  # no fix, one dead letter
    letters = [d for d in read_topic(settings, topics.DLQ, since) if marker.encode() in payload(d)]
    assert [(d["stage"], "not valid JSON" in d["error"]) for d in letters] == [
        ("processor.parse", True)
    ]


def undecidable(infraction_id: str) -> dict:
    """A detection the rule book cannot judge (a "speeding" at the limit): the DLQ's."""
    return {
        "infraction_id": infraction_id, "type": "speeding", "vehicle_id": "TX-00042",
        "kind": "taxi_petit", "event_ts": NOW, "evidence_ts": NOW + 5_000,
        "detected_ts": NOW + 5_100, "lat": 33.59, "lon": -7.62, "measured": 60.0,
        "limit": 60.0, "segment_id": "s0001",
    }  # fmt: skip


def test_an_infraction_set_aside_fails_its_batch_until_the_dlq_has_it(
    settings, cuttable_broker, tmp_path
):
    infraction_id = f"SPD-{uuid.uuid4().hex[:8]}"
    sink = InfractionSink(
        settings, tmp_path / "journal", RegistryDecider(settings), for_city(settings.city)
    )
    sink.start()
    since = topic_ends(settings, topics.DLQ)
    try:
        cuttable_broker.kill()
        with pytest.raises(DeliveryError, match=infraction_id):
            sink.write(7, [undecidable(infraction_id)])

        cuttable_broker.start()
        assert sink.write(7, [undecidable(infraction_id)]) == []  # the batch, again
    finally:
        sink.stop()
    letters = read_topic(settings, topics.DLQ, since)
    mine = [d for d in letters if infraction_id.encode() in payload(d)]
    assert [(d["stage"], d["error"].startswith("cannot decide")) for d in mine] == [
        ("processor.decide", True)
    ]
    assert orjson.loads(payload(mine[0]))["infraction_id"] == infraction_id
