"""The history API, login and the identity audit, against the real read model and MariaDB."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path

import aiohttp
import pytest
import yaml

from casatwin.readmodel import store
from casatwin_dashboard.app import create_app
from casatwin_dashboard.operators import OperatorStore, hash_password
from tests.dashboard_support import operator_command, running_dashboard, sample_infraction

pytestmark = pytest.mark.integration

T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z


@pytest.fixture(scope="module")
def operators_db(mariadb):
    """A migrated database: the operator and audit tables come with the migrations."""
    from tests.conftest import scratch_database

    return scratch_database(mariadb, "casatwin_dashboard_api")


@pytest.fixture
def api_settings(stack_settings, grid_pack, operators_db):
    return stack_settings.replace(
        city={"pack": str(grid_pack)},
        dashboard={"metrics_port": 0},
        mariadb={"database": operators_db.database},
    )


@pytest.fixture
def history(api_settings):
    """Seven infractions a minute apart, congestion windows and one incident's timeline."""
    db = store.connect(api_settings.mongo)
    store.ensure_indexes(db)
    kinds = ["speeding", "red_light", "illegal_parking"]
    infractions = [
        sample_infraction(
            i,
            infraction_id=f"inf-{i:02d}",
            type=kinds[i % 3],
            event_ts=T0 + i * 60_000,
            district="Anfa" if i % 2 else "Maârif",
            vehicle={"vehicle_id": f"TX-{i:05d}", "plate": f"{1000 + i}-A-6", "kind": "taxi_petit"},
            decision={**sample_infraction()["decision"], "class": 1 + i % 3},
        )
        for i in range(7)
    ]
    store.upsert_infractions(db, infractions)
    windows = [
        {
            "key": key, "scope": "segment", "window_start": T0 + k * 300_000,
            "window_end": T0 + (k + 1) * 300_000, "count": 10 + k, "avg_speed_kmh": 40.0 - k,
            "min_speed_kmh": 5.0, "max_speed_kmh": 70.0, "level": "moderate", "anomaly": False,
        }
        for key in ("s0001", "s0002")
        for k in range(4)
    ]  # fmt: skip
    store.upsert_congestion(db, windows)
    steps = ["assigned", "en_route", "on_scene", "closed"]
    events = [
        {"dispatch_id": "d-1", "infraction_id": "inf-03", "unit_id": "PU-SW-1", "status": s,
         "ts": T0 + 200_000 + steps.index(s) * 60_000, "eta_s": 240.0, "route": [[33.58, -7.63]]}
        for s in ["on_scene", "assigned", "closed", "en_route"]  # stored out of order
    ]  # fmt: skip
    store.record_dispatch_events(db, events)
    db.client.close()
    return infractions


