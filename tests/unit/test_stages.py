"""Where a micro-batch's time goes (processor/stages.py), from Spark's progress entries."""

from __future__ import annotations

from casatwin.processor.stages import SinkTimes, limiting, shares, stage_ms


def progress(batch_id: int, add_batch: int, commit_ms: int = 0, rows: int = 100) -> dict:
    return {
        "batchId": batch_id,
        "numInputRows": rows,
        "durationMs": {
            "latestOffset": 10, "getBatch": 0, "queryPlanning": 15, "walCommit": 12,
            "addBatch": add_batch, "commitOffsets": 13, "triggerExecution": add_batch + 50,
        },
        "stateOperators": [{"commitTimeMs": commit_ms}],
    }  # fmt: skip


def test_a_batch_split_into_its_stages_adds_up_to_its_time():
    found = stage_ms(progress(1, 300, commit_ms=40), sink_ms=60)
    assert found == {"planning": 25, "logs": 25, "tasks": 200, "state commit": 40, "sink": 60}
    assert sum(found.values()) == 350  # triggerExecution


def test_the_sink_and_the_commit_never_exceed_the_batch_they_ran_in():
    found = stage_ms(progress(1, 50, commit_ms=40), sink_ms=80)  # the sink timed a re-run
    assert found["sink"] == 50 and found["state commit"] == 0 and found["tasks"] == 0


def test_the_stage_with_the_largest_share_limits_the_query():
    batches = [(progress(1, 300, commit_ms=40), 60.0), (progress(2, 100), 600.0)]
    found = shares(batches)
    assert round(sum(found.values()), 6) == 1
    # tasks 200 of 500 ms; the sinks 60 + 100 (the second capped at its addBatch)
    assert limiting(found) == "tasks 40%"
    assert limiting(shares([(progress(3, 900), 800.0)])) == "sink 84%"


def test_empty_batches_say_nothing():
    assert shares([(progress(1, 0, rows=0), 0.0)]) == {}
    assert limiting({}) == ""


def test_the_sink_times_of_the_last_batches_are_kept():
    times = SinkTimes(keep=2)
    for batch_id in (1, 2, 3):
        with times.timing(batch_id):
            pass
    assert times.get(1) == 0.0  # forgotten: only the last two are kept
    assert times.get(3) > 0.0
