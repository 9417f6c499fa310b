"""The kiosk in headless Chromium (Debian's): offline, vehicles on the map, a screenshot."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from casatwin.bus import topics
from casatwin.bus.producer import Producer
from casatwin_dashboard.browser import Chromium, decode_png
from casatwin_dashboard.loadgen import FleetFeeder, SyntheticFleet
from tests.dashboard_support import running_dashboard, sample_infraction, until

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PETIT_RED = np.array([0xFF, 0x3B, 0x30])
GRAND_CREAM = np.array([0xF3, 0xE5, 0xC0])
ROAD_ARTERIAL = np.array([0x2E, 0x3D, 0x5C])


def near(image, colour, tolerance=24):
    return int((np.abs(image[..., :3].astype(int) - colour).max(axis=-1) <= tolerance).sum())


def test_kiosk_works_offline_and_shows_the_city_moving(stack_settings, grid_pack, artifacts_dir):
    settings = stack_settings.replace(city={"pack": str(grid_pack)}, dashboard={"metrics_port": 0})

    async def scenario():
        async with running_dashboard(settings) as (dash, url):
            feeder = FleetFeeder(settings.kafka, SyntheticFleet(dash.pack, 2000), hz=1.0).start()
            try:
                await until(lambda: dash.hub.positions.count_alive() >= 2000, 20, "fleet seen")
                async with Chromium(1600, 900) as browser:
                    await browser.navigate(f"{url}/kiosk")
                    await browser.wait_for("window.__casatwin?.vehiclesOnMap() >= 2000", 60)
                    producer = Producer(settings.kafka, "test-browser")
                    infraction = sample_infraction(lat=33.5850, lon=-7.6250)
                    producer.send_json(topics.INFRACTIONS, infraction, key="TX-00042")
                    producer.flush(10)
                    await browser.wait_for(  # the kiosk is public: the plate masked
                        "document.querySelector('#feed').textContent.includes('12•••')", 30
                    )
                    before = await browser.evaluate("window.__casatwin.state.frames")
                    await asyncio.sleep(2)
                    after = await browser.evaluate("window.__casatwin.state.frames")
                    page = await browser.evaluate(
                        "({lang: document.documentElement.lang,"
                        " live: document.querySelector('#conn-text').textContent,"
                        " vehicles: document.querySelector('#kpi-vehicles').textContent,"
                        " feed: document.querySelector('#feed').textContent})"
                    )
                    png = await browser.screenshot(artifacts_dir / "kiosk.png")
                    # The kiosk reconnects by itself when the server drops it (a restart).
                    await dash.hub.fanout.close_all(1012, "restarting")
                    await browser.wait_for("!window.__casatwin.state.connected", 10)
                    await browser.wait_for("window.__casatwin.state.connected", 20)
                    reconnected = await browser.evaluate("window.__casatwin.state.frames")
                    await browser.wait_for(f"window.__casatwin.state.frames > {reconnected}", 20)
                    return url, browser.requests, browser.exceptions, before, after, page, png
            finally:
                feeder.stop()

    url, requests, exceptions, before, after, page, png = asyncio.run(scenario())
    # Offline: every request went to the dashboard itself (no CDN, no tiles, no fonts).
    assert requests and all(r.startswith(url) or r.startswith("data:") for r in requests), requests
    assert not exceptions
    assert after > before, "positions frames stopped arriving"
    assert page["lang"] == "fr" and page["live"] == "En direct"
    assert "Excès de vitesse" in page["feed"] and "Classe 1" in page["feed"]
    assert "12345-A-6" not in page["feed"]
    image = decode_png(png)
    assert image.shape[:2] == (900, 1600)
    map_area = image[60:, :1100]
    assert near(map_area, PETIT_RED) > 300, "no petits taxis drawn"
    assert near(map_area, GRAND_CREAM) > 100, "no grands taxis drawn"
    assert near(map_area, ROAD_ARTERIAL, 10) > 2000, "no roads drawn"
    # Not a blank or error page: dark theme, a few bright pixels, many distinct colours.
    assert (image[..., :3].mean(axis=-1) > 230).mean() < 0.05
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 200
