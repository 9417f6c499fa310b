"""The processor's pure helpers around the sinks: message shape, simultaneity, progress."""

import pytest

from casatwin.bus import topics
from casatwin.bus.messages import check
from casatwin.config import Settings
from casatwin.errors import UserError
from casatwin.processor.app import default_queries, source_lag
from casatwin.processor.decisions import simultaneous
from casatwin.processor.sink import Decided, infraction_message
from casatwin.processor.telemetry_source import telemetry_records

DETECTION = {
    "infraction_id": "RED-TX-00002-1800000044200",
    "type": "red_light",
    "vehicle_id": "TX-00002",
    "kind": "taxi_petit",
    "event_ts": 1_800_000_044_025,
    "evidence_ts": 1_800_000_044_200,
    "detected_ts": 1_795_000_000_000,
    "lat": 33.5886,
    "lon": -7.6229,
    "measured": 2.0,
    "limit": 0.0,
    "segment_id": "s00017",
    "intersection_id": "i004",
    "zone_id": None,
    "parking_kind": None,
}
DECISION = {
    "class": 1,
    "fine_mad": 700,
    "reduced_24h": 400,
    "reduced_15d": 500,
    "points": 4,
    "court": False,
    "legal_basis": "Franchissement d'un feu rouge",
    "rule": "red_light",
}


def test_the_message_meets_the_contract_and_keeps_what_is_known():
    decided = Decided({"vehicle_id": "TX-00002", "plate": "12345-B-6"}, {"ref": "drv-1"},
                      DECISION, dispatch_required=False)  # fmt: skip
    message = infraction_message(DETECTION, decided, "Mers Sultan")
    check(topics.INFRACTIONS, message)
    assert message["district"] == "Mers Sultan"
    assert message["intersection_id"] == "i004" and "zone_id" not in message
    assert (message["event_ts"], message["evidence_ts"]) == (1_800_000_044_025, 1_800_000_044_200)
    assert message["decision"] == DECISION and message["vehicle_id"] == "TX-00002"


def test_simultaneous_offences_are_the_same_vehicles_within_five_seconds():
    speeding = {
        **DETECTION,
        "infraction_id": "SPD-1",
        "type": "speeding",
        "event_ts": 1_800_000_047_000,
    }
    later = {
        **DETECTION,
        "infraction_id": "SPD-2",
        "type": "speeding",
        "event_ts": 1_800_000_060_000,
    }
    other = {**DETECTION, "infraction_id": "SPD-3", "vehicle_id": "TX-9"}
    batch = [DETECTION, speeding, later, other]
    assert simultaneous(DETECTION, batch) == [speeding]
    assert simultaneous(later, batch) == []


def test_progress_figures_from_spark_progress():
    # As Spark's Kafka source reports them: offsets as JSON text, one input row per record.
    progress = {
        "sources": [
            {
                "startOffset": '{"t": {"0": 10, "1": 5}}',
                "endOffset": '{"t": {"0": 15, "1": 9}}',
                "latestOffset": '{"t": {"0": 20, "1": 9, "2": 3}}',
                "numInputRows": 9,
            },
            {"startOffset": None, "endOffset": {"s": {"0": 1}}, "numInputRows": 1},
        ]
    }
    assert telemetry_records(progress) == 10
    asked = {**progress, "observedMetrics": {"asked": {"records": 2}}}
    assert telemetry_records(asked) == 8  # the timers' requests are not telemetry
    assert source_lag(progress) == 8
    assert telemetry_records({"sources": []}) == 0


def test_a_checkpoint_keeps_the_state_buckets_it_was_started_with(tmp_path):
    from casatwin.processor.stateful import LEGACY_BUCKETS, checkpoint_buckets

    new = tmp_path / "new"
    assert checkpoint_buckets(new, 4) == 4
    assert checkpoint_buckets(new, 16) == 4  # the setting changed; the checkpoint did not
    legacy = tmp_path / "legacy"
    (legacy / "spark" / "offsets").mkdir(parents=True)  # started before the count was kept
    assert checkpoint_buckets(legacy, 4) == LEGACY_BUCKETS
    assert (legacy / "state-buckets").read_text().strip() == str(LEGACY_BUCKETS)


def test_a_process_runs_the_queries_it_names_in_the_application_s_order():
    settings = Settings()
    assert [q.name for q in default_queries(settings)] == ["infractions", "congestion"]
    assert [q.name for q in default_queries(settings, ("congestion",))] == ["congestion"]
    both = default_queries(settings, ("congestion", "infractions"))
    assert [q.name for q in both] == ["infractions", "congestion"]


@pytest.mark.parametrize("names", [("congestions",), ()])
def test_an_unknown_query_is_refused_with_the_names_there_are(names):
    with pytest.raises(UserError, match="the processor's queries are infractions, congestion"):
        default_queries(Settings(), names)