def call(settings, requests):
    """Run (method, path, json) requests against the app; [(status, body, response)]."""

    async def scenario():
        out = []
        async with (
            running_dashboard(settings, read_bus=False) as (_, url),
            # unsafe: accept cookies from an IP address (127.0.0.1), as browsers do
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            for method, path, body in requests:
                async with http.request(method, url + path, json=body) as response:
                    data = await response.json() if response.status != 204 else None
                    out.append((response.status, data, response))
        return out

    return asyncio.run(scenario())


def get(settings, *paths):
    return [(status, body) for status, body, _ in call(settings, [("GET", p, None) for p in paths])]


def ids(body):
    return [i["infraction_id"] for i in body["items"]]


def test_filters(api_settings, history):
    results = get(
        api_settings,
        "/api/infractions",
        "/api/infractions?type=speeding",
        "/api/infractions?type=speeding,red_light&class=1",
        "/api/infractions?district=Anfa",
        f"/api/infractions?from={T0 + 120_000}&to={T0 + 240_000}",
        "/api/infractions?from=2026-01-01T10:02:00Z&to=2026-01-01T10:04:00Z",
    )
    assert all(status == 200 for status, _ in results)
    bodies = [body for _, body in results]
    assert ids(bodies[0]) == [f"inf-{i:02d}" for i in range(6, -1, -1)]  # newest first
    assert ids(bodies[1]) == ["inf-06", "inf-03", "inf-00"]
    assert ids(bodies[2]) == ["inf-06", "inf-03", "inf-00"]  # class 1 = i % 3 == 0
    assert ids(bodies[3]) == ["inf-05", "inf-03", "inf-01"]
    assert ids(bodies[4]) == ["inf-04", "inf-03", "inf-02"]
    assert ids(bodies[5]) == ids(bodies[4])
    for item in bodies[0]["items"]:  # what anyone sees identifies nobody
        assert item["driver"] == {"on_record": True} and "vehicle_id" not in item
        assert item["vehicle"]["plate"].endswith("•••") and "points_after" not in item["decision"]


def operator_login(settings, name: str) -> tuple[OperatorStore, dict[str, str]]:
    """An operator in MariaDB, and the body of its login request."""
    operators = OperatorStore(settings.mariadb)
    password = f"a good long password of {name}"
    operators.set_operator(name, hash_password(password), replace=True)
    return operators, {"name": name, "password": password}


def test_a_vehicle_search_is_for_operators_and_audited(api_settings, history):
    operators, login = operator_login(api_settings, "nadia")
    results = call(
        api_settings,
        [
            ("GET", "/api/infractions?plate=1004-a-6", None),
            ("POST", "/api/login", login),
            ("GET", "/api/infractions?plate=1004-a-6", None),
            ("GET", "/api/infractions?vehicle=TX-00005", None),
        ],
    )
    (refused, _, by_plate, by_vehicle) = (body for _, body, _ in results)
    assert [status for status, _, _ in results] == [401, 200, 200, 200]
    assert "for operators" in refused["error"] and "log in" in refused["hint"]
    assert ids(by_plate) == ["inf-04"] and ids(by_vehicle) == ["inf-05"]
    assert results[2][2].headers["Cache-Control"] == "no-store"
    views = [v for v in operators.views(10) if v["operator"] == "nadia"]
    assert [v["driver_ref"] for v in views] == ["vehicle:TX-00005", "plate:1004-a-6"]
    assert views[1]["request"] == "GET /api/infractions?plate=1004-a-6"


def test_pagination_walks_every_infraction_once(api_settings, history):
    async def scenario():
        seen, pages = [], 0
        async with (
            running_dashboard(api_settings, read_bus=False) as (_, url),
            aiohttp.ClientSession() as http,
        ):
            path = "/api/infractions?limit=3"
            while path and pages < 10:
                async with http.get(url + path) as response:
                    body = await response.json()
                pages += 1
                seen += ids(body)
                cursor = body["next_cursor"]
                path = f"/api/infractions?limit=3&cursor={cursor}" if cursor else None
        return seen, pages

    seen, pages = asyncio.run(scenario())
    assert pages == 3
    assert seen == [f"inf-{i:02d}" for i in range(6, -1, -1)]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("limit=0", "limit='0' is not a whole number from 1 to 500"),
        ("limit=many", "limit='many'"),
        ("type=speed", "type='speed' is not one of speeding, red_light, illegal_parking"),
        ("class=4", "class='4' is not one of 1, 2, 3"),
        ("from=yesterday", "from='yesterday' is not a time"),
        ("from=2000&to=1000", "from is after to"),
        ("cursor=garbage", "cursor is not one this API gave out"),
        ("frm=1", "unknown parameter 'frm'"),
        ("plate=<script>", "does not look like a plate"),
    ],
)
def test_invalid_parameters_say_what_is_wrong(api_settings, query, says):
    [(status, body)] = get(api_settings, f"/api/infractions?{query}")
    assert status == 400
    assert says in body["error"]
    assert body.get("hint")


def test_congestion_history_timeline_and_health(api_settings, history):
    results = get(
        api_settings,
        f"/api/congestion/s0001?from={T0}&to={T0 + 3_600_000}",
        f"/api/congestion/s0001?from={T0}&to={T0 + 3_600_000}&limit=2",
        f"/api/congestion/s0002?from={T0 + 600_000}&to={T0 + 3_600_000}&scope=segment",
        "/api/congestion/s0001?scope=road",
        "/api/incidents/inf-03/timeline",
        "/api/incidents/nothing/timeline",
        "/api/infractions/nothing",
        "/api/health",
        "/api/nothing",
    )
    (s1, all_windows), (s2, last_two), (s3, later), (s4, bad_scope) = results[:4]
    assert s1 == 200 and [w["window_start"] for w in all_windows["items"]] == [
        T0 + k * 300_000 for k in range(4)
    ]
    assert not all_windows["truncated"]
    assert s2 == 200 and last_two["truncated"]
    assert [w["window_start"] for w in last_two["items"]] == [T0 + 600_000, T0 + 900_000]
    assert s3 == 200 and len(later["items"]) == 2
    assert s4 == 400 and "scope" in bad_scope["error"]
    (s5, timeline), (s6, _), (s7, _), (s8, health), (s9, _) = results[4:]
    assert s5 == 200
    assert [e["status"] for e in timeline["events"]] == [
        "assigned",
        "en_route",
        "on_scene",
        "closed",
    ]
    assert timeline["infraction"]["identity"] == "masked"
    assert s6 == 404 and s7 == 404 and s9 == 404
    assert s8 == 200 and health["read_model"]["ok"] and health["city"]["name"] == "grid"


