"""``casatwin demo normal`` and ``gameday``: the twin playing traffic, and what to look at."""

from __future__ import annotations

import signal
import threading

from casatwin.config import Settings
from casatwin.demo.faults import start_processor
from casatwin.demo.twin import Twin

GUIDE = """
What to look at on the dashboard ({url}):
  - the map: every taxi moves once a second; red dots are vehicles flagged for speeding,
    orange ones for another infraction in the last minutes;
  - the infraction list: each one with its decision under loi 52-05 (class, fine, points,
    court), the driver masked; an operator (/operator) can see the identity, audited;
  - the header: vehicles live, infractions per minute, telemetry rate;
  - the kiosk view ({url}kiosk): what the control room's big screen shows.
  Logs of each service: {logs}
  Ctrl-C stops the demo.
"""


def play(settings: Settings, simulator_args: list[str]) -> None:
    """Dashboard, processor, then the simulator with ``simulator_args``; until it ends or
    Ctrl-C."""
    twin = Twin(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        twin.start("dashboard")
        start_processor(twin, print)
        twin.start("simulator", *simulator_args)
        url = f"http://127.0.0.1:{settings.dashboard.port}/"
        print(GUIDE.format(url=url, logs=twin.log_path("simulator").parent), flush=True)
        while not stop.wait(1.0) and twin.running("simulator"):
            pass
    finally:
        twin.stop_all()
