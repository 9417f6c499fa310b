"""The highway feed gateway: fetch → parse → validate → dedupe → publish, without falling over.

Each poll is one pass down the pipeline:

1. **fetch** the document (bounded timeout and size; :mod:`fetch`),
2. **parse** it with the hardened parser (:mod:`tmdd`); an unusable document goes to the
   DLQ (stage ``gateway.xml``) with the raw bytes and the parser's error,
3. **validate** each station report into a reading (:mod:`normalise`); a bad one goes to
   the DLQ (stage ``gateway.reading``) with the reason, the others carry on,
4. **dedupe** on (station, timestamp): a reading served again by the next poll or a retry
   is not published twice (:mod:`dedupe`). A reading is marked published when the broker
   acknowledges it, not when it is queued: one the broker never took is published again
   when the API serves it again,
5. **publish** to ``casatwin.sensors.highway`` with the accounted producer.

Around it, the circuit breaker decides whether a poll may go out, and backoff with jitter
spaces the retries after transient failures. Lifecycle: :meth:`Gateway.start`,
:meth:`Gateway.run_until` a stop event, :meth:`Gateway.drain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable
from dataclasses import asdict, dataclass
from functools import partial
from urllib.parse import urlparse

import aiohttp
import orjson
from prometheus_client import Counter, Gauge, Histogram

from casatwin.backoff import Backoff
from casatwin.bus import consumer, topics
from casatwin.bus.dlq import DeadLetterWriter
from casatwin.bus.producer import Producer
from casatwin.config import KafkaSettings, Settings
from casatwin.errors import UserError
from casatwin.gateway import tmdd
from casatwin.gateway.breaker import STATE_GAUGE, BreakerState, CircuitBreaker, Transition, describe
from casatwin.gateway.dedupe import RecentKeys
from casatwin.gateway.fetch import FetchError, fetch_document
from casatwin.gateway.normalise import InvalidReport, normalise
from casatwin.logs import get_logger

log = get_logger("gateway")

REPORT_EVERY_S = 60.0
DLQ_PAYLOAD_LIMIT = 256 * 1024  # a dead letter must stay well under the broker's 1 MB limit
XML_STAGE = "gateway.xml"
READING_STAGE = "gateway.reading"

BREAKER_STATE = Gauge(
    "casatwin_gateway_breaker_state",
    "Circuit breaker towards the traffic API: 0 closed (normal), 1 half-open (trial), 2 open "
    "(requests paused)",
)
BREAKER_TRANSITIONS = Counter(
    "casatwin_gateway_breaker_transitions_total", "Circuit breaker state changes", ["to"]
)
POLLS = Counter(
    "casatwin_gateway_polls_total",
    "Requests to the traffic API by outcome (ok, timeout, connection, http_5xx, http_4xx, "
    "bad_document)",
    ["outcome"],
)
READINGS = Counter(
    "casatwin_gateway_readings_total",
    "Station readings by fate (published, duplicate, invalid)",
    ["fate"],
)
FETCH_SECONDS = Histogram(
    "casatwin_gateway_fetch_seconds",
    "Duration of requests to the traffic API",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
LAST_SUCCESS = Gauge(
    "casatwin_gateway_last_success_timestamp_seconds", "When a document was last read (epoch s)"
)


@dataclass
class PollResult:
    """What one poll did."""

    ok: bool
    transient: bool = False
    reason: str = ""
    published: int = 0
    duplicates: int = 0
    invalid: int = 0


@dataclass
class GatewayStats:
    """Totals since start (the log's periodic summary and the tests read them)."""

    polls: int = 0
    failed_polls: int = 0
    bad_documents: int = 0
    published: int = 0
    duplicates: int = 0
    invalid: int = 0


class Gateway:
    """Polls the traffic API and publishes highway readings; see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        stations: Collection[str],
        *,
        producer: Producer | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        g = settings.gateway
        self.settings = settings
        self.config = g
        self.stations = frozenset(stations)
        url = urlparse(g.api_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UserError(
                f"CASATWIN_GATEWAY_API_URL={g.api_url!r} is not an http(s) URL",
                hint="for example http://127.0.0.1:8470/tmdd/detector-data",
            )
        try:
            self.breaker = CircuitBreaker(
                g.breaker_failure_threshold, g.breaker_open_s, g.breaker_half_open_probes
            )
            self.backoff = Backoff(g.backoff_base_s, g.backoff_max_s)
            self.seen = RecentKeys(g.dedupe_capacity)  # acknowledged by the broker
        except ValueError as exc:
            raise UserError(
                f"the gateway's settings do not make sense: {exc}",
                hint="check the CASATWIN_GATEWAY_* variables (`casatwin config`)",
            ) from None
        self.in_flight: set[Hashable] = set()  # sent, neither acknowledged nor failed yet
        self.stats = GatewayStats()
        self.transitions: deque[Transition] = deque(maxlen=1000)
        self.clock = clock
        self.wall_clock = wall_clock
        self.rand = rand
        self._producer = producer
        self._owns_producer = producer is None
        self._session: aiohttp.ClientSession | None = None
        self._failures_in_row = 0
        self._failing_since = 0.0  # when the breaker last opened from closed
        self._last_report = 0.0
        self._reported = GatewayStats()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._producer is None:
            self._producer = Producer(self.settings.kafka, "casatwin-gateway")
        # Note: when the server drops the connection before answering, aiohttp sends the GET
        # once more at once (RFC 9112 allows it for idempotent requests); the poll counts as
        # one failure either way.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4))
        await asyncio.to_thread(self._remember_published)
        BREAKER_STATE.set(STATE_GAUGE[self.breaker.state])
        self._last_report = self.clock()
        log.info(
            "gateway started",
            api=self.config.api_url,
            stations=len(self.stations),
            poll_every_s=self.config.poll_interval_s,
            timeout_s=self.config.request_timeout_s,
            breaker=f"opens after {self.config.breaker_failure_threshold} failures in a row, "
            f"pauses {self.config.breaker_open_s:g} s",
        )

    async def run_until(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; nothing the API sends or fails to send ends this loop."""
        while not stop.is_set():
            try:
                wait_s = await self.step()
            except Exception:  # a bug, not bad input: say so loudly, keep the feed alive
                log.exception("unexpected error in the poll loop; carrying on")
                wait_s = self.config.poll_interval_s
            self.producer.poll(0)
            self._maybe_report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait_s)

    async def drain(self) -> None:
        """Close the HTTP session and deliver what is queued."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._producer is not None:
            if self._owns_producer:
                await asyncio.to_thread(self._producer.close, 10.0)
                self._producer = None  # let go of the client (and its connections) now
            else:
                await asyncio.to_thread(self._producer.flush, 10.0)
        log.info("gateway stopped", breaker=self.breaker.state.value, **asdict(self.stats))

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("Gateway.start() was not called")
        return self._producer

    # -- one step of the loop -----------------------------------------------------------------

    async def step(self) -> float:
        """Poll if the breaker lets us; returns the seconds to wait before the next step."""
        now = self.clock()
        self._note(self.breaker.tick(now))
        if not self.breaker.allows_requests:
            return self.breaker.wait_s(now)
        started = now
        result = await self.poll_once()
        now = self.clock()
        if result.ok:
            self._failures_in_row = 0
            self._note(self.breaker.record_success(now))
            return max(0.0, self.config.poll_interval_s - (now - started))
        self._failures_in_row += 1
        self._note(self.breaker.record_failure(now, result.reason))
        if not self.breaker.allows_requests:  # this failure opened it
            return self.breaker.wait_s(now)
        if result.transient:
            delay = self.backoff.delay(self._failures_in_row, self.rand)
            log.warning(
                "traffic API request failed; retrying with backoff",
                reason=result.reason,
                failures_in_row=self._failures_in_row,
                retry_in_s=round(delay, 2),
            )
            return delay
        log.warning(
            "traffic API poll failed; trying again at the next poll",
            reason=result.reason,
            failures_in_row=self._failures_in_row,
        )
        return self.config.poll_interval_s

    async def poll_once(self) -> PollResult:
        """fetch → parse → (validate → dedupe → publish) for each station."""
        if self._session is None:
            raise RuntimeError("Gateway.start() was not called")
        self.stats.polls += 1
        started = time.perf_counter()
        try:
            raw = await fetch_document(
                self._session,
                self.config.api_url,
                self.config.request_timeout_s,
                self.config.max_document_bytes,
            )
        except FetchError as exc:
            POLLS.labels(exc.kind).inc()
            self.stats.failed_polls += 1
            return PollResult(ok=False, transient=exc.transient, reason=exc.reason)
        finally:
            FETCH_SECONDS.observe(time.perf_counter() - started)
        try:
            reports = tmdd.parse(raw, self.config.max_document_bytes)
        except tmdd.DocumentError as exc:
            POLLS.labels("bad_document").inc()
            self.stats.failed_polls += 1
            self.stats.bad_documents += 1
            self._dead_letter_document(raw, str(exc))
            return PollResult(ok=False, transient=False, reason=str(exc))
        POLLS.labels("ok").inc()
        LAST_SUCCESS.set(self.wall_clock())
        result = PollResult(ok=True)
        now_ms = int(self.wall_clock() * 1000)
        for report in reports:
            self._take(report, now_ms, result)
        return result

    # -- the pipeline's per-reading steps -------------------------------------------------

    def _take(self, report: tmdd.StationReport, now_ms: int, result: PollResult) -> None:
        """validate → dedupe → publish one station report."""
        try:
            reading = normalise(
                report, self.stations, now_ms, round(self.config.max_clock_skew_s * 1000)
            )
        except InvalidReport as exc:
            # The next poll may serve the same bad report again: dead-letter it once.
            key = ("invalid", hashlib.blake2b(report.xml, digest_size=16).digest())
            if not self._known(key):
                dlq = DeadLetterWriter(self.producer, READING_STAGE)
                delivered = partial(self._delivered, key)
                dlq.send(report.xml, str(exc), key=report.station_id, on_delivery=delivered)
                self.in_flight.add(key)
                result.invalid += 1
                self.stats.invalid += 1
                READINGS.labels("invalid").inc()
            return
        key = (reading["station_id"], reading["ts"])
        if self._known(key):
            result.duplicates += 1
            self.stats.duplicates += 1
            READINGS.labels("duplicate").inc()
            return
        queued = self.producer.send_json(
            topics.SENSORS_HIGHWAY,
            dict(reading),
            key=reading["station_id"],
            timestamp_ms=reading["ts"],
            on_delivery=partial(self._delivered, key),
        )
        if queued:  # refused (buffer full) is counted by the producer and retried next poll
            self.in_flight.add(key)
            result.published += 1
            self.stats.published += 1
            READINGS.labels("published").inc()

    def _known(self, key: Hashable) -> bool:
        """Published already, or on its way: not to be sent again."""
        return key in self.seen or key in self.in_flight

    def _delivered(self, key: Hashable, acknowledged: bool) -> None:
        """A message's fate (on the thread serving the producer's callbacks): only what
        the broker acknowledged is remembered as published."""
        self.in_flight.discard(key)
        if acknowledged:
            self.seen.add(key)

    def _dead_letter_document(self, raw: bytes, error: str) -> None:
        payload = raw[:DLQ_PAYLOAD_LIMIT]
        if len(raw) > DLQ_PAYLOAD_LIMIT:
            error += f" (payload cut to its first {DLQ_PAYLOAD_LIMIT} bytes)"
        dlq = DeadLetterWriter(self.producer, XML_STAGE)
        dlq.send(payload, f"{error} [from {self.config.api_url}]")

    # -- bookkeeping ----------------------------------------------------------------------

    def _note(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self.transitions.append(transition)
        BREAKER_STATE.set(STATE_GAUGE[transition.after])
        BREAKER_TRANSITIONS.labels(transition.after.value).inc()
        fields: dict[str, object] = {
            "was": transition.before.value,
            "because": transition.reason,
        }
        if transition.after is BreakerState.OPEN:
            if transition.before is BreakerState.CLOSED:
                self._failing_since = transition.at
            fields["next_trial_in_s"] = self.config.breaker_open_s
            log.warning(describe(transition), **fields)
        else:
            if transition.after is BreakerState.CLOSED:
                fields["requests_paused_for_s"] = round(transition.at - self._failing_since, 1)
            log.info(describe(transition), **fields)

    def _maybe_report(self) -> None:
        now = self.clock()
        if now - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = now
        current, before = asdict(self.stats), asdict(self._reported)
        log.info(
            "highway feed",
            breaker=self.breaker.state.value,
            **{name: current[name] - before[name] for name in current},
        )
        self._reported = GatewayStats(**current)

    def _remember_published(self) -> None:
        """Load the keys of the readings the topic already holds, so that a restart does
        not publish the document of the moment a second time."""
        try:
            keys = published_keys(self.settings.kafka, self.config.dedupe_capacity)
        except UserError as exc:
            log.warning(
                "cannot read what was already published; a reading may repeat after this restart",
                reason=exc.message,
            )
            return
        self.seen.update(keys)
        if keys:
            log.info("remembered the readings already published", readings=len(keys))


def published_keys(
    settings: KafkaSettings, capacity: int, timeout_s: float = 5.0
) -> list[tuple[str, int]]:
    """(station, ts) of the newest readings on the highway topic, up to about ``capacity``."""
    reader = consumer.reader(
        settings,
        [topics.SENSORS_HIGHWAY],
        "casatwin-gateway-memory",
        start=f"-{max(1, capacity // topics.LOW_RATE_PARTITIONS)}",
        timeout_s=timeout_s,
    )
    try:
        found = consumer.read_to_end(reader, timeout_s)
    finally:
        reader.close()
    keys = []
    for message in found:
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            value = orjson.loads(message.value())
            keys.append((value["station_id"], value["ts"]))
    return keys


async def run(settings: Settings, stations: Collection[str], stop: asyncio.Event) -> Gateway:
    """The whole lifecycle: start, poll until ``stop``, drain."""
    gateway = Gateway(settings, stations)
    await gateway.start()
    try:
        await gateway.run_until(stop)
    finally:
        await gateway.drain()
    return gateway
