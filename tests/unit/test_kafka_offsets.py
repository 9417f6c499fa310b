"""The processor's side of Spark's Kafka connector, without a broker or Spark: offsets
(pure), the connector's options, and the connector's jars checked against pyspark."""

import re
import shutil

import orjson
import pyspark
import pytest

from casatwin.bus import ranges
from casatwin.config import Settings
from casatwin.devstack.jars import pom
from casatwin.errors import UserError
from casatwin.processor import kafka_offsets as ko
from casatwin.processor.source import kafka_options, lag_group
from casatwin.processor.telemetry_source import decoded_rows

T = "casatwin.telemetry"
S = "casatwin.sensors.intersection"


def partitions_of(counts):
    def partitions(topics):
        return [(t, p) for t in topics for p in range(counts.get(t, 0))]

    return partitions


def test_starting_offsets_spec():
    assert ko.parse_starting_offsets("earliest") == "earliest"
    assert ko.parse_starting_offsets(" LATEST ") == "latest"
    assert ko.parse_starting_offsets('{"t": {"0": 5, "1": -2}}') == {"t": {"0": 5, "1": -2}}
    for bad in ("newest", '{"t": {"x": 1}}', '{"t": {"0": -3}}', '{"t": 4}', "[1]"):
        with pytest.raises(ko.OffsetSpecError):
            ko.parse_starting_offsets(bad)


def test_a_source_starts_from_its_own_topics_with_every_partition_named():
    """The connector wants every partition of its topics, and no other topic."""
    spec = orjson.dumps({T: {"0": 5, "2": -1}, S: {"0": 7}}).decode()
    got = ko.starting_offsets(spec, [T], partitions_of({T: 3, S: 2}))
    assert orjson.loads(got) == {T: {"0": 5, "1": -2, "2": -1}}  # 1 unnamed: earliest
    got = ko.starting_offsets(spec, [S], partitions_of({T: 3, S: 2}))
    assert orjson.loads(got) == {S: {"0": 7, "1": -2}}
    # A topic of the source the map does not name (the timers' requests): from its start.
    got = ko.starting_offsets(
        orjson.dumps({T: {"0": 5}}).decode(), [T, S], partitions_of({T: 1, S: 2})
    )
    assert orjson.loads(got) == {T: {"0": 5}, S: {"0": -2, "1": -2}}
    never = partitions_of({})  # no broker call for these
    assert ko.starting_offsets(spec, ["other"], never) == "earliest"
    assert ko.starting_offsets("latest", [T], never) == "latest"
    assert ko.starting_offsets(spec, [T], never) == "earliest"  # the topic is not there yet


def test_offsets_from_progress():
    assert ko.from_progress('{"t": {"0": 3}}') == {"t": {"0": 3}}
    assert ko.from_progress({"t": {"0": 3}}) == {"t": {"0": 3}}
    assert ko.from_progress(None) is None
    assert ko.from_progress("not json") is None


def test_ranges_between_offset_maps():
    start = {T: {"0": 0, "1": 5}}
    end = {T: {"0": 25, "1": 5, "2": 3}}  # partition 2 is new: it starts at 0
    assert [(r.partition, r.start, r.end) for r in ranges.plan_ranges(start, end)] == [
        (0, 0, 25), (2, 0, 3)
    ]  # fmt: skip
    assert ranges.count(start, end) == 28


def test_backlog_is_the_lag():
    assert ranges.backlog({T: {"0": 5, "1": 7}}, {T: {"0": 9, "1": 7, "2": 4}}) == 8


def test_maps_round_trip():
    positions = {(T, 1): 4, (T, 0): 3, ("a", 0): 1}
    assert ranges.from_map(ranges.to_map(positions)) == positions
    assert list(ranges.to_map(positions)) == ["a", T]


def test_the_connector_options(base_settings):
    settings = base_settings.replace(processor={"starting_offsets": "earliest"})
    options = kafka_options(settings, [T], "infractions")
    assert options["subscribe"] == T and options["startingOffsets"] == "earliest"
    assert options["failOnDataLoss"] == "false"
    assert options["maxOffsetsPerTrigger"] == str(settings.processor.max_records_per_batch)
    assert options["kafka.fetch.max.wait.ms"] == str(settings.kafka.fetch_wait_max_ms)
    unlimited = settings.replace(processor={"max_records_per_batch": 0})
    assert "maxOffsetsPerTrigger" not in kafka_options(unlimited, [T], "infractions")
    # The Java client logs in as the process's principal, with its password file's secret.
    processor = settings.for_service("processor")
    options = kafka_options(processor, [T], "infractions")
    assert options["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    secret = processor.kafka.password_file("processor").read_text().strip()
    assert f'username="processor" password="{secret}"' in options["kafka.sasl.jaas.config"]


def test_each_query_reports_to_a_lag_group_of_its_own():
    settings = Settings().replace(processor={"consumer_group": "g"})
    assert lag_group(settings, "infractions") == "g-infractions"
    assert lag_group(settings.replace(processor={"consumer_group": ""}), "congestion") == ""


def test_decoded_rows_come_from_the_observed_metrics():
    assert decoded_rows({"observedMetrics": {"decoded": {"rows": 7}}}) == 7
    assert decoded_rows({"observedMetrics": {}}) is None


def test_the_connector_pom_is_at_pyspark_s_version():
    version = re.search(r"<spark.version>(.+?)</spark.version>", pom("spark-kafka").read_text())
    assert version is not None and version.group(1) == pyspark.__version__


def test_the_connector_jars_must_match_pyspark(tmp_path):
    from casatwin.processor.session import CONNECTOR, kafka_connector_jars

    settings = Settings().replace(general={"jars_dir": tmp_path})
    with pytest.raises(UserError, match="missing") as missing:
        kafka_connector_jars(settings)
    assert "make setup" in (missing.value.hint or "")
    jars = tmp_path / "spark-kafka"
    jars.mkdir()
    (jars / "kafka-clients-3.9.2.jar").touch()
    (jars / f"{CONNECTOR}-3.5.1.jar").touch()
    with pytest.raises(UserError, match="does not match pyspark") as mismatch:
        kafka_connector_jars(settings)
    assert "3.5.1" in mismatch.value.message and "make setup" in (mismatch.value.hint or "")
    shutil.move(jars / f"{CONNECTOR}-3.5.1.jar", jars / f"{CONNECTOR}-{pyspark.__version__}.jar")
    found = kafka_connector_jars(settings)
    assert len(found) == 2 and all(jar.is_absolute() for jar in found)
