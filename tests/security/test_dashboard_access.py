"""The dashboard refuses who does not belong: ended sessions, other sites, too many screens,
plain HTTP where TLS is on, and a public health view that names nothing internal.

Real servers: the aiohttp application on a free port, MariaDB for the operators, the
MongoDB-wire server for the read model. Sessions' time is a clock the tests drive.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid

import aiohttp
import pytest

from casatwin.devstack.servers import free_port
from casatwin.errors import UserError
from casatwin_dashboard.operators import OperatorStore, hash_password
from casatwin_dashboard.service import tls_context
from tests.dashboard_support import operator_command, running_dashboard, until

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture(scope="module")
def operators_db(mariadb):
    from tests.conftest import scratch_database

    return scratch_database(mariadb, "casatwin_security_dashboard")


@pytest.fixture
def settings(base_settings, mongo, mariadb, operators_db):
    return base_settings.replace(
        mongo={"url": mongo.url, "database": f"casatwin_{uuid.uuid4().hex[:8]}"},
        mariadb={"host": mariadb.host, "port": mariadb.port, "database": operators_db.database},
        dashboard={"metrics_port": 0},
    )


def new_operator(settings, name: str) -> dict[str, str]:
    """An operator in MariaDB; the body of its login request."""
    password = f"the long password of {name}"
    OperatorStore(settings.mariadb).set_operator(name, hash_password(password), replace=True)
    return {"name": name, "password": password}


def browser() -> aiohttp.ClientSession:
    # unsafe: keep cookies of an IP address (127.0.0.1), as browsers do
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def me(http: aiohttp.ClientSession, url: str) -> str | None:
    async with http.get(url + "/api/me") as response:
        assert response.status == 200
        return (await response.json())["operator"]


async def login(http: aiohttp.ClientSession, url: str, body: dict[str, str]) -> int:
    async with http.post(url + "/api/login", json=body) as response:
        return response.status


# -- sessions ---------------------------------------------------------------------------------


def test_a_changed_password_or_a_removed_operator_ends_every_open_session(settings):
    body = new_operator(settings, "salma")
    new_password = "another long password for salma"

    async def scenario():
        async with (
            running_dashboard(settings, read_bus=False) as (_, url),
            browser() as desk,
            browser() as phone,
        ):
            assert await login(desk, url, body) == 200 and await login(phone, url, body) == 200
            assert await me(desk, url) == "salma" and await me(phone, url) == "salma"

            changed = await asyncio.to_thread(
                operator_command, settings, "add-operator", "salma", "--reset-password",
                password=new_password,
            )  # fmt: skip
            assert changed.returncode == 0, changed.stderr
            assert await me(desk, url) is None and await me(phone, url) is None
            async with desk.get(url + "/api/infractions?plate=12345-A-6") as response:
                assert response.status == 401  # the old session opens nothing any more
            assert await login(desk, url, body) == 401  # nor does the old password
            assert await login(desk, url, {**body, "password": new_password}) == 200
            assert await me(desk, url) == "salma"

            removed = await asyncio.to_thread(
                operator_command, settings, "remove-operator", "salma"
            )
            assert removed.returncode == 0, removed.stderr
            assert await me(desk, url) is None
            assert await login(desk, url, {**body, "password": new_password}) == 401

    asyncio.run(scenario())


def test_a_session_left_idle_ends(settings):
    body = new_operator(settings, "omar")
    now = [1_000_000.0]
    idle_settings = settings.replace(dashboard={"session_idle_s": 600, "session_ttl_s": 3600})

    async def scenario():
        async with (
            running_dashboard(idle_settings, read_bus=False, clock=lambda: now[0]) as (_, url),
            browser() as http,
        ):
            assert await login(http, url, body) == 200
            for _ in range(3):  # each request restarts the idle clock
                now[0] += 599
                assert await me(http, url) == "omar"
            now[0] += 600
            assert await me(http, url) is None
            now[0] += 1
            assert await me(http, url) is None  # ended, not revived

    asyncio.run(scenario())


# -- the WebSocket ----------------------------------------------------------------------------


def test_a_page_of_another_site_cannot_open_the_live_feed(settings):
    async def scenario():
        async with running_dashboard(settings, read_bus=False) as (_, url), browser() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url + "/ws?view=live", origin="https://evil.example")
            assert refused.value.status == 403
            async with http.ws_connect(url + "/ws?view=live", origin=url) as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["type"] == "hello"

    asyncio.run(scenario())


def test_screens_beyond_the_limit_are_refused_until_one_leaves(settings):
    limited = settings.replace(dashboard={"max_clients": 2})

    async def scenario():
        async with running_dashboard(limited, read_bus=False) as (dash, url), browser() as http:
            first = await http.ws_connect(url + "/ws")
            second = await http.ws_connect(url + "/ws")
            await until(lambda: len(dash.hub.fanout.clients) == 2, 10, "two clients")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url + "/ws")
            assert refused.value.status == 503
            assert refused.value.headers and "Retry-After" in refused.value.headers
            await first.close()
            await until(lambda: len(dash.hub.fanout.clients) == 1, 10, "one client left")
            third = await http.ws_connect(url + "/ws")
            assert (await third.receive_json(timeout=10))["type"] == "hello"
            await second.close()
            await third.close()

    asyncio.run(scenario())


# -- health -----------------------------------------------------------------------------------


def test_health_tells_anyone_whether_it_works_and_only_operators_what_failed(settings):
    port = free_port()  # nobody listens: the read model is unreachable
    broken = settings.replace(mongo={"url": f"mongodb://127.0.0.1:{port}"})
    body = new_operator(settings, "hamid")

    async def scenario():
        async with running_dashboard(broken, read_bus=False) as (_, url), browser() as http:
            async with http.get(url + "/api/health") as response:
                public_text = await response.text()
                public = await response.json()
            assert await login(http, url, body) == 200
            async with http.get(url + "/api/health") as response:
                private = await response.json()
                cache = response.headers["Cache-Control"]
        return public_text, public, private, cache

    public_text, public, private, cache = asyncio.run(scenario())
    assert public["status"] == "degraded" and public["read_model"] == {"ok": False}
    assert "details" not in public
    assert str(port) not in public_text and "127.0.0.1" not in public_text
    assert all("error" not in feed for feed in public["feeds"].values())
    assert str(port) in private["details"]["read_model_error"]
    assert cache == "no-store"


# -- TLS --------------------------------------------------------------------------------------


def test_over_tls_the_cookie_is_secure_hsts_is_sent_and_plain_http_gets_nothing(
    settings, certificates
):
    tls_settings = settings.replace(
        dashboard={"tls_cert_file": str(certificates.cert), "tls_key_file": str(certificates.key)}
    )
    server_tls = tls_context(str(certificates.cert), str(certificates.key))
    trusting = ssl.create_default_context(cafile=str(certificates.ca))
    body = new_operator(settings, "rachid")

    async def scenario():
        async with (
            running_dashboard(tls_settings, read_bus=False, tls=server_tls) as (_, url),
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=trusting),
                cookie_jar=aiohttp.CookieJar(unsafe=True),
            ) as http,
        ):
            async with http.get(url + "/") as response:
                assert response.status == 200
                assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
            async with http.post(url + "/api/login", json=body) as response:
                assert response.status == 200
                cookie = response.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert await me(http, url) == "rachid"
            async with browser() as stranger:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await stranger.get(url + "/")  # a certificate it does not trust
                with pytest.raises(aiohttp.ClientError):
                    await stranger.get(url.replace("https://", "http://") + "/api/health")

    asyncio.run(scenario())


def test_plain_http_sends_no_hsts_and_a_cookie_that_is_not_secure(settings):
    body = new_operator(settings, "leila")

    async def scenario():
        async with running_dashboard(settings, read_bus=False) as (_, url), browser() as http:
            async with http.get(url + "/") as response:
                assert "Strict-Transport-Security" not in response.headers
            async with http.post(url + "/api/login", json=body) as response:
                assert response.status == 200
                assert "Secure" not in response.headers["Set-Cookie"]

    asyncio.run(scenario())


def test_a_certificate_that_cannot_be_loaded_is_a_clear_error(tmp_path):
    with pytest.raises(UserError) as error:
        tls_context(str(tmp_path / "missing.pem"), str(tmp_path / "missing.key"))
    assert "missing.pem" in error.value.message
    assert "CASATWIN_DASHBOARD_TLS_CERT_FILE" in error.value.hint
    assert tls_context("", "") is None
