"""The processor application: one Spark session, several streaming queries, supervised.

Each query is a :class:`QuerySpec` with its own name, trigger and checkpoint directory
(``<checkpoints>/<name>/``); the application starts them all, logs their progress, restarts
one that failed (from its checkpoint, with backoff) and stops them in order. Today:

``infractions``  telemetry → detectors → decide → ledger, read model, ``casatwin.infractions``

``congestion``   telemetry and sensors → sliding windows → read model, ``casatwin.congestion``

A process may run some of them only (``casatwin processor --queries congestion``): the
latency benchmarks measure the congestion query in a process of its own, at a lower CPU
priority, beside the infractions query.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Gauge

from casatwin.config import Settings
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.processor import stages
from casatwin.processor.progress import new_batches, observe_batches
from casatwin.processor.source import LagReporter, describe
from casatwin.processor.telemetry_source import decoded_rows, telemetry_records
from casatwin.processor.timers import TimerNudges

log = get_logger("processor")

RETRY_START_S = 10.0
OBSERVE_EVERY_S = 2.0  # how often each query's new batches are read for the metrics
TIMERS_EVERY_S = 0.5  # how often a query without empty batches is checked for due timers

LAG = Gauge("casatwin_processor_lag_records", "Telemetry records not yet processed", ["query"])
INPUT_RATE = Gauge(
    "casatwin_processor_input_rows_per_second", "Rows processed per second", ["query"]
)
STAGE_SHARE = Gauge(
    "casatwin_processor_stage_share",
    "Share of the micro-batches' time per stage since the last progress line "
    "(planning, logs, tasks, state commit, sink; processor/stages.py): the largest limits",
    ["query", "stage"],
)


class QuerySpec(Protocol):
    """One streaming query of the application."""

    name: str
    timers_asked: bool  # no empty batches: the app asks for one when its timers are due

    def start(self, spark: Any, checkpoint: Path) -> Any:
        """Build the query's plan and start it; returns the ``StreamingQuery``."""
        ...

    def stop(self) -> None:
        """Release what :meth:`start` opened (sinks' clients); the query is stopped."""
        ...

    def progress_fields(self, progress: list[dict[str, Any]]) -> dict[str, Any]:
        """Extra figures for the periodic progress line, from the batches it covers."""
        ...

    def sink_ms(self, batch_id: int) -> float:
        """The sink's own time for the batch ``batch_id`` (ms; 0 when unknown)."""
        ...


def checkpoint_root(settings: Settings) -> Path:
    configured = settings.processor.checkpoint_dir
    return (
        Path(configured) if configured else settings.general.data_dir / "processor" / "checkpoints"
    )


def trigger(settings: Settings) -> dict[str, str]:
    return {"processingTime": f"{settings.processor.trigger_ms} milliseconds"}


class InfractionsQuery:
    """Telemetry → detectors → decide → ledger, read model and ``casatwin.infractions``."""

    name = "infractions"

    def __init__(self, settings: Settings, decider: Any = None) -> None:
        self.settings = settings
        self.decider = decider
        self.sink: Any = None
        self.timers_asked = not settings.processor.timer_batches

    def start(self, spark: Any, checkpoint: Path) -> Any:
        from casatwin.processor import pipeline
        from casatwin.processor.network import for_city
        from casatwin.processor.session import query_conf, timer_conf
        from casatwin.processor.sink import InfractionSink
        from casatwin.processor.stateful import checkpoint_buckets

        decider = self.decider or _registry_decider(self.settings)
        self.sink = InfractionSink(
            self.settings, checkpoint / "journal", decider, for_city(self.settings.city)
        )
        self.sink.start()
        buckets = checkpoint_buckets(checkpoint, self.settings.processor.state_buckets)
        settings = self.settings.replace(processor={"state_buckets": buckets})
        fixes = pipeline.telemetry_fixes(spark, settings, self.name)
        with query_conf(spark, timer_conf(settings)):
            return (
                pipeline.detections(fixes, settings)
                .writeStream.queryName(self.name)
                .foreachBatch(self.sink)
                .option("checkpointLocation", str(checkpoint / "spark"))
                .trigger(**trigger(self.settings))
                .start()
            )

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.stop()
            self.sink = None

    def sink_ms(self, batch_id: int) -> float:
        return self.sink.times.get(batch_id) if self.sink else 0.0

    def progress_fields(self, progress: list[dict[str, Any]]) -> dict[str, Any]:
        from casatwin.processor.sink import INFRACTIONS

        read = sum(telemetry_records(p) for p in progress)
        fixes = sum(rows_out(p) for p in progress)
        samples = (s for metric in INFRACTIONS.collect() for s in metric.samples)
        return {
            "rejected": max(read - fixes, 0),  # set aside in the DLQ by the decoding stage
            "infractions": int(sum(s.value for s in samples if s.name.endswith("_total"))),
        }


