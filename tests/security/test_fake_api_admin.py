"""The fake traffic API's fault switch breaks the sensor feed on purpose: only a holder of
its admin token may use it. The real server on loopback."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from casatwin.city import load, synthetic
from casatwin.config import FakeApiSettings
from casatwin.gateway import traffic
from casatwin.gateway.fakeapi import FakeTrafficApi, load_admin_token

pytestmark = pytest.mark.security

PROFILES = traffic.profiles(load.from_dict(synthetic.grid(3, 3, motorway=True)), seed=3)


def test_only_the_admin_token_switches_faults(base_settings):
    token = load_admin_token(base_settings)  # the file the devstack generated

    async def scenario():
        api = FakeTrafficApi(PROFILES, FakeApiSettings(port=0), admin_token=token)
        await api.start()
        answers = []
        try:
            async with aiohttp.ClientSession() as http:
                for headers in (
                    {},
                    {"Authorization": "Bearer not-the-token"},
                    {"Authorization": token},  # not a bearer credential
                    {"Authorization": f"Bearer {token}"},
                ):
                    body = {"mode": "http500"}
                    async with http.post(api.admin_url, json=body, headers=headers) as response:
                        answers.append((response.status, await response.json()))
                async with http.get(api.admin_url) as response:
                    shown = await response.json()  # reading the mode needs no token
        finally:
            await api.stop()
        return answers, shown

    answers, shown = asyncio.run(scenario())
    refused = answers[:3]
    assert [status for status, _ in refused] == [401, 401, 401]
    assert all("admin token" in body["error"] and body["hint"] for _, body in refused)
    assert answers[3] == (200, {"mode": "http500", "remaining": None})
    assert shown["mode"] == "http500"


def test_a_fake_api_without_its_token_file_says_where_it_comes_from(base_settings, tmp_path):
    from casatwin.errors import UserError

    missing = base_settings.replace(fake_api={"admin_token_file": str(tmp_path / "none")})
    with pytest.raises(UserError) as error:
        load_admin_token(missing)
    assert "admin token is missing" in error.value.message and "vault" in error.value.hint
