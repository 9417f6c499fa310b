"""``casatwin demo faults``: break the twin three ways while it works, then reconcile.

On a private stack (servers on free ports, as the benchmarks run), the dashboard, the
processor and the simulator run as separate processes; the simulator plays a scenario of
scripted violators in real time and writes its ground truth. While it plays:

1. **the processor is killed with SIGKILL** and started again: Spark resumes from its
   checkpoint (offsets, detector state) and the sink's journal re-publishes nothing twice;
2. **MariaDB is stopped** for ``mariadb_down_s``: the sink's batch fails, the query is
   restarted from its checkpoint with backoff, and the infractions of the outage are
   recorded once MariaDB is back;
3. **the broker is killed with SIGKILL** in the middle of the stream and started again on
   the same log directory: Kafka recovers its log from the disk, so every record it had
   acknowledged is still there; the producers (the simulator's, the processor's sink)
   keep what was not acknowledged and send it again (librdkafka, up to
   ``CASATWIN_KAFKA_MESSAGE_TIMEOUT_MS``), and the processor goes on from its offsets.

Then the simulator finishes, the processor catches up, and the ground truth is reconciled
with the ledger (:mod:`casatwin.demo.reconcile`): zero lost, zero duplicated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from casatwin.config import Settings
from casatwin.demo.reconcile import Reconciliation, judgeable, reconcile
from casatwin.demo.twin import Twin
from casatwin.devstack.stack import Stack
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.waiting import wait_until

log = get_logger("demo")

# How long the demo's producers keep what the broker has not acknowledged: the broker is
# away for the planned seconds plus its restart on a recovered log (seconds; more on a
# busy machine), longer than the live twin's 30 s default allows for.
PRODUCER_PATIENCE_MS = 180_000

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "scenarios" / "faults.yaml"
Offsets = dict[tuple[str, int], int]  # (topic, partition) → offset


@dataclass(frozen=True)
class FaultPlan:
    """When each fault strikes (seconds after the simulator starts) and for how long."""

    scenario: Path = SCENARIO
    kill_processor_at_s: float = 40
    mariadb_at_s: float = 95
    mariadb_down_s: float = 30
    broker_at_s: float = 150
    broker_down_s: float = 10
    catch_up_s: float = 240  # after the scenario, how long the processor may take to finish


Say = Callable[[str], None]


def ledger_rows(settings: Settings, since_ms: int) -> list[dict[str, Any]]:
    from casatwin.registry import db

    conn = db.open_connection(settings.mariadb, database=settings.mariadb.database)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT infraction_id, vehicle_id, type, event_ts FROM infractions"
            " WHERE event_ts >= %s",
            (since_ms,),
        )
        names = ("infraction_id", "vehicle_id", "type", "event_ts")
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


def _ledger_count(settings: Settings, since_ms: int) -> int:
    try:
        return len(ledger_rows(settings, since_ms))
    except UserError:
        return -1  # MariaDB away


def telemetry_progress(settings: Settings) -> tuple[Offsets, Offsets] | None:
    """Per partition of the telemetry: (end of the log, offset the infractions query has
    processed up to), the query reporting its progress to its group after each batch;
    None when the broker or the group cannot say."""
    import confluent_kafka

    from casatwin.bus import topics
    from casatwin.bus.watermarks import EndOffsets
    from casatwin.processor.source import lag_group

    group = {"group.id": lag_group(settings, "infractions")}
    offsets = EndOffsets(settings.kafka, "casatwin-demo-lag", timeout_s=5, **group)
    try:
        ends = offsets.ends([topics.TELEMETRY])
        committed = offsets.consumer.committed(
            [confluent_kafka.TopicPartition(t, p) for t, p in ends], timeout=5
        )
    except Exception:  # any broker failure: the progress is unknown
        return None
    finally:
        offsets.close()
    done = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
    return ends, done


def caught_up(settings: Settings) -> bool:
    """Whether the infractions query has processed every record of the telemetry log (with
    the simulator stopped: its last batch, sinks included, is over)."""
    progress = telemetry_progress(settings)
    if progress is None:
        return False
    ends, done = progress
    return all(done.get(key, 0) >= end for key, end in ends.items())


def telemetry_end(settings: Settings) -> int | None:
    """Records on the telemetry topic (the sum of its partitions' ends); None when the
    broker does not answer."""
    from casatwin.bus import topics
    from casatwin.bus.watermarks import EndOffsets

    offsets = EndOffsets(settings.kafka, "casatwin-demo-ends", timeout_s=5)
    try:
        return sum(offsets.ends([topics.TELEMETRY]).values())
    except Exception:  # any broker failure: not known now
        return None
    finally:
        offsets.close()


def kill_broker(stack: Stack, settings: Settings, down_s: float, say: Say) -> None:
    """kill -9 the broker, leave it dead ``down_s``, start it on the same log directory,
    and say whether its log came back whole (it ends no earlier than before the kill)."""
    before = telemetry_end(settings)
    say(f"FAULT 3: kill -9 the broker for {down_s:g} s ({before} fixes on its log); the "
        "producers buffer and retry, the processor waits")  # fmt: skip
    stack.broker.kill()
    time.sleep(down_s)
    stack.broker.start()
    after: int | None = None

    def answered() -> bool:
        nonlocal after
        after = telemetry_end(settings)
        return after is not None

    wait_until(answered, 60)
    if before is not None and after is not None and after >= before:
        say(f"recovered: the broker is back with its log from the disk ({after} fixes, "
            "none missing); the buffered fixes arrive, the processor goes on")  # fmt: skip
    else:
        say(f"the broker came back with a shorter log ({before} fixes before the kill, "
            f"{after} after): acknowledged records are missing")  # fmt: skip


def simulator_undelivered(log_path: Path) -> int:
    """Messages the simulator's producer failed or refused, from its last "simulator
    stopped" line (0 if there is none)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    stopped = [line for line in text.splitlines() if "simulator stopped" in line]
    if not stopped:
        return 0
    counts = dict(re.findall(r"\b(failed|refused)=(\d+)", stopped[-1]))
    return sum(int(n) for n in counts.values())


def queries_started(twin: Twin) -> int:
    path = twin.log_path("processor")
    return path.read_text(errors="replace").count("query started") if path.exists() else 0


def wait_processor(twin: Twin, before: int, say: Say, timeout_s: float = 300) -> None:
    """Until the processor has started its query (once more than ``before`` times)."""
    if not wait_until(lambda: queries_started(twin) > before, timeout_s):
        raise UserError(
            "the processor did not start its query", hint=f"see {twin.log_path('processor')}"
        )
    say("processor running (its query has started)")


def start_processor(twin: Twin, say: Say, timeout_s: float = 300) -> None:
    before = queries_started(twin)
    twin.start("processor")
    wait_processor(twin, before, say, timeout_s)


def run(settings: Settings, stack: Stack, plan: FaultPlan, say: Say = print) -> Reconciliation:
    """The whole demo on a started ``stack`` whose topics and registry are ready."""
    if not plan.scenario.exists():
        raise UserError(f"scenario {plan.scenario} not found")
    patience = max(settings.kafka.message_timeout_ms, PRODUCER_PATIENCE_MS)
    settings = settings.replace(kafka={"message_timeout_ms": patience})
    truth_path = settings.general.data_dir / "ground-truth.json"
    twin = Twin(settings)
    try:
        twin.start("dashboard")
        say(f"dashboard: http://127.0.0.1:{settings.dashboard.port}/ (watch the infractions list)")
        # The topics are new: the processor reads them from the start, so the simulator
        # need not wait for Spark to come up.
        twin.start("processor")
        started_ms = int(time.time() * 1000)
        started = time.monotonic()
        twin.start("simulator", "--realtime", "--scenario", str(plan.scenario),
                   "--stop-after-scenario", "--ground-truth", str(truth_path))  # fmt: skip
        say(f"simulator playing {plan.scenario.name} in real time")
        wait_processor(twin, 0, say)

        def at(offset_s: float) -> None:
            time.sleep(max(0.0, started + offset_s - time.monotonic()))

        at(plan.kill_processor_at_s)
        # Crash it mid-stream, not during its start: once something is in the ledger.
        wait_until(lambda: _ledger_count(settings, started_ms) > 0, plan.catch_up_s, 1.0)
        say("FAULT 1: kill -9 the processor; on the dashboard new infractions stop arriving")
        twin.kill("processor")
        start_processor(twin, say)
        say("recovered: the processor resumed from its checkpoint; the backlog is decided")

        at(plan.mariadb_at_s)
        say(f"FAULT 2: MariaDB stopped for {plan.mariadb_down_s:g} s; the processor's batch "
            "fails and is retried; infractions wait")  # fmt: skip
        stack.mariadb.stop()
        time.sleep(plan.mariadb_down_s)
        stack.mariadb.start()
        say("recovered: MariaDB is back; the waiting infractions reach the ledger and the screen")

        at(plan.broker_at_s)
        kill_broker(stack, settings, plan.broker_down_s, say)

        code = twin.wait("simulator", plan.catch_up_s + 600)
        if code != 0:
            raise UserError(
                f"the simulator ended with {code}", hint=f"see {twin.log_path('simulator')}"
            )
        undelivered = simulator_undelivered(twin.log_path("simulator"))
        if undelivered:
            say(f"the simulator's producer gave up on {undelivered} messages (the broker was "
                f"away longer than {patience / 1000:g} s): what they carried is lost before "
                "the twin could see it")  # fmt: skip
        truth = orjson.loads(truth_path.read_bytes())
        end_ms = int(time.time() * 1000)
        dwell_ms = int(settings.processor.dwell_s * 1000)
        expected = [r for r in truth if judgeable(r, dwell_ms, end_ms)]
        say(f"scenario over: {len(expected)} judgeable infractions in the ground truth; "
            "waiting for the processor to catch up")  # fmt: skip
        wait_until(
            lambda: _ledger_count(settings, started_ms) >= len(expected), plan.catch_up_s, 2.0
        )
        # A duplicate would come with a batch replayed from the log: once the query has
        # processed all of it, every batch that could write one is over.
        if not wait_until(lambda: caught_up(settings), plan.catch_up_s, 1.0):
            say(f"the processor has not processed the whole log in {plan.catch_up_s:g} s")
        result = reconcile(expected, ledger_rows(settings, started_ms))
    finally:
        twin.stop_all()
    say(result.report())
    return result