def _registry_decider(settings: Settings) -> Any:
    from casatwin.processor.decisions import RegistryDecider

    return RegistryDecider(settings)


QUERY_NAMES = ("infractions", "congestion")


def default_queries(settings: Settings, names: tuple[str, ...] = QUERY_NAMES) -> list[QuerySpec]:
    """The application's queries, or those of ``names`` only (a process of their own)."""
    from casatwin.processor.congestion import CongestionQuery

    unknown = sorted(set(names) - set(QUERY_NAMES))
    if unknown or not names:
        raise UserError(
            f"unknown query {', '.join(unknown) or '(none named)'}: "
            f"the processor's queries are {', '.join(QUERY_NAMES)}"
        )
    built = {"infractions": InfractionsQuery, "congestion": CongestionQuery}
    return [built[name](settings) for name in QUERY_NAMES if name in names]


@dataclass
class _Running:
    spec: QuerySpec
    lag: LagReporter
    query: Any = None
    sources_logged: bool = False  # what the query reads, said once per start
    failures: int = 0
    restart_at: float = 0.0
    seen_batch: int = -1  # the last batch whose progress was observed
    unreported: list[dict[str, Any]] = field(default_factory=list)  # for the progress line


class ProcessorApp:
    """Lifecycle: :meth:`start`, :meth:`run_until` (a stop event), :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        master: str | None = None,
        queries: list[QuerySpec] | None = None,
        spark: Any = None,
    ) -> None:
        self.settings = settings
        self.master = master or settings.processor.master
        self.checkpoints = checkpoint_root(settings)
        self.running = [
            _Running(q, LagReporter(settings, q.name))
            for q in (queries or default_queries(settings))
        ]
        self.spark = spark
        self._own_spark = spark is None
        self.timers = TimerNudges(settings)

    def start(self) -> None:
        from casatwin.processor.session import build_session

        if self.spark is None:
            started = time.monotonic()
            self.spark = build_session(self.settings, self.master)
            log.info(
                "spark session ready",
                master=self.master,
                seconds=round(time.monotonic() - started, 1),
            )
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        for running in self.running:
            self._start_query(running)

    def _start_query(self, running: _Running) -> None:
        """Start one query; if it cannot start (MariaDB not up yet, say), say why and let
        :meth:`run_until` try again shortly."""
        checkpoint = self.checkpoints / running.spec.name
        # A query's jobs run in the scheduler pool of its name (fair scheduler): its
        # execution thread takes the local properties of the thread that starts it.
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", running.spec.name)
        try:
            running.query = running.spec.start(self.spark, checkpoint)
            running.sources_logged = False
        except UserError as exc:
            running.spec.stop()
            running.restart_at = time.monotonic() + RETRY_START_S
            log.error(
                "query could not start; retrying",
                query=running.spec.name,
                reason=exc.message,
                hint=exc.hint or "",
                retry_in_s=RETRY_START_S,
            )
            return
        log.info("query started", query=running.spec.name, checkpoint=str(checkpoint))

    def run_until(self, stop: threading.Event, report_every_s: float | None = None) -> None:
        """Supervise the queries until ``stop`` is set."""
        every = report_every_s or self.settings.processor.progress_every_s
        next_report = time.monotonic() + every
        next_observe = time.monotonic() + OBSERVE_EVERY_S
        next_timers = time.monotonic() + TIMERS_EVERY_S
        while not stop.wait(0.2):
            for running in self.running:
                self._supervise(running)
            if time.monotonic() >= next_timers:
                next_timers = time.monotonic() + TIMERS_EVERY_S
                for running in self.running:
                    if running.query is not None and running.spec.timers_asked:
                        self.timers.check(running.spec.name, running.query.lastProgress)
            if time.monotonic() >= next_observe:
                next_observe = time.monotonic() + OBSERVE_EVERY_S
                for running in self.running:
                    self._observe(running)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + every
                for running in self.running:
                    self._report(running)

    def _supervise(self, running: _Running) -> None:
        query = running.query
        if query is not None and not query.isActive:
            error = query.exception()
            running.spec.stop()
            running.query = None
            running.failures += 1
            delay = min(60.0, 2.0 ** min(running.failures, 6))
            running.restart_at = time.monotonic() + delay
            log.error(
                "query failed; restarting it from its checkpoint",
                query=running.spec.name,
                reason=str(error).splitlines()[0] if error else "stopped",
                retry_in_s=delay,
            )
        if running.query is None and time.monotonic() >= running.restart_at:
            self._start_query(running)

    def _observe(self, running: _Running) -> None:
        """The query's batches since the last look: into the metrics and the next line."""
        if running.query is None:
            return
        new = new_batches(running.query.recentProgress, running.seen_batch)
        if new:
            running.seen_batch = new[-1]["batchId"]
            observe_batches(running.spec.name, new)
            running.unreported += new
            running.lag.report(new[-1])
            if not running.sources_logged:
                running.sources_logged = True
                log.info("query reads", query=running.spec.name, sources=describe(new[-1]))

    def _report(self, running: _Running) -> None:
        self._observe(running)
        new, running.unreported = running.unreported, []
        if running.query is None or not new:
            return
        rows = sum(rows_out(p) for p in new)
        records = sum(telemetry_records(p) for p in new)
        late = sum(
            op.get("numRowsDroppedByWatermark", 0)
            for p in new
            for op in p.get("stateOperators", [])
        )
        seconds = sum(p["durationMs"].get("triggerExecution", 0) for p in new) / 1000
        lag = source_lag(new[-1])
        LAG.labels(running.spec.name).set(lag)
        rate = new[-1].get("processedRowsPerSecond") or 0.0
        INPUT_RATE.labels(running.spec.name).set(rate)
        if running.failures and rows:
            running.failures = 0
        found = stages.shares((p, running.spec.sink_ms(p["batchId"])) for p in new)
        for stage, share in found.items():
            STAGE_SHARE.labels(running.spec.name, stage).set(share)
        log.info(
            "processing",
            query=running.spec.name,
            batches=len(new),
            records=records,
            records_per_s=round(records / seconds) if seconds else 0,
            rows=rows,
            batch_ms=round(seconds * 1000 / len(new)),
            lag=lag,
            late_dropped=late,
            limited_by=stages.limiting(found),
            **running.spec.progress_fields(new),
        )

    def stop(self) -> None:
        # Stopping a query interrupts its running batch on purpose; py4j would log the
        # InterruptedException of the batch's callback as an error with a stack trace.
        logging.getLogger("py4j.clientserver").setLevel(logging.CRITICAL)
        for running in reversed(self.running):
            if running.query is not None:
                try:
                    running.query.stop()
                except Exception as exc:  # a query dying while we stop it
                    log.warning(
                        "query did not stop cleanly", query=running.spec.name, reason=str(exc)
                    )
                running.query = None
            running.spec.stop()
            running.lag.close()
            log.info("query stopped", query=running.spec.name)
        self.timers.close()
        if self._own_spark and self.spark is not None:
            self.spark.stop()
            self.spark = None

    def reset(self) -> None:
        """Forget the checkpoints (offsets, state, sink journal) of this app's queries; those
        of queries another process runs stay."""
        for running in self.running:
            shutil.rmtree(self.checkpoints / running.spec.name, ignore_errors=True)


def rows_out(progress: dict[str, Any]) -> int:
    """The rows a batch's decoding stage gave (fixes, or the congestion query's panes):
    fewer than the records read by those set aside; the input rows of a query without
    one."""
    decoded = decoded_rows(progress)
    return int(progress["numInputRows"]) if decoded is None else decoded


def source_lag(progress: dict[str, Any]) -> int:
    """Records on the broker beyond what the last batch read (all sources of a query)."""
    from casatwin.bus.ranges import backlog
    from casatwin.processor.kafka_offsets import from_progress

    lag = 0
    for source in progress.get("sources", []):
        end, latest = (
            from_progress(source.get("endOffset")),
            from_progress(source.get("latestOffset")),
        )
        if end is not None and latest is not None:
            lag += backlog(end, latest)
    return lag
