"""Where a micro-batch's time goes, and which stage limits a query. Pure, but for
:class:`SinkTimes`, which the sinks fill.

A batch's ``triggerExecution`` (Spark's progress) is split into:

``planning``      ``latestOffset`` + ``getBatch`` + ``queryPlanning`` (+ ``setOffsetRange``):
                  asking the broker for the partitions' ends, planning the batch;
``logs``          ``walCommit`` + ``commitOffsets``: the offset and commit logs of the
                  checkpoint;
``tasks``         the rest of ``addBatch``: reading the records, decoding and map matching,
                  the stateful step (the detectors, or the windows), run as Spark tasks on
                  the executors' cores;
``state commit``  the state stores' commits (``commitTimeMs`` of the state operators),
                  which the tasks wait for;
``sink``          the query's own work on the driver once the batch's rows are there
                  (decide, ledger, publish, read model), as the sink timed it.

The stage with the largest share of the batch time over a period limits the query: to
process more per second, that is the stage to make cheaper.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

STAGES = ("planning", "logs", "tasks", "state commit", "sink")
_PLANNING = ("latestOffset", "getBatch", "queryPlanning", "setOffsetRange")
_LOGS = ("walCommit", "commitOffsets")


class SinkTimes:
    """The sink's time (ms) for each of its last batches, by batch id."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._ms: OrderedDict[int, float] = OrderedDict()

    @contextmanager
    def timing(self, batch_id: int) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._ms[batch_id] = (
                self._ms.get(batch_id, 0.0) + (time.perf_counter() - started) * 1000
            )
            while len(self._ms) > self.keep:
                self._ms.popitem(last=False)

    def get(self, batch_id: int) -> float:
        return self._ms.get(batch_id, 0.0)


def stage_ms(progress: dict[str, Any], sink_ms: float) -> dict[str, float]:
    """One batch's time per stage (ms), from its progress and its sink's time."""
    durations = progress.get("durationMs", {})
    state_commit = sum(
        float(op.get("commitTimeMs") or 0) for op in progress.get("stateOperators", [])
    )
    add_batch = float(durations.get("addBatch", 0))
    sink = min(sink_ms, add_batch)
    return {
        "planning": float(sum(durations.get(k, 0) for k in _PLANNING)),
        "logs": float(sum(durations.get(k, 0) for k in _LOGS)),
        "tasks": max(add_batch - sink - state_commit, 0.0),
        "state commit": min(state_commit, add_batch - sink),
        "sink": sink,
    }


def shares(batches: Iterable[tuple[dict[str, Any], float]]) -> dict[str, float]:
    """Each stage's share of the time of ``batches`` ((progress, sink ms) pairs) that
    read anything; empty when none did."""
    totals = dict.fromkeys(STAGES, 0.0)
    for progress, sink_ms in batches:
        if not progress.get("numInputRows"):
            continue
        for stage, ms in stage_ms(progress, sink_ms).items():
            totals[stage] += ms
    whole = sum(totals.values())
    return {stage: ms / whole for stage, ms in totals.items()} if whole else {}


def limiting(found: dict[str, float]) -> str:
    """The stage with the largest share ("" when there is none), as a progress line says
    it: ``tasks 61%``."""
    if not found:
        return ""
    stage = max(found, key=lambda s: found[s])
    return f"{stage} {round(found[stage] * 100)}%"