def test_openapi_documents_every_route(api_settings):
    [(status, spec)] = get(api_settings, "/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    app = create_app(api_settings, read_bus=False)
    routes = {
        r.resource.canonical
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/api/")
    }
    routes.discard("/api/{tail}")
    assert routes == set(spec["paths"])
    with open("dashboard/casatwin_dashboard/openapi.yaml") as f:
        assert yaml.safe_load(f) == spec


def add_operator(settings, name, password, *extra):
    return operator_command(settings, "add-operator", name, *extra, password=password)


def test_add_and_remove_operator_commands(api_settings):
    ok = add_operator(api_settings, "amina.b", "correct horse battery")
    assert ok.returncode == 0, ok.stderr
    again = add_operator(api_settings, "amina.b", "correct horse battery")
    assert again.returncode == 2 and "already exists" in again.stderr
    reset = add_operator(api_settings, "amina.b", "another long password", "--reset-password")
    assert reset.returncode == 0
    short = add_operator(api_settings, "karim", "short")
    assert short.returncode == 2 and "too short" in short.stderr
    unknown = operator_command(api_settings, "remove-operator", "karim")
    assert unknown.returncode == 2 and "no operator 'karim'" in unknown.stderr
    stored = OperatorStore(api_settings.mariadb).password_hash("amina.b")
    assert stored.startswith("scrypt$") and "another long password" not in stored


def charge_in_the_ledger(settings, infraction_id: str, vehicle_id: str, plate: str) -> None:
    """The registry's driver and vehicle, and the ledger's row that charged the driver."""
    from tests.conftest import query

    query(settings, "INSERT IGNORE INTO drivers (cin, first_name, last_name, birth_date,"
          " licence_no, licence_category, issue_date, probation_end, points, status) VALUES"
          " ('BE123456', 'Karim', 'Bennani', '1980-02-03', '06/00123456', 'B', '2001-01-01',"
          " '2003-01-01', 26, 'valid')")  # fmt: skip
    owner = "Said Alaoui (agrément)"
    query(settings, "INSERT IGNORE INTO vehicles (vehicle_id, plate, kind, owner_name)"
          " VALUES (%s, %s, 'taxi_petit', %s)", (vehicle_id, plate, owner))  # fmt: skip
    query(settings, "INSERT IGNORE INTO infractions (infraction_id, type, event_ts,"
          " detected_ts, recorded_ts, lat, lon, vehicle_id, plate, cin, offence_class, fine_mad,"
          " points, court, dispatch_required, decision) VALUES (%s, 'speeding', %s, %s, %s,"
          " 33.58, -7.62, %s, %s, 'BE123456', 1, 700, 4, 0, 1, '{}')",
          (infraction_id, T0, T0, T0, vehicle_id, plate))  # fmt: skip


def test_identities_are_masked_for_anonymous_and_shown_audited_to_an_operator(
    api_settings, history
):
    charge_in_the_ledger(api_settings.mariadb, "inf-02", "TX-00002", "1002-A-6")
    operators, login = operator_login(api_settings, "youssef")
    results = call(
        api_settings,
        [
            ("GET", "/api/infractions/inf-02", None),
            ("GET", "/api/infractions", None),
            ("GET", "/api/me", None),
            ("POST", "/api/login", login),
            ("GET", "/api/me", None),
            ("GET", "/api/infractions/inf-02", None),
            ("GET", "/api/infractions", None),
            ("POST", "/api/logout", None),
            ("GET", "/api/infractions/inf-02", None),
        ],
    )
    statuses = [status for status, _, _ in results]
    assert statuses == [200, 200, 200, 200, 200, 200, 200, 204, 200]
    anonymous, listing, nobody, logged_in, me, shown, operator_list, _, after = (
        body for _, body, _ in results
    )
    assert anonymous["identity"] == "masked" and anonymous["driver"] == {"on_record": True}
    assert "BE123456" not in str(anonymous) and "Bennani" not in str(anonymous)
    assert all(i["identity"] == "masked" for i in listing["items"])
    assert nobody == {"operator": None} and me == {"operator": "youssef"}
    assert logged_in == {"operator": "youssef"}
    cookie = results[3][2].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and re.search("SameSite=Strict", cookie, re.I)
    assert shown["identity"] == "shown"
    assert results[5][2].headers["Cache-Control"] == "no-store"
    assert shown["driver"] == {
        "ref": history[2]["driver"]["ref"], "cin": "BE123456", "name": "Karim Bennani",
        "licence_no": "06/00123456", "licence_category": "B", "points": 26,
        "licence_status": "valid",
    }  # fmt: skip
    assert shown["vehicle"]["owner"] == "Said Alaoui (agrément)"
    assert shown["decision"]["points_after"] == 26  # the operator sees the whole decision
    assert all(i["identity"] == "masked" for i in operator_list["items"])  # lists stay masked
    assert after["identity"] == "masked"
    views = operators.views(10)
    mine = [v for v in views if v["operator"] == "youssef" and v["infraction_id"] == "inf-02"]
    assert len(mine) == 1
    assert mine[0]["driver_ref"] == history[2]["driver"]["ref"]  # the pseudonym, no CIN
    assert mine[0]["request"] == "GET /api/infractions/inf-02"


def test_login_is_rate_limited(api_settings):
    settings = api_settings.replace(dashboard={"login_max_failures": 3})
    wrong = {"name": "nobody", "password": "not the password"}
    results = call(
        settings,
        [("POST", "/api/login", wrong)] * 4 + [("POST", "/api/login", {"name": "x"})],
    )
    statuses = [status for status, _, _ in results]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429 and "Retry-After" in results[3][2].headers
    assert statuses[4] == 400


SCRYPT_MIB = 128  # what one password check holds (128 × r × N bytes)


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def logins_at_once(settings, bodies):
    """POST every body to /api/login at once: (statuses, the process's resident memory
    just before, its peak while they were answered) in MiB."""

    async def scenario():
        async with (
            running_dashboard(settings, read_bus=False) as (_, url),
            aiohttp.ClientSession() as http,
        ):

            async def one(body):
                async with http.post(url + "/api/login", json=body) as response:
                    return response.status

            before, peak, done = resident_mib(), [0.0], threading.Event()

            def sample():
                while not done.wait(0.01):
                    peak[0] = max(peak[0], resident_mib())

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                statuses = await asyncio.gather(*(one(body) for body in bodies))
            finally:
                done.set()
                sampler.join()
            return statuses, before, peak[0]

    return asyncio.run(scenario())


def test_wrong_logins_sent_at_once_cannot_pass_the_limit_together(api_settings):
    settings = api_settings.replace(dashboard={"login_max_failures": 3})
    wrong = [{"name": "nobody", "password": f"guess number {i}"} for i in range(12)]
    statuses, _, _ = logins_at_once(settings, wrong)
    assert sorted(statuses) == [401] * 3 + [429] * 9


def test_passwords_of_logins_sent_at_once_are_checked_one_at_a_time(api_settings):
    # The limit out of the way: six attempts, each a 128 MiB scrypt, checked by the one
    # thread of the default settings.
    settings = api_settings.replace(dashboard={"login_max_failures": 100})
    wrong = [{"name": f"guesser{i}", "password": "not the password"} for i in range(6)]
    statuses, before, peak = logins_at_once(settings, wrong)
    assert statuses == [401] * 6
    assert peak - before < 1.5 * SCRYPT_MIB, f"{peak - before:.0f} MiB for six logins"


def test_logins_beyond_the_queue_are_refused_at_once_and_count_for_nothing(api_settings):
    # One thread checking, two waiting: of six logins sent at once, three are refused with
    # 503 at once (not queued behind the others' scrypt) and use none of the attempts.
    settings = api_settings.replace(
        dashboard={"login_max_failures": 100, "login_hash_threads": 1, "login_queue_max": 2}
    )
    wrong = [{"name": f"sprayer{i}", "password": "not the password"} for i in range(6)]
    statuses, _, _ = logins_at_once(settings, wrong)
    assert sorted(statuses) == [401] * 3 + [503] * 3


def test_an_unreachable_read_model_is_a_clear_503_not_a_crash(api_settings):
    from casatwin.devstack.servers import free_port

    settings = api_settings.replace(mongo={"url": f"mongodb://127.0.0.1:{free_port()}"})
    (status, body), (health_status, health) = get(settings, "/api/infractions", "/api/health")
    assert status == 503 and "read model (MongoDB) cannot be reached" in body["error"]
    assert health_status == 200 and health["status"] == "degraded"
    assert health["read_model"]["ok"] is False
