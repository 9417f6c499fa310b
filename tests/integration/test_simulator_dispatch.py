"""The simulator's dispatch bridge against the real broker: an order is committed only once
the simulator has taken it into its fleet, and a unit's report the broker never
acknowledged is sent again, unchanged, until it is (issue 15, item 7)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from casatwin.bus.consumer import read_to_end, reader
from casatwin.bus.producer import Producer, client_config
from casatwin.city import load, synthetic
from casatwin.city.model import CityPack
from casatwin.config import Settings
from casatwin.devstack.servers import free_port
from casatwin.simulator.dispatching import DispatchBridge
from casatwin.simulator.service import SimulatorService
from casatwin.simulator.simulation import Simulation
from casatwin.waiting import wait_until
from tests.dispatch_support import committed, create_topics, read

pytestmark = pytest.mark.integration

PARTITIONS = 2
# Bounds of the waits: generous, as the broker may be slow on a busy machine; each wait
# ends as soon as its condition holds.
WAIT_S = 90.0


@pytest.fixture(scope="module")
def pack() -> CityPack:
    return load.from_dict(synthetic.grid())


@pytest.fixture
def running(broker_settings: Settings, pack: CityPack) -> Iterator[Any]:
    """A started simulator (stepped by the test) and its bridge, reading a fresh topic
    from its start: (settings, topic, group, service, bridge)."""
    settings = broker_settings.replace(simulator={"taxis": 10, "metrics_port": 0})
    (topic,) = create_topics(settings, PARTITIONS, 1)
    group = f"sim-dispatch-{uuid.uuid4().hex[:6]}"
    start_at_the_beginning(settings, group, topic)
    sim = Simulation(pack, settings.simulator, int(time.time() * 1000))
    service = SimulatorService(settings, sim, realtime=False)
    service.start()
    bridge = DispatchBridge(service, topic=topic, group_id=group)
    bridge.start()
    try:
        yield settings, topic, group, service, bridge
    finally:
        bridge.stop()
        service.drain()


def start_at_the_beginning(settings: Settings, group: str, topic: str) -> None:
    """Commit offset 0 for ``group``: it reads what is published before it has joined."""
    consumer = Consumer(client_config(settings.kafka, "test-start") | {"group.id": group})
    offsets = [TopicPartition(topic, p, 0) for p in range(PARTITIONS)]

    def commit() -> bool:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            return True
        except KafkaException:  # a topic just created: not known everywhere yet
            return False

    try:
        assert wait_until(commit, WAIT_S)
    finally:
        consumer.close()


def run_for(service: SimulatorService, seconds: float = 1.0) -> None:
    """Step the simulation ``seconds`` on this thread (the bridge's commands are applied)."""
    service.seconds = service.sim.elapsed_s + seconds
    service.run_until(threading.Event())


def steps_until(service: SimulatorService, condition: Callable[[], Any], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run_for(service)
        if condition():
            return True
    return False


def order(service: SimulatorService, n: int, unit: str | None = None) -> dict[str, Any]:
    """An ``assigned`` order sending a unit (the first, unless told) a little way along
    the first unit's segment."""
    fleet = service.sim.fleet
    here = fleet.units()[0]
    unit = unit or here.unit_id
    return {
        "dispatch_id": f"D-INF-{n:04d}",
        "infraction_id": f"INF-{n:04d}",
        "unit_id": unit,
        "status": "assigned",
        "ts": service.sim.t_ms,
        "segments": [here.segment_id],
        "target_offset_m": round(float(fleet.net.pack.seg_length_m[here.segment]) * 0.75, 1),
        "handling_s": 5.0,
        "incident_ts": service.sim.t_ms,
    }


def publish(settings: Settings, topic: str, messages: list[tuple[bytes, str]]) -> None:
    producer = Producer(settings.kafka, "test-orders")
    try:
        for value, key in messages:
            producer.send(topic, value, key=key)
        assert producer.flush(15) == 0
    finally:
        producer.close()


def statuses(settings: Settings, topic: str) -> list[str]:
    """The statuses of the dispatch events on ``topic`` (what is not JSON left out)."""
    consumer = reader(settings.kafka, [topic], "test-statuses", start="earliest")
    try:
        values = [m.value() for m in read_to_end(consumer, 15)]
    finally:
        consumer.close()
    return [orjson.loads(v)["status"] for v in values if v.startswith(b"{")]


def test_an_order_is_committed_only_once_the_simulator_has_taken_it(running):
    settings, topic, group, service, bridge = running
    sent = order(service, 1)
    elsewhere = order(service, 2, unit="PU-ELSEWHERE-1")  # another simulation's unit
    publish(settings, topic, [
        (b"not json", "x"),  # logged and skipped: taken as it is
        (orjson.dumps(elsewhere), elsewhere["unit_id"]),
        (orjson.dumps(sent), sent["unit_id"]),
        (orjson.dumps(sent), sent["unit_id"]),  # a repeat: ignored, so taken
    ])  # fmt: skip
    # (Not the consumer's positions: asked from this thread, they wait behind its polls.)
    assert wait_until(lambda: bridge.messages_read >= 4, WAIT_S)
    # Read and handed to the simulator, which has not stepped since: nothing is committed.
    assert not wait_until(lambda: committed(settings, group, topic) > 0, 3)
    assert not bridge.jobs
    # It steps (again, should a rebalance have sent the bridge back to read them again).
    assert steps_until(service, lambda: committed(settings, group, topic) >= 4, WAIT_S)
    assert sent["dispatch_id"] in bridge.jobs.keys() | bridge.closed
    assert wait_until(lambda: bridge.reports_waiting == 0, WAIT_S)
    assert statuses(settings, topic).count("en_route") == 1  # the unit was sent once


class RecordingProducer(Producer):
    """A producer that remembers what it was given to send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.given: list[dict[str, Any]] = []

    def send(self, topic: str, value: bytes, *args: Any, **kwargs: Any) -> bool:
        self.given.append(orjson.loads(value))
        return super().send(topic, value, *args, **kwargs)


def cut_off_producer(settings: Settings) -> RecordingProducer:
    """A producer whose broker is away longer than its message timeout: what it publishes
    fails, as after kafka.message_timeout_ms with the broker down."""
    return RecordingProducer(settings.kafka, "bridge-cut-off", **{
        "bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 1000,
    })  # fmt: skip


def test_a_report_the_broker_never_acknowledged_is_sent_again_until_it_is(running, caplog):
    caplog.set_level(logging.INFO, logger="casatwin.simulator.dispatch")
    settings, topic, _, service, bridge = running
    real, cut_off = bridge._producer, cut_off_producer(settings)
    bridge._producer = cut_off
    sent = order(service, 3)
    try:
        publish(settings, topic, [(orjson.dumps(sent), sent["unit_id"])])
        assert wait_until(lambda: bridge.messages_read >= 1, WAIT_S)
        # The unit sets off, arrives and closes while the broker acknowledges nothing.
        assert steps_until(service, lambda: sent["dispatch_id"] in bridge.closed, WAIT_S)
        assert wait_until(lambda: cut_off.lost() >= 2, WAIT_S)  # en_route failed, again and again
        given = list(cut_off.given)
        assert [g["status"] for g in given] == ["en_route"] * len(given)  # the unit's first
        assert all(g == given[0] for g in given)  # the same event each time, ts included
        assert bridge.reports_waiting == 3
        assert [e["status"] for e in read(settings, topic)] == ["assigned"]
        # The broker answers again.
        bridge._producer = real
        cut_off.flush(5)  # the attempt still out on the cut-off producer fails: sent again
        assert wait_until(lambda: bridge.reports_waiting == 0, WAIT_S)
    finally:
        bridge._producer = real
        cut_off.close(1)
    events = read(settings, topic)
    assert [e["status"] for e in events] == ["assigned", "en_route", "on_scene", "closed"]
    en_route, on_scene, closed = events[1:]
    assert en_route == given[0]
    assert en_route["ts"] <= on_scene["ts"] <= closed["ts"] - 5000  # when they happened
    logged = [r.getMessage() for r in caplog.records]
    assert any("unit reports not acknowledged by the broker" in m for m in logged)
    assert any("unit reports acknowledged by the broker again" in m for m in logged)
