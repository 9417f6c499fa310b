"""`casatwin dispatch status`, `off-duty` and `on-duty` as processes, on a real MariaDB."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from casatwin.city import load, synthetic
from casatwin.config import MariaDBSettings
from casatwin.dispatch import store
from casatwin.dispatch.nearest import Place
from casatwin.dispatch.planner import Incident
from casatwin.registry import db
from tests.conftest import query
from tests.dispatch_support import dispatch_db

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "casatwin.cli"]
UNITS = ["PU-NE-1", "PU-NE-2", "PU-SW-1", "PU-SW-2"]  # the grid's, in status order


@pytest.fixture
def units_db(mariadb) -> MariaDBSettings:
    """A database with the grid's units and two open incidents: INF-1 with PU-SW-1 (ETA
    42 s), INF-2 queued."""
    pack = load.from_dict(synthetic.grid())
    settings = dispatch_db(mariadb, pack)
    now_ms = int(time.time() * 1000)

    def incident(n: int) -> Incident:
        return Incident(f"INF-{n}", "red_light", now_ms, 33.59, -7.62, Place(n, 0.0), n)

    conn = db.open_connection(settings)
    try:
        store.assign(conn, incident(1), pack.segment_ids[1], "PU-SW-1", 42.0, now_ms)
        store.enqueue(conn, incident(2), pack.segment_ids[2])
    finally:
        conn.close()
    return settings


@pytest.fixture
def env(base_settings, units_db) -> dict[str, str]:
    """The environment of a casatwin process using ``units_db``."""
    return {**base_settings.replace(mariadb=units_db.__dict__).as_env(), "PATH": "/usr/bin:/bin"}


def casatwin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "dispatch", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def ok(env: dict[str, str], *args: str) -> str:
    done = casatwin(env, *args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout


def statuses(env: dict[str, str]) -> dict[str, tuple[bool, str]]:
    """Each unit's (on_duty, status), from `status --json`."""
    units = orjson.loads(ok(env, "status", "--json"))["units"]
    return {u["unit_id"]: (u["on_duty"], u["status"]) for u in units}


def test_status_lists_the_units_and_the_open_incidents(env):
    lines = ok(env, "status").splitlines()
    assert lines[0] == "4 units: 3 available, 0 off duty, 1 busy"
    table = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert list(table) == UNITS
    assert table["PU-SW-1"] == ["ps-sw", "assigned", "D-INF-1"]
    assert table["PU-NE-1"] == ["ps-ne", "available"]
    assert "2 open incidents (1 queued)" in lines
    incidents = lines[lines.index("2 open incidents (1 queued)") + 2 :]
    assert [line.split()[:4] for line in incidents] == [  # the queue first
        ["D-INF-2", "red_light", "2", "queued"],
        ["D-INF-1", "red_light", "1", "assigned"],
    ]
    assert incidents[1].split()[4] == "PU-SW-1"
    assert incidents[1].endswith(" 42s")  # the ETA

    body = orjson.loads(ok(env, "status", "--json"))
    assert [u["unit_id"] for u in body["units"]] == UNITS
    busy = next(u for u in body["units"] if u["unit_id"] == "PU-SW-1")
    assert busy["dispatch_id"] == "D-INF-1" and busy["busy_since_ms"] > 0
    assert [(i["dispatch_id"], i["status"], i["unit_id"]) for i in body["incidents"]] == [
        ("D-INF-2", "queued", None),
        ("D-INF-1", "assigned", "PU-SW-1"),
    ]


def test_units_go_off_duty_and_back(env, units_db):
    assert ok(env, "off-duty", "PU-NE-1", "PU-NE-2") == "PU-NE-1, PU-NE-2: now off duty\n"
    lines = ok(env, "status").splitlines()
    assert lines[0] == "4 units: 1 available, 2 off duty, 1 busy"
    assert [line.split()[2] for line in lines[2:4]] == ["off_duty", "off_duty"]  # PU-NE-*
    # A unit named twice, or already off duty, is said so once.
    out = ok(env, "off-duty", "PU-NE-1", "PU-SW-2", "PU-NE-1")
    assert out == "PU-SW-2: now off duty\nPU-NE-1: already off duty\n"
    # A busy unit taken off duty keeps its assignment; it just gets no new one.
    assert ok(env, "off-duty", "PU-SW-1") == "PU-SW-1: now off duty\n"
    assert statuses(env)["PU-SW-1"] == (False, "assigned")

    assert ok(env, "on-duty", "PU-NE-1") == "PU-NE-1: now on duty\n"
    assert statuses(env) == {
        "PU-NE-1": (True, "available"),
        "PU-NE-2": (False, "off_duty"),
        "PU-SW-1": (False, "assigned"),
        "PU-SW-2": (False, "off_duty"),
    }
    assert query(units_db, "SELECT unit_id FROM police_units WHERE on_duty ORDER BY unit_id") == [
        ("PU-NE-1",)
    ]


def test_an_unknown_unit_is_a_one_line_error_and_changes_nothing(env):
    before = statuses(env)
    for command in ("off-duty", "on-duty"):
        done = casatwin(env, command, "PU-NE-1", "PU-NOWHERE")
        assert done.returncode == 2
        assert done.stdout == ""
        error, *hints = done.stderr.splitlines()
        assert error == "casatwin: error: no police unit 'PU-NOWHERE' in the registry"
        assert all(line.startswith("casatwin: hint: ") for line in hints), done.stderr
        assert "Traceback" not in done.stderr
    assert statuses(env) == before  # PU-NE-1 was not taken off duty either
