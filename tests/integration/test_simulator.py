"""The simulator against the real (embedded) broker: a scripted scenario end to end
through Kafka, a broker outage while it runs, and the command's errors."""

import itertools
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import orjson
import pytest

from casatwin.bus import consumer, messages, topics
from casatwin.bus.admin import ensure_topics
from casatwin.city import load, synthetic
from casatwin.city.geometry import points_in_polygon, project_on_segments
from casatwin.city.signals import RED
from casatwin.devstack.servers import free_port
from casatwin.simulator.service import SimulatorService
from casatwin.simulator.simulation import Simulation
from casatwin.simulator.traffic import Fleet, FleetConfig
from casatwin.waiting import wait_until
from tests.conftest import kafka_broker

pytestmark = pytest.mark.integration

START_MS = 1_600_000_000_000  # a clock of its own: these messages are told apart by ts
SCENARIO = """\
name: grid-broker
city: grid
traffic: {taxis: 150, speeder_share: 0, red_light_runner_share: 0, illegal_parker_share: 0}
duration_s: 200
events:
  - {type: speeding, vehicle: TX-00011, at: 20, road: Row 3, speed_kmh: 95, duration_s: 12}
  - {type: red_light, vehicle: TX-00012, at: 30, intersection: Row 2 x Column 2}
  - {type: illegal_parking, vehicle: TX-00013, at: 10, zone: Row 0 block 2, duration_s: 150}
"""


@pytest.fixture(scope="module")
def grid():
    return load.from_dict(synthetic.grid(5, 5))


@pytest.fixture
def pack_file(tmp_path, grid):
    path = tmp_path / "grid.json"
    load.write(grid.raw, path)
    return path


