"""Game day (scenarios/gameday.yaml): the simulator plays the surge to Stade Mohammed V as
fast as it can, the real congestion query windows the telemetry, and the stadium's segments
go severe within minutes — on ``casatwin.congestion`` and in the read model — then clear.

To keep it lean the test publishes the fixes of the 12 segments nearest the stadium only,
every 5 s per vehicle (``telemetry_hz`` 0.2): ~20,000 messages for 25 simulated minutes.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from casatwin.bus import topics
from casatwin.city.geometry import haversine_m
from casatwin.city.load import load_city
from casatwin.devstack.vault import generate_secrets
from casatwin.readmodel.store import CONGESTION, connect
from casatwin.simulator import scenario as scenarios
from casatwin.simulator.simulation import Simulation
from casatwin.waiting import wait_until
from tests.drive import T0
from tests.processor_support import publish, read_topic, topic_ends

pytestmark = [pytest.mark.integration, pytest.mark.spark]

GAMEDAY = Path(__file__).parents[2] / "scenarios" / "gameday.yaml"
MIN = 60_000
SURGE_AT_MIN = 1


def stadium_telemetry(settings, near: int = 12) -> tuple[list[dict], dict[str, float]]:
    """The scenario's fixes on the segments nearest the stadium; and their free-flow speeds."""
    pack = load_city(settings.city)
    scenario = scenarios.load(GAMEDAY)
    sim = Simulation(pack, settings.simulator, T0, scenario)
    mark = pack.landmark("Stade Mohammed V")
    d = haversine_m(pack.node_lat[pack.seg_from], pack.node_lon[pack.seg_from], mark.lat, mark.lon)
    nearest = np.argsort(d)[:near]
    out = []
    while sim.elapsed_s < scenario.duration_s:
        fix = sim.tick().fix
        for k in np.flatnonzero(np.isin(fix.segment, nearest)).tolist():
            vehicle = sim.fleet.ids[int(fix.vehicles[k])]
            out.append(
                {
                    "vehicle_id": vehicle,
                    "kind": "taxi_petit" if vehicle.startswith("TX-") else "police",
                    "ts": fix.ts_ms,
                    "lat": round(float(fix.lat[k]), 6),
                    "lon": round(float(fix.lon[k]), 6),
                    "speed_kmh": round(float(fix.speed_kmh[k]), 1),
                    "heading_deg": round(float(fix.heading_deg[k]), 1),
                    "source": "sim",
                }
            )
    return out, {pack.segment_ids[s]: float(pack.seg_limit_kmh[s]) for s in nearest}


def test_gameday_stadium_goes_severe_then_clears(tmp_path, broker, mongo, spark):
    from casatwin.config import Settings
    from casatwin.processor.app import ProcessorApp
    from casatwin.processor.congestion import CongestionQuery

    settings = Settings().replace(
        general={"data_dir": tmp_path},
        kafka=broker.client_fields,
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        simulator={"telemetry_hz": 0.2},
    )
    generate_secrets(settings)
    fixes, stadium = stadium_telemetry(settings)
    starting = {
        **topic_ends(settings, topics.TELEMETRY),
        **topic_ends(settings, topics.SENSORS_INTERSECTION),
    }
    settings = settings.replace(
        processor={"starting_offsets": orjson.dumps(starting).decode()},
        congestion={"trigger_ms": 1000},
    )
    since = topic_ends(settings, topics.CONGESTION)
    app = ProcessorApp(settings, spark=spark, queries=[CongestionQuery(settings)])
    stop = threading.Event()
    app.start()
    thread = threading.Thread(target=app.run_until, args=(stop, 10.0))
    thread.start()
    try:
        publish(settings, fixes)
        db = connect(settings.mongo)
        last_start = fixes[-1]["ts"] // MIN * MIN
        assert wait_until(lambda: db[CONGESTION].find_one({"window_start": last_start}), 240, 2)
    finally:
        stop.set()
        thread.join(30)
        app.stop()

    windows = list(db[CONGESTION].find({"scope": "segment", "key": {"$in": list(stadium)}}))
    severe = [w for w in windows if w["level"] == "severe"]
    assert severe, "no stadium segment went severe"
    first_severe_min = (min(w["window_end"] for w in severe) - T0) / MIN
    assert first_severe_min <= SURGE_AT_MIN + 10, f"severe only after {first_severe_min} min"
    # Then it clears: the last full window (it ends before the last fix: a later one holds
    # only the scenario's final minutes) of every segment that went severe is calm.
    for key in {w["key"] for w in severe}:
        full = [w for w in windows if w["key"] == key and w["window_end"] <= fixes[-1]["ts"]]
        last = max(full, key=lambda w: w["window_start"])
        assert last["level"] in ("clear", "light"), last
    on_topic = read_topic(settings, topics.CONGESTION, since)
    assert any(m["key"] in stadium and m["level"] == "severe" for m in on_topic)
    print(f"{len(fixes)} fixes; first severe window ended {first_severe_min:.0f} min in")
