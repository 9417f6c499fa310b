"""The kafka role's plugins: the rolling restart's health check and the KRaft cluster id."""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from casatwin.appliance import REPO, role_plugin

pytestmark = pytest.mark.appliance

ROLE = REPO / "roles/kafka"

health = role_plugin("kafka", "filter_plugins/kafka_health.py")
uuids = role_plugin("kafka", "lookup_plugins/kafka_random_uuid.py")

# `kafka-metadata-quorum.sh describe --replication` of Kafka 3.7...
KAFKA_37 = """\
NodeId\tLogEndOffset\tLag\tLastFetchTimestamp\tLastCaughtUpTimestamp\tStatus
2     \t4321        \t0  \t1718000000900     \t1718000000900        \tLeader
1     \t4321        \t0  \t1718000000850     \t1718000000850        \tFollower
3     \t4300        \t21 \t1718000000800     \t1718000000700        \tFollower
"""
# ...and of Kafka 3.9 and later (4.1, the role's version, prints this), which adds each
# replica's directory id.
KAFKA_39 = """\
NodeId DirectoryId LogEndOffset Lag LastFetchTimestamp LastCaughtUpTimestamp Status
1 dDo1k_pRSD-VmReEpu383g 15000 0 1725452183409 1725452183409 Leader
2 wQ1Qd8dXRtuBoRHqfd7ZBw 12000 3000 1725452183000 1725452170000 Follower
3 PecI8BL_S3WT1yYso6yUfg 15000 0 1725452183300 1725452183300 Follower
4 AAAAAAAAAAAAAAAAAAAAAA 14990 10 1725452183300 1725452183300 Observer
"""


def test_replication_table_is_read_by_its_header_in_either_version():
    assert health.kafka_quorum_replication(KAFKA_37) == [
        {"node_id": 2, "log_end_offset": 4321, "lag": 0, "status": "Leader"},
        {"node_id": 1, "log_end_offset": 4321, "lag": 0, "status": "Follower"},
        {"node_id": 3, "log_end_offset": 4300, "lag": 21, "status": "Follower"},
    ]
    rows = health.kafka_quorum_replication(KAFKA_39)
    assert [(r["node_id"], r["lag"], r["status"]) for r in rows] == [
        (1, 0, "Leader"), (2, 3000, "Follower"), (3, 0, "Follower"), (4, 10, "Observer"),
    ]  # fmt: skip


def test_quorum_is_healthy_when_every_voter_is_within_the_bound():
    assert health.kafka_quorum_problems(KAFKA_37, [1, 2, 3], 1000) == []
    assert health.kafka_quorum_problems(KAFKA_37, ["1", "2", "3"], "1000") == []  # as templated


def test_a_voter_too_far_behind_is_a_problem():
    assert health.kafka_quorum_problems(KAFKA_37, [1, 2, 3], 20) == [
        "node 3 is 21 records behind the leader (at most 20)"
    ]
    assert health.kafka_quorum_problems(KAFKA_39, [1, 2, 3], 1000) == [
        "node 2 is 3000 records behind the leader (at most 1000)"
    ]


def test_a_node_that_is_not_a_voter_is_a_problem_even_as_an_observer():
    assert health.kafka_quorum_problems(KAFKA_39, [1, 3, 4], 5000) == [
        "node 4 is not a voter of the quorum"
    ]
    two = "\n".join(KAFKA_37.splitlines()[:3])
    assert health.kafka_quorum_problems(two, [1, 2, 3], 1000) == [
        "node 3 is not a voter of the quorum"
    ]


def test_no_leader_or_no_table_is_a_problem():
    followers = KAFKA_37.replace("Leader", "Follower")
    assert health.kafka_quorum_problems(followers, [1, 2, 3], 1000) == ["0 leaders [], not one"]
    for text in ("", "Error: Timed out waiting for a node assignment.", "NodeId Lag\n1 x"):
        problems = health.kafka_quorum_problems(text, [1], 1000)
        assert len(problems) == 1 and problems[0].startswith("cannot read"), problems


def _kafka_uuid_from_string(text: str) -> bytes:
    """Kafka's Uuid.fromString: at most 24 characters of URL-safe base64 giving 16 bytes."""
    assert len(text) <= 24
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    assert len(raw) == 16
    return raw


def test_new_cluster_ids_are_kafka_uuids_that_the_preflight_accepts():
    preflight = yaml.safe_load((ROLE / "tasks/preflight.yml").read_text())
    pattern = next(
        re.search(r"is match\('([^']+)'\)", c)[1]
        for c in preflight[0]["ansible.builtin.assert"]["that"]
        if c.startswith("kafka_cluster_id")
    )
    made = {uuids.random_uuid() for _ in range(2000)}
    assert len(made) == 2000
    for text in made:
        raw = _kafka_uuid_from_string(text)
        assert uuids.encode(raw) == text  # canonical: what Kafka's toString gives back
        assert len(text) == 22 and not text.startswith("-")
        assert raw not in uuids.RESERVED
        assert raw[6] >> 4 == 4  # a version 4 UUID, as java.util.UUID.randomUUID makes
        assert re.match(pattern, text), text
    for wrong in ("", "AAAAAAAAAAAAAAAAAAAAA", "-ecI8BL_S3WT1yYso6yUfg", "PecI8BL_S3WT1yYso6yUfh",
                  "PecI8BL+S3WT1yYso6yUfg", "PecI8BL_S3WT1yYso6yUfg=="):  # fmt: skip
        assert not re.match(pattern, wrong), wrong


def test_reserved_ids_are_kafkas():
    # Uuid.ZERO_UUID and Uuid.ONE_UUID (the metadata topic's), as Kafka prints them.
    assert {uuids.encode(raw) for raw in uuids.RESERVED} == {
        "AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAQ",
    }  # fmt: skip