def cli_env(settings, pack_file, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASATWIN_")}
    env |= settings.as_env() | {
        "CASATWIN_CITY_PACK": str(pack_file),
        "CASATWIN_SIMULATOR_METRICS_PORT": "0",
    }
    return env | extra


def casatwin(args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "casatwin.cli", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_topic(settings, topic, stop_when, timeout_s=30.0, idle_s=2.0):
    """Messages of ``topic`` from the start, until ``stop_when(got)`` holds and nothing
    more arrived for ``idle_s`` (the partitions are read one after the other)."""
    reader = consumer.reader(settings.kafka, [topic], "test-simulator", start="earliest")
    got = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.messages(reader, timeout_s=0.5)
            got += [orjson.loads(m.value()) for m in batch]
            if batch:
                last = time.monotonic()
            elif time.monotonic() - last > idle_s and stop_when(got):
                break
    finally:
        reader.close()
    return got


def distance_along(grid, segments, lat, lon):
    """(offset along the chain of ``segments``, distance off it) of a point, in metres."""
    x, y = grid.projection.to_xy(lat, lon)
    nx, ny = grid.node_xy
    best = (np.inf, np.inf)
    before = 0.0
    for s in segments:
        a, b = grid.seg_from[s], grid.seg_to[s]
        t, off = project_on_segments(x, y, nx[a], ny[a], nx[b], ny[b])
        if off < best[1]:
            best = (before + float(t) * grid.seg_length_m[s], float(off))
        before += grid.seg_length_m[s]
    return best


def test_scenario_through_the_broker(broker_settings, grid, pack_file, tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    truth_file = tmp_path / "truth.json"
    env = cli_env(broker_settings, pack_file)
    args = ["simulator", "--afap", "--start-ms", str(START_MS), "--scenario", str(scenario)]
    result = casatwin([*args, "--stop-after-scenario", "--ground-truth", str(truth_file)], env)
    assert result.returncode == 0, result.stderr
    assert "simulator stopped" in result.stderr and "failed=0" in result.stderr
    truth = {r["type"]: r for r in orjson.loads(truth_file.read_bytes())}
    assert set(truth) == {"speeding", "red_light", "illegal_parking"}

    scripted = {"TX-00011", "TX-00012", "TX-00013"}
    end_ms = START_MS + 200_000
    fixes = read_topic(
        broker_settings,
        topics.TELEMETRY,
        lambda got: any(m["ts"] >= end_ms and m["vehicle_id"] == "TX-00013" for m in got),
    )
    mine = [m for m in fixes if START_MS < m["ts"] <= end_ms]
    for m in mine[:500]:
        messages.check(topics.TELEMETRY, m)
    by_vehicle = {
        v: sorted((m for m in mine if m["vehicle_id"] == v), key=lambda m: m["ts"])
        for v in scripted
    }
    assert len({m["vehicle_id"] for m in mine}) == 150 + 4  # taxis (scripted ones too), police

    # The speeder: on Row 3, at 95 km/h against a 60 km/h limit, for its 12 seconds.
    row3 = grid.road_segments("Row 3")
    speeding = [m for m in by_vehicle["TX-00011"] if m["ts"] <= START_MS + 32_000]
    assert len(speeding) >= 11
    for m in speeding:
        assert distance_along(grid, row3, m["lat"], m["lon"])[1] < 1.0
        assert m["speed_kmh"] > 60
    assert max(m["speed_kmh"] for m in speeding) == truth["speeding"]["measured"] == 95.0

    # The runner: between two fixes it crosses the stop line, and then the light is red.
    approach = grid.segment_index[truth["red_light"]["segment_id"]]
    stop_m = distance_along(
        grid, [approach], *grid.intersections[4].stop_lines[truth["red_light"]["segment_id"]]
    )[0]
    leaving = [
        s
        for s in grid.segments_from(int(grid.seg_to[approach]))
        if grid.seg_to[s] != grid.seg_from[approach]
    ]
    track = []
    for m in by_vehicle["TX-00012"]:
        chains = [distance_along(grid, [approach, s], m["lat"], m["lon"]) for s in leaving]
        along, off = min(chains, key=lambda c: c[1])
        if off < 1.0:
            track.append((m["ts"], along))
    (t1, d1), (t2, d2) = next((a, b) for a, b in itertools.pairwise(track) if a[1] < stop_m <= b[1])
    assert t2 - t1 == 1000  # two consecutive fixes, one on each side of the line
    crossed_s = (t1 + (stop_m - d1) / (d2 - d1) * (t2 - t1)) / 1000
    table = Fleet.create(grid, FleetConfig(taxis=0, police=False)).net.signals
    assert table.colour(approach, crossed_s) == RED
    assert abs(crossed_s * 1000 - truth["red_light"]["event_ts"]) < 200

    # The parker: standing still inside the zone for its 150 seconds.
    zone = grid.no_parking_zones[0]
    zx, zy = grid.projection.to_xy([p[0] for p in zone.polygon], [p[1] for p in zone.polygon])
    parked = [m for m in by_vehicle["TX-00013"] if m["ts"] <= START_MS + 159_000]
    assert len(parked) >= 145
    x, y = grid.projection.to_xy([m["lat"] for m in parked], [m["lon"] for m in parked])
    assert points_in_polygon(x, y, zx, zy).all()
    assert all(m["speed_kmh"] == 0 for m in parked)
    assert truth["illegal_parking"]["zone"] == zone.name

    # And the intersection sensors reported every 10 s with the plan's phases.
    readings = read_topic(
        broker_settings,
        topics.SENSORS_INTERSECTION,
        lambda got: sum(r["ts"] == end_ms for r in got) >= 9,
    )
    mine = [r for r in readings if START_MS < r["ts"] <= end_ms]
    assert len(mine) == 20 * len(grid.intersections)
    assert sum(r["vehicles"] for r in mine) > 0


AFTER_START_MS = 1_610_000_000_000  # its own clock too
AFTER_END_MS = AFTER_START_MS + 20_000
SHORT = """\
name: grid-short
city: grid
traffic: {taxis: 0}
duration_s: 20
events:
  - {type: illegal_parking, vehicle: TX-00013, at: 5, zone: Row 0 block 2, duration_s: 600}
"""


def first_fix(settings, predicate, timeout_s):
    """The first telemetry message (from the start of the topic) that ``predicate`` accepts."""
    reader = consumer.reader(settings.kafka, [topics.TELEMETRY], "test-after", start="earliest")
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for m in consumer.messages(reader, timeout_s=0.5):
                fix = orjson.loads(m.value())
                if predicate(fix):
                    return fix
    finally:
        reader.close()
    raise AssertionError(f"no such fix in {timeout_s} s")


def line_with(stream, needle):
    """Lines of ``stream`` until one holds ``needle`` (that one; None if the stream ends)."""
    for line in stream:
        if needle in line:
            return line
    return None


def test_after_its_scenario_the_simulator_goes_on_with_normal_traffic(
    broker_settings, pack_file, tmp_path
):
    """Issue 17: the scenario is over, the run is not. One line says so; the fixes go on, the
    scripted taxi's too (it was parked for 600 s, it drives off), until the simulator is
    stopped. The clock is the test's (--afap --start-ms)."""
    scenario = tmp_path / "short.yaml"
    scenario.write_text(SHORT)
    process = subprocess.Popen(
        [sys.executable, "-m", "casatwin.cli", "simulator", "--afap",
         "--start-ms", str(AFTER_START_MS), "--scenario", str(scenario)],
        env=cli_env(broker_settings, pack_file), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        said = line_with(process.stderr, "scenario over")
        assert said is not None, process.communicate(timeout=30)[1][-3000:]
        assert "normal traffic goes on until the twin is stopped" in said
        assert "taxis_released=1" in said and "sim_time=2021-01-07T06:13:40Z" in said
        moving = first_fix(
            broker_settings,
            lambda m: (
                m["vehicle_id"] == "TX-00013"
                and m["ts"] >= AFTER_END_MS + 30_000
                and m["speed_kmh"] > 0
            ),
            timeout_s=60,
        )
        assert moving["ts"] < AFTER_START_MS + 605_000  # before its parking would have ended
        assert process.poll() is None  # still running, a simulated minute after the end
    finally:
        process.terminate()
        rest = process.communicate(timeout=60)[1]
    assert process.returncode == 0, rest[-3000:]
    assert "simulator stopped" in rest and "Traceback" not in rest


def test_the_simulator_rides_out_a_broker_outage(base_settings, grid, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="casatwin")
    broker = kafka_broker(tmp_path / "kafka")
    broker.start()
    settings = base_settings.replace(
        kafka={**broker.client_fields, "message_timeout_ms": 8000},
        simulator={"taxis": 100, "metrics_port": 0},
    )
    ensure_topics(settings.kafka)
    sim = Simulation(grid, settings.simulator, int(time.time() * 1000))
    service = SimulatorService(settings, sim, realtime=True)
    service.start()
    stop = threading.Event()
    runner = threading.Thread(target=service.run_until, args=(stop,))
    runner.start()
    try:
        assert wait_until(lambda: service.producer.report.totals()["delivered"] > 200, 20)
        broker.kill()  # as a crash would
        down_at, steps_before = time.time(), sim.step
        # It keeps stepping in real time while the broker is away, and it notices the outage.
        assert wait_until(lambda: sim.step - steps_before >= 35, 60)
        assert wait_until(lambda: service.producer.report.totals()["failed"] > 0, 60)
        broker.start()  # the same log directory: the topics and their records are back
        back_at = time.time()
        fresh = read_topic(
            settings,
            topics.TELEMETRY,
            lambda got: any(m["ts"] > back_at * 1000 + 2000 for m in got),
            timeout_s=60,
        )
        assert any(m["ts"] > back_at * 1000 + 2000 for m in fresh)  # publishing resumed
    finally:
        stop.set()
        runner.join(30)
        totals = service.drain()
        broker.stop()
    assert not runner.is_alive()
    # every message is accounted for, and what could not be delivered was reported
    assert totals["sent"] == totals["delivered"] + totals["failed"] + totals["refused"]
    assert totals["failed"] > 0
    text = [r.getMessage() for r in caplog.records]
    assert any("broker unreachable" in t for t in text)
    assert any("messages could not be delivered" in t for t in text)
    assert down_at < back_at


# -- the command's errors ---------------------------------------------------------------------


def assert_one_clear_error(result, *phrases):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("casatwin: error: ")
    for phrase in phrases:
        assert phrase in first, first


def test_a_broken_scenario_file_is_one_clear_error(base_settings, pack_file, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "events:\n  - type: speeding\n    at: 3\n    road: Row 1\n    speed_kmh: fast\n"
        "    duration_s: 10\n"
    )
    result = casatwin(["simulator", "--scenario", str(bad)], cli_env(base_settings, pack_file))
    assert_one_clear_error(result, "bad.yaml:5: speed_kmh: should be a number")


def test_a_broken_city_pack_is_one_clear_error(base_settings, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "casatwin.city/1", "nodes": {}}')
    result = casatwin(["simulator", "--afap"], cli_env(base_settings, broken))
    assert_one_clear_error(result, "is not a valid city pack")


def test_an_unreachable_broker_is_one_clear_error(base_settings, pack_file):
    env = cli_env(base_settings, pack_file, CASATWIN_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    result = casatwin(["simulator", "--afap", "--seconds", "5"], env, timeout=60)
    assert_one_clear_error(result, "cannot reach the Kafka broker")


def test_start_ms_needs_a_simulated_clock(base_settings, pack_file):
    result = casatwin(["simulator", "--start-ms", "1"], cli_env(base_settings, pack_file))
    assert_one_clear_error(result, "--start-ms")


def test_the_benchmark_measures_all_three_rates(broker_settings, pack_file):
    from casatwin.simulator.bench import measure

    settings = broker_settings.replace(city={"pack": str(pack_file)})
    result = measure(settings, vehicles=200, seconds=0.5)
    assert result["vehicles"] == 200 + 4
    assert result["updates_per_s"] > 0 and result["publish_rate_per_s"] > 0
    assert result["raw_produce_per_s"] > 0 and result["undelivered"] == 0
    assert result["publish_vs_raw"] == pytest.approx(
        result["publish_rate_per_s"] / result["raw_produce_per_s"], rel=0.01
    )
    assert isinstance(result["fits_realtime"], bool)
