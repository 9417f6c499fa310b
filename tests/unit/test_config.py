from pathlib import Path

import pytest

from casatwin import config
from casatwin.errors import UserError


def test_defaults_work_without_environment():
    settings = config.Settings.from_env({})
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.kafka.session_timeout_ms == 6000
    assert settings.general.data_dir == Path(".casatwin")


def test_environment_overrides_with_types():
    settings = config.Settings.from_env(
        {
            "CASATWIN_KAFKA_BOOTSTRAP": "broker:9093",
            "CASATWIN_SIMULATOR_TAXIS": "13000",
            "CASATWIN_SIMULATOR_REALTIME": "false",
            "CASATWIN_SIMULATOR_SPEEDER_SHARE": "0.1",
            "CASATWIN_GENERAL_DATA_DIR": "/var/lib/casatwin",
        }
    )
    assert settings.kafka.bootstrap == "broker:9093"
    assert settings.simulator.taxis == 13000
    assert settings.simulator.realtime is False
    assert settings.simulator.speeder_share == 0.1
    assert settings.general.data_dir == Path("/var/lib/casatwin")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CASATWIN_SIMULATOR_TAXIS", "many", "is not an integer"),
        ("CASATWIN_SIMULATOR_REALTIME", "perhaps", "is not true or false"),
        ("CASATWIN_SIMULATOR_STEP_S", "fast", "is not a number"),
    ],
)
def test_bad_values_say_which_variable_and_what_is_expected(variable, value, expected):
    with pytest.raises(UserError) as error:
        config.Settings.from_env({variable: value})
    assert variable in str(error.value)
    assert expected in str(error.value)


def test_unknown_variables_are_reported():
    assert config.unknown_variables({"CASATWIN_KAFKA_BOOTSRAP": "x", "HOME": "/"}) == [
        "CASATWIN_KAFKA_BOOTSRAP"
    ]


def test_as_env_round_trips():
    settings = config.Settings().replace(kafka={"bootstrap": "h:1"}, simulator={"taxis": 7})
    assert config.Settings.from_env(settings.as_env()) == settings


def test_reference_table_is_documented():
    """docs/configuration.md carries the table `casatwin config --markdown` prints."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert config.markdown_reference() in doc, (
        "docs/configuration.md is out of date: paste `casatwin config --markdown` into it"
    )
