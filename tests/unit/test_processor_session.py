"""The processor's Spark driver: spark.authenticate with the cluster's secret from a file,
never on the command line PySpark builds for spark-submit."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from casatwin.config import Settings
from casatwin.errors import UserError
from casatwin.processor.session import spark_config, submit_args

SECRET = "s3cret-of-the-cluster-0123456789abcdef"


def _settings(auth_file: str = "") -> Settings:
    return Settings().replace(processor={"spark_auth_file": auth_file})


def _auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "spark-auth.properties"
    path.write_text(f"spark.authenticate true\nspark.authenticate.secret {SECRET}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _no_connector_jars(monkeypatch):
    """spark_config without the Kafka connector's jars (not these tests' concern)."""
    monkeypatch.setattr("casatwin.processor.session.kafka_connector_jars", lambda _: [])


def test_without_a_secret_file_nothing_changes():
    """`make run`'s local[*]: no authentication, PySpark's own default arguments."""
    settings = _settings()
    assert submit_args(settings, None) == "pyspark-shell"
    assert submit_args(settings, "--conf a=b pyspark-shell") == "--conf a=b pyspark-shell"
    assert "spark.authenticate" not in spark_config(settings, "local[2]")


def test_the_secret_goes_in_a_properties_file_never_in_the_arguments(tmp_path):
    path = _auth_file(tmp_path)
    settings = _settings(str(path))
    role_args = "--conf spark.driver.port=7079 pyspark-shell"  # as the role's service.env
    args = submit_args(settings, role_args)
    assert shlex.split(args) == ["--properties-file", str(path), *shlex.split(role_args)]
    assert args.endswith("pyspark-shell")  # PySpark's marker stays last
    config = spark_config(settings, "spark://master:7077")
    assert config["spark.authenticate"] == "true"
    # Every builder value becomes `--conf key=value` on spark-submit's command line.
    everything = " ".join([args, *config.keys(), *config.values()])
    assert SECRET not in everything
    assert "spark.authenticate.secret" not in config


def test_a_second_session_of_the_process_does_not_add_the_file_twice(tmp_path):
    settings = _settings(str(_auth_file(tmp_path)))
    once = submit_args(settings, None)
    assert submit_args(settings, once) == once


def test_an_unreadable_or_conflicting_file_stops_the_processor_with_its_cause(tmp_path):
    with pytest.raises(UserError, match="CASATWIN_PROCESSOR_SPARK_AUTH_FILE"):
        submit_args(_settings(str(tmp_path / "missing.properties")), None)
    settings = _settings(str(_auth_file(tmp_path)))
    with pytest.raises(UserError, match="already names a --properties-file"):
        submit_args(settings, "--properties-file /etc/other.conf pyspark-shell")
