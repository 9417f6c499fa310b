"""The congestion query end to end: known traffic → windows checked against hand-computed
figures, a late fix inside the watermark updates its window, one beyond it is dropped and
counted. Spark local mode (the session's), the real broker and read-model server.

Hand computation for the window [T0, T0 + 5 min) (see tests/data/congestion_known_traffic.yaml;
every fix lies in the 5 windows starting T0 − 4 min … T0):

segment (limit 60)   vehicles 3; speeds 12 12 12 18 18 6 → avg 78/6 = 13.0, min 6, max 18;
                     ratio 13/60 = 0.217 < 0.25 → severe
+ late fix (36 km/h) vehicles 4; avg 114/7 = 16.29, max 36; ratio 0.271 → moderate
intersection         vehicles 7 + 5 = 12; queue 4, 12 → avg 8.0 (≥ 5: light), peak 12;
                     waits 30, 100 → avg 65.0, peak 100 (≥ 90: moderate) → moderate
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from casatwin.bus import topics
from casatwin.bus.producer import Producer, client_config
from casatwin.devstack.vault import generate_secrets
from casatwin.processor.network import RoadNetwork
from casatwin.readmodel.store import CONGESTION, connect
from casatwin.waiting import wait_until
from tests.drive import T0, path_along, position
from tests.processor_support import grid_city, publish, read_topic, topic_ends

pytestmark = [pytest.mark.integration, pytest.mark.spark]

KNOWN = Path(__file__).parent.parent / "data" / "congestion_known_traffic.yaml"
MIN = 60_000


def fix(net: RoadNetwork, seg: int, vehicle: str, t_s: float, along_m: float, speed: float) -> dict:
    lat, lon = position(net, seg, along_m)
    return {
        "vehicle_id": vehicle,
        "kind": "taxi_petit",
        "ts": int(T0 + t_s * 1000),
        "lat": lat,
        "lon": lon,
        "speed_kmh": float(speed),
        "heading_deg": round(float(net.pack.seg_bearing_deg[seg]), 1),
        "source": "sim",
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory, broker, mongo, spark):
    """Start the congestion query alone; yields (settings, net, query, db, since)."""
    from casatwin.config import Settings
    from casatwin.processor.app import ProcessorApp
    from casatwin.processor.congestion import CongestionQuery
    from casatwin.processor.network import for_city

    tmp = tmp_path_factory.mktemp("congestion")
    settings = Settings().replace(
        general={"data_dir": tmp},
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        city=grid_city(tmp),
        processor={"consumer_group": f"test-lag-{uuid.uuid4().hex[:8]}"},
    )
    generate_secrets(settings)
    # The intersection topic must exist for its end offsets to be read.
    producer = Producer(settings.kafka, "test-congestion-sensors")
    producer.send_json(topics.SENSORS_INTERSECTION, {"bootstrap": True})  # filtered out
    assert producer.flush(20) == 0
    starting = {
        **topic_ends(settings, topics.TELEMETRY),
        **topic_ends(settings, topics.SENSORS_INTERSECTION),
    }
    settings = settings.replace(
        processor={"starting_offsets": orjson.dumps(starting).decode()},
        congestion={"trigger_ms": 500},
    )
    since = topic_ends(settings, topics.CONGESTION)
    query = CongestionQuery(settings)
    app = ProcessorApp(settings, spark=spark, queries=[query])
    stop = threading.Event()
    app.start()
    thread = threading.Thread(target=app.run_until, args=(stop, 5.0))
    thread.start()
    try:
        yield settings, for_city(settings.city), query, connect(settings.mongo), since, producer
    finally:
        stop.set()
        thread.join(30)
        app.stop()
        producer.close()


def window(db, scope: str, key: str, start: int) -> dict | None:
    return db[CONGESTION].find_one({"_id": f"{scope}:{key}:{start}"})


def count(db, scope: str, key: str, start: int) -> int | None:
    """How many readings a window holds so far (None: not written yet)."""
    found = window(db, scope, key, start)
    return None if found is None else found["count"]


def test_known_traffic_late_and_dropped(run):
    settings, net, query, db, since, producer = run
    known = yaml.safe_load(KNOWN.read_text())
    seg = path_along(net, known["segment_road"])[0]
    key = str(net.segment_ids[seg])
    publish(
        settings,
        [fix(net, seg, f["vehicle"], f["t"], f["along_m"], f["speed_kmh"]) for f in known["fixes"]],
    )
    for r in known["intersection_readings"]:
        reading = {k: v for k, v in r.items() if k not in ("intersection", "t")}
        producer.send_json(
            topics.SENSORS_INTERSECTION,
            {"intersection_id": r["intersection"], "ts": T0 + r["t"] * 1000, "window_s": 30.0}
            | reading
            | {"phase": "A"},
        )
    assert producer.flush(20) == 0

    # Open windows are written as they fill: a micro-batch may have read only some of the
    # fixes. Wait for the whole of what was sent (a wrong count times out, then says which).
    wait_until(lambda: count(db, "intersection", "I-TEST", T0) == 12, 90)
    wait_until(lambda: count(db, "segment", key, T0) == 3, 30)
    assert window(db, "intersection", "I-TEST", T0) is not None
    seg_w = window(db, "segment", key, T0)
    assert (seg_w["count"], seg_w["avg_speed_kmh"]) == (3, 13.0)
    assert (seg_w["min_speed_kmh"], seg_w["max_speed_kmh"]) == (6.0, 18.0)
    assert seg_w["free_flow_kmh"] == 60.0 and seg_w["speed_ratio"] == pytest.approx(0.217)
    assert seg_w["level"] == "severe" and seg_w["anomaly"] is False
    assert seg_w["window_end"] == T0 + 5 * MIN
    # The fixes lie in the five windows that start T0 − 4 min … T0, all alike.
    starts = sorted(d["window_start"] for d in db[CONGESTION].find({"key": key}))
    assert starts == [T0 + k * MIN for k in range(-4, 1)]
    crossing = window(db, "intersection", "I-TEST", T0)
    assert crossing["count"] == 12
    assert (crossing["avg_queue"], crossing["peak_queue"]) == (8.0, 12)
    assert (crossing["avg_wait_s"], crossing["peak_wait_s"]) == (65.0, 100.0)
    assert crossing["level"] == "moderate"

    # Event time moves to T0 + 8 min (watermark T0 − 2 min): T0's window is still open.
    far = path_along(net, known["segment_road"])[2]
    publish(settings, [fix(net, far, "CT-9", 8 * 60, 50, 40)])
    assert wait_until(lambda: window(db, "segment", str(net.segment_ids[far]), T0 + 4 * MIN), 30)
    publish(settings, [fix(net, seg, "CT-4", 40, 120, 36)])  # 7 min 20 s late: inside
    assert wait_until(lambda: window(db, "segment", key, T0)["count"] == 4, 30)
    seg_w = window(db, "segment", key, T0)
    assert seg_w["avg_speed_kmh"] == round(114 / 7, 2) and seg_w["max_speed_kmh"] == 36.0
    assert seg_w["level"] == "moderate"

    # Event time moves to T0 + 30 min (watermark T0 + 20 min): T0's windows are closed.
    query.late_rows()
    publish(settings, [fix(net, far, "CT-9", 30 * 60, 50, 40)])
    far_key = str(net.segment_ids[far])
    assert wait_until(lambda: window(db, "segment", far_key, T0 + 30 * MIN), 30)
    # In one batch: a fix 29 min late (beyond the watermark) and a marker on time.
    publish(
        settings, [fix(net, seg, "CT-5", 50, 150, 6), fix(net, far, "CT-8", 30 * 60 + 5, 60, 40)]
    )
    assert wait_until(lambda: window(db, "segment", far_key, T0 + 30 * MIN)["count"] == 2, 30)
    assert window(db, "segment", key, T0)["count"] == 4  # unchanged
    dropped: list[int] = []
    assert wait_until(lambda: dropped.append(query.late_rows()) or sum(dropped) > 0, 20)
    # One dropped row per window the fix would have entered (T0 − 4 min … T0).
    assert sum(dropped) == 5

    # The topic carries the same windows (the latest message of a window is its state).
    latest = {}
    for m in read_topic(settings, topics.CONGESTION, since):
        latest[(m["scope"], m["key"], m["window_start"])] = m
    assert latest[("segment", key, T0)]["count"] == 4
    assert latest[("intersection", "I-TEST", T0)]["level"] == "moderate"


def test_the_query_reports_its_progress_to_a_group_of_its_own(run):
    """The congestion query's processed offsets go to ``<prefix>-congestion``: in a group
    shared with the infractions query they would stand for that query's progress too (the
    faults demo stopped the broker on this, while the infractions query was still waiting
    for MariaDB, and lost what it had not read)."""
    import confluent_kafka

    settings, net = run[:2]
    seg = path_along(net, yaml.safe_load(KNOWN.read_text())["segment_road"])[1]
    publish(settings, [fix(net, seg, "CT-LAG", 45 * 60, 40, 30)])
    ends = topic_ends(settings, topics.TELEMETRY)[topics.TELEMETRY]
    prefix = settings.processor.consumer_group
    partitions = [confluent_kafka.TopicPartition(topics.TELEMETRY, int(p)) for p in ends]

    def committed(group: str) -> dict[str, int]:
        check = confluent_kafka.Consumer(
            client_config(settings.kafka, "test-committed") | {"group.id": group}
        )
        try:
            return {str(tp.partition): tp.offset for tp in check.committed(partitions, 10)}
        finally:
            check.close()

    assert wait_until(lambda: committed(f"{prefix}-congestion") == ends, 30)
    assert all(offset < 0 for offset in committed(f"{prefix}-infractions").values())
    assert all(offset < 0 for offset in committed(prefix).values())
