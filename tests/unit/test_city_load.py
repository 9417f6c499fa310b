"""load_city: the one way services get their city, with configurable speed limits."""

import numpy as np
import pytest

from casatwin.city import load
from casatwin.config import CitySettings, Settings
from casatwin.errors import UserError


def test_default_settings_keep_the_packs_limits():
    city = load.load_city(CitySettings())
    assert city is load.load("casablanca")  # nothing to override: the cached pack itself
    assert load.load_city(CitySettings()) is city


def test_limit_overrides_apply_per_class():
    settings = Settings.from_env(
        {"CASATWIN_CITY_LIMIT_CENTRE_KMH": "30", "CASATWIN_CITY_LIMIT_MOTORWAY_KMH": "80"}
    ).city
    base = load.load("casablanca")
    city = load.load_city(settings)
    classes = np.array(city.seg_class)
    assert set(city.seg_limit_kmh[classes == "centre"]) == {30.0}
    assert set(city.seg_limit_kmh[classes == "motorway"]) == {80.0}
    arterial = classes == "arterial"
    assert (city.seg_limit_kmh[arterial] == base.seg_limit_kmh[arterial]).all()
    # the raw pack (what the dashboard serves) says the same, and the bundled one is untouched
    assert {s["limit_kmh"] for s in city.raw["segments"] if s["class"] == "centre"} == {30.0}
    assert set(base.seg_limit_kmh[classes == "centre"]) == {40.0}
    # the free-flow travel times follow the new limits
    centre = np.flatnonzero(classes == "centre")[0]
    assert city.seg_free_flow_s[centre] == pytest.approx(base.seg_free_flow_s[centre] * 40 / 30)
    # same settings, same object: the simulator and the processor share one city
    assert load.load_city(settings) is city
    assert city.stats()["limits_kmh"]["centre"] == [30.0]


def test_a_limit_out_of_range_names_the_variable():
    with pytest.raises(UserError, match="CASATWIN_CITY_LIMIT_STREET_KMH"):
        load.load_city(CitySettings(limit_street_kmh=300))


def test_unknown_pack_is_a_user_error():
    with pytest.raises(UserError, match="no city pack named"):
        load.load_city(CitySettings(pack="atlantis"))


def test_load_is_cached():
    assert load.load("casablanca") is load.load("casablanca")
