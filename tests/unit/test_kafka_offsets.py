"""The Kafka source's offset arithmetic (pure)."""

import pytest

from casatwin.processor import kafka_offsets as ko

T = "casatwin.telemetry"


def bounds(*ends, low=0, topic=T):
    return {(topic, p): (low, end) for p, end in enumerate(ends)}


def test_starting_offsets_spec():
    assert ko.parse_starting_offsets("earliest") == "earliest"
    assert ko.parse_starting_offsets(" LATEST ") == "latest"
    assert ko.parse_starting_offsets('{"t": {"0": 5, "1": -2}}') == {"t": {"0": 5, "1": -2}}
    for bad in ("newest", '{"t": {"x": 1}}', '{"t": {"0": -3}}', '{"t": 4}', "[1]"):
        with pytest.raises(ko.OffsetSpecError):
            ko.parse_starting_offsets(bad)


def test_initial_offsets_earliest_latest_and_explicit():
    b = {(T, 0): (3, 10), (T, 1): (0, 7), (T, 2): (2, 2)}
    assert ko.initial_offsets("earliest", b) == {T: {"0": 3, "1": 0, "2": 2}}
    assert ko.initial_offsets("latest", b) == {T: {"0": 10, "1": 7, "2": 2}}
    spec = {T: {"0": 1, "1": -1}}  # below the earliest kept → earliest; partition 2 unnamed
    assert ko.initial_offsets(spec, b) == {T: {"0": 3, "1": 7, "2": 2}}
    assert ko.initial_offsets({T: {"0": 99}}, b)[T]["0"] == 10  # beyond the end → the end


def test_resume_picks_up_new_partitions_from_their_start():
    previous = {T: {"0": 5, "1": 6}}
    resumed = ko.resume(previous, {(T, 0): (0, 9), (T, 1): (0, 6), (T, 2): (0, 4)})
    assert resumed.start == {(T, 0): 5, (T, 1): 6, (T, 2): 0}
    assert resumed.new_partitions == [(T, 2)]
    assert resumed.lost == {}


def test_resume_moves_past_deleted_records_and_says_how_many():
    resumed = ko.resume({T: {"0": 5}}, {(T, 0): (8, 20)})
    assert resumed.start == {(T, 0): 8}
    assert resumed.lost == {(T, 0): 3}


def test_resume_keeps_partitions_the_broker_no_longer_reports():
    resumed = ko.resume({T: {"0": 5}, "gone": {"0": 2}}, {(T, 0): (0, 5)})
    assert resumed.start == {(T, 0): 5, ("gone", 0): 2}


def test_resume_reads_a_partition_that_went_back_from_its_start():
    # A memory-only broker restarted: the new log ends before where the last batch ended.
    previous = {T: {"0": 500, "1": 7}}
    bounds = {(T, 0): (0, 40), (T, 1): (0, 9)}
    resumed = ko.resume(previous, bounds)
    assert resumed.start == {(T, 0): 0, (T, 1): 7}
    assert resumed.rewound == {(T, 0): 500}
    # ... and the batch after it reads the new log from 0, not nothing.
    ranges = ko.plan_ranges(previous, {T: {"0": 40, "1": 9}})
    assert [(r.partition, r.start, r.end) for r in ranges] == [(0, 0, 40), (1, 7, 9)]


def test_limit_admits_everything_under_the_cap():
    start = {(T, 0): 0, (T, 1): 10}
    assert ko.limit_offsets(start, {(T, 0): 5, (T, 1): 15}, 100) == {(T, 0): 5, (T, 1): 15}
    assert ko.limit_offsets(start, {(T, 0): 5, (T, 1): 15}, None) == {(T, 0): 5, (T, 1): 15}


def test_limit_shares_the_cap_in_proportion_to_backlog_exactly():
    start = {(T, 0): 0, (T, 1): 0, (T, 2): 0}
    available = {(T, 0): 300, (T, 1): 100, (T, 2): 1}
    end = ko.limit_offsets(start, available, 100)
    assert sum(end.values()) == 100
    assert end[(T, 0)] == 75 and end[(T, 1)] == 25 and end[(T, 2)] == 0
    # deterministic: the same inputs always give the same batch
    assert ko.limit_offsets(start, available, 100) == end


def test_limit_never_goes_backwards_or_beyond_available():
    start = {(T, 0): 10, (T, 1): 50}
    end = ko.limit_offsets(start, {(T, 0): 8, (T, 1): 60}, 5)  # partition 0 "shrank"
    assert end == {(T, 0): 10, (T, 1): 55}


def test_plan_ranges_skips_empty_and_splits_large():
    start = {T: {"0": 0, "1": 5}}
    end = {T: {"0": 25, "1": 5, "2": 3}}  # partition 2 is new: it starts at 0
    ranges = ko.plan_ranges(start, end, max_per_range=10)
    assert [(r.partition, r.start, r.end) for r in ranges] == [
        (0, 0, 10), (0, 10, 20), (0, 20, 25), (2, 0, 3)
    ]  # fmt: skip


def test_plan_tasks_small_batch_is_one_task_large_is_spread():
    start = {T: {str(p): 0 for p in range(6)}}
    small = ko.plan_tasks(start, {T: {str(p): 10 for p in range(6)}}, 50_000, 8)
    assert len(small) == 1 and len(small[0]) == 6
    big = ko.plan_tasks(start, {T: {str(p): 30_000 for p in range(6)}}, 50_000, 8)
    assert len(big) == 4  # 180,000 records in tasks of ~50,000
    assert sum(r.count for task in big for r in task) == 180_000
    loads = [sum(r.count for r in task) for task in big]
    assert max(loads) - min(loads) <= 30_000


def test_a_task_reads_each_partition_position_once_per_round():
    ranges = [ko.OffsetRange(T, 0, 0, 5), ko.OffsetRange(T, 0, 5, 9), ko.OffsetRange(T, 1, 0, 3)]
    merged = ko.merge_contiguous(ranges)
    assert merged == [ko.OffsetRange(T, 0, 0, 9), ko.OffsetRange(T, 1, 0, 3)]
    apart = [ko.OffsetRange(T, 0, 0, 5), ko.OffsetRange(T, 0, 7, 9), ko.OffsetRange(T, 1, 0, 3)]
    assert ko.rounds(ko.merge_contiguous(apart)) == [
        [ko.OffsetRange(T, 0, 0, 5), ko.OffsetRange(T, 1, 0, 3)],
        [ko.OffsetRange(T, 0, 7, 9)],
    ]


def test_backlog_is_the_lag():
    assert ko.backlog({T: {"0": 5, "1": 7}}, {T: {"0": 9, "1": 7, "2": 4}}) == 8


def test_maps_round_trip():
    positions = {(T, 1): 4, (T, 0): 3, ("a", 0): 1}
    assert ko.from_map(ko.to_map(positions)) == positions
    assert list(ko.to_map(positions)) == ["a", T]
