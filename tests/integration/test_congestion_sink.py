"""The congestion sink against the real broker and read-model server: the anomaly flag
from the segment's history in the read model, and the retention of old windows."""

from __future__ import annotations

import uuid

import pytest

from casatwin.bus import topics
from casatwin.bus.admin import ensure_topics
from casatwin.config import Settings
from casatwin.processor.congestion import CongestionSink
from casatwin.processor.levels import DAY_MS, HOUR_MS
from casatwin.readmodel.store import CONGESTION, congestion_id, connect
from tests.processor_support import congestion_window, grid_city, read_topic, topic_ends

pytestmark = pytest.mark.integration

NOW = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS + 20 * 60_000  # 20 min past an hour


@pytest.fixture
def sink(tmp_path, broker, mongo):
    settings = Settings().replace(
        general={"data_dir": tmp_path},
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        city=grid_city(tmp_path),
        congestion={"baseline_min_windows": 10, "anomaly_ratio": 0.5, "retention_days": 35},
    )
    ensure_topics(settings.kafka)
    sink = CongestionSink(settings)
    sink.start()
    yield settings, sink, connect(settings.mongo)
    sink.stop()


def test_a_segment_far_slower_than_usual_at_this_hour_is_an_anomaly(sink):
    settings, sink, db = sink
    # Twelve earlier days at this hour: the usual speed is 40 km/h on S-A, 30 on S-B;
    # S-C has only five days of history, too few to judge.
    history = [congestion_window("S-A", NOW - d * DAY_MS, 40.0) for d in range(1, 13)]
    history += [congestion_window("S-B", NOW - d * DAY_MS, 30.0) for d in range(1, 13)]
    history += [congestion_window("S-C", NOW - d * DAY_MS, 40.0) for d in range(1, 6)]
    # Today's windows of the same hour are not the usual speed (counted, they would make it
    # 22.5 km/h, and 19 would not be an anomaly).
    history += [congestion_window("S-A", NOW - k * 60_000, 5.0) for k in range(1, 13)]
    db[CONGESTION].insert_many([{**w, "_id": congestion_id(w)} for w in history])
    since = topic_ends(settings, topics.CONGESTION)

    sink.write(
        [
            congestion_window("S-A", NOW, 19.0),
            congestion_window("S-B", NOW, 16.0),
            congestion_window("S-C", NOW, 5.0),
        ]
    )

    found = db[CONGESTION].find({"window_start": NOW, "key": {"$in": ["S-A", "S-B", "S-C"]}})
    flags = {d["key"]: d["anomaly"] for d in found}
    assert flags == {"S-A": True, "S-B": False, "S-C": False}  # 19 < 20; 16 ≥ 15; 5 days
    published = {m["key"]: m["anomaly"] for m in read_topic(settings, topics.CONGESTION, since)}
    assert published == flags


def test_windows_older_than_the_retention_are_removed(sink):
    _settings, sink, db = sink
    old = [congestion_window("S-OLD", NOW - d * DAY_MS, 40.0) for d in (34, 36, 40)]
    db[CONGESTION].insert_many([{**w, "_id": congestion_id(w)} for w in old])

    sink.write([congestion_window("S-OLD", NOW, 40.0)])

    found = db[CONGESTION].find({"key": "S-OLD"})
    kept = sorted((NOW - d["window_start"]) // DAY_MS for d in found)
    assert kept == [0, 34]  # 36 and 40 days before the newest window are gone
