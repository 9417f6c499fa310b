"""Reading Kafka's admin tools for the rolling restart's health check (tasks/health_check.yml).

``kafka-metadata-quorum.sh describe --replication`` (``org.apache.kafka.tools.
MetadataQuorumCommand``, which the role runs on the JVM) prints one row per replica of the
KRaft metadata log: the leader, the other voters ("Follower") and the observers. Kafka 3.7
prints

    NodeId  LogEndOffset  Lag  LastFetchTimestamp  LastCaughtUpTimestamp  Status

and 3.9 and later (4.1, the role's version) add a DirectoryId column after NodeId, so the
columns are found by their header. ``Lag`` is the leader's log end offset minus the replica's.
"""

from __future__ import annotations

from typing import Any

VOTER_STATUSES = ("Leader", "Follower")


class QuorumTableError(ValueError):
    """The text is not the replication table of kafka-metadata-quorum."""


def kafka_quorum_replication(stdout: str) -> list[dict[str, Any]]:
    """The rows of the replication table: node_id, log_end_offset, lag, status."""
    lines = [line.split() for line in str(stdout).splitlines() if line.strip()]
    header = next((i for i, cells in enumerate(lines) if cells[:1] == ["NodeId"]), None)
    if header is None:
        raise QuorumTableError("no NodeId header: not the output of describe --replication")
    columns = lines[header]
    try:
        at = {name: columns.index(name) for name in ("NodeId", "LogEndOffset", "Lag", "Status")}
    except ValueError as exc:
        raise QuorumTableError(f"unexpected columns {columns}") from exc
    rows = []
    for cells in lines[header + 1 :]:
        if len(cells) != len(columns):
            raise QuorumTableError(f"a row of {len(cells)} cells under {len(columns)} columns")
        rows.append(
            {
                "node_id": int(cells[at["NodeId"]]),
                "log_end_offset": int(cells[at["LogEndOffset"]]),
                "lag": int(cells[at["Lag"]]),
                "status": cells[at["Status"]],
            }
        )
    return rows


def kafka_quorum_problems(stdout: str, voters: list[Any], max_lag: int) -> list[str]:
    """What keeps the quorum from being healthy ([] when healthy): exactly one leader, every
    expected voter a voter, each within ``max_lag`` records of the leader's log end."""
    try:
        rows = kafka_quorum_replication(stdout)
    except (QuorumTableError, ValueError) as exc:
        return [f"cannot read the quorum's replication table: {exc}"]
    problems = []
    leaders = [r["node_id"] for r in rows if r["status"] == "Leader"]
    if len(leaders) != 1:
        problems.append(f"{len(leaders)} leaders {leaders}, not one")
    voting = {r["node_id"]: r for r in rows if r["status"] in VOTER_STATUSES}
    for node in sorted(int(v) for v in voters):
        row = voting.get(node)
        if row is None:
            problems.append(f"node {node} is not a voter of the quorum")
        elif row["log_end_offset"] < 0 or row["lag"] > int(max_lag):
            problems.append(
                f"node {node} is {row['lag']} records behind the leader (at most {max_lag})"
            )
    return problems


class FilterModule:
    def filters(self):
        return {
            "kafka_quorum_replication": kafka_quorum_replication,
            "kafka_quorum_problems": kafka_quorum_problems,
        }
