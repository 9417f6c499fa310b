"""Fan-out to the WebSocket clients: one bounded queue per client, one encoding per update.

Every update is encoded once (JSON text or a binary positions frame) and the same bytes
object is handed to every client. Each client has its own writer task, so a client whose
socket is full waits alone:

* infractions, dispatch and congestion updates go through a bounded FIFO queue — never
  dropped; when it is full the client is too slow and is disconnected with a reason;
* positions are not queued: at each tick a client is woken up and, when its writer is
  free, gets one frame with every vehicle that changed since the last frame it received
  (latest position wins), shared with every client as far behind as it is;
* a client stuck in one send for ``stall_timeout_s`` is disconnected too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from prometheus_client import Counter, Gauge, Histogram

from casatwin.logs import get_logger
from casatwin.observability.families import WS_QUEUE_MAX, WS_QUEUED
from casatwin_dashboard.positions import frame_header

log = get_logger("dashboard")

CLIENTS = Gauge("casatwin_dashboard_clients", "WebSocket clients connected")
DROPPED = Counter(
    "casatwin_dashboard_clients_dropped_total",
    "Clients disconnected for being too slow",
    ["reason"],
)
SENT_BYTES = Counter("casatwin_dashboard_sent_bytes_total", "Bytes pushed to WebSocket clients")
PUSH_SECONDS = Histogram(
    "casatwin_dashboard_push_seconds",
    "From a positions tick to its frame handed to a client's socket",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5),
)

CLOSE_TOO_SLOW = 4008  # application range (4000-4999): the reason is in the close message
CLOSE_TIMEOUT_S = 5.0


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


@dataclass(eq=False)
class Client:
    """One WebSocket client: its queue, where it is in the positions stream, its writer."""

    ws: web.WebSocketResponse
    transport: Any
    view: str
    remote: str
    queue_max: int
    queue: deque[bytes] = field(default_factory=deque)
    positions_tick: int = -1  # the tick of the last positions frame it received
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    sending_since: float | None = None  # monotonic time the current send started
    connected_at: float = field(default_factory=time.monotonic)
    dropped_reason: str = ""
    writer: asyncio.Task[None] | None = None

    def push(self, data: bytes) -> bool:
        """Queue a message; False when the queue is full (the client must be dropped)."""
        if len(self.queue) >= self.queue_max:
            return False
        self.queue.append(data)
        self.wakeup.set()
        return True

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.sending_since is None else now - self.sending_since


class Fanout:
    """The connected clients and the two ways updates reach them."""

    def __init__(
        self,
        queue_max: int,
        stall_timeout_s: float,
        positions: Callable[[int], tuple[int, bytes]],
    ) -> None:
        """``positions(since)`` returns (current tick, frame of changes since ``since``)."""
        self.queue_max = queue_max
        self.stall_timeout_s = stall_timeout_s
        self._positions = positions
        self.push_ms: deque[float] = deque(maxlen=5000)  # tick → socket, for /api/health
        self.clients: set[Client] = set()
        self.dropped: deque[dict[str, Any]] = deque(maxlen=50)  # for /api/health
        self.tick = 0
        self._closing: set[asyncio.Task[None]] = set()

    # -- clients -------------------------------------------------------------------------

    def add(
        self, ws: web.WebSocketResponse, request: web.Request, view: str, first: bytes
    ) -> Client:
        """Register a client whose first message is ``first`` (its snapshot)."""
        client = Client(
            ws=ws,
            transport=request.transport,
            view=view,
            remote=request.remote or "",
            queue_max=self.queue_max,
        )
        client.push(first)
        self.clients.add(client)
        CLIENTS.set(len(self.clients))
        client.writer = asyncio.create_task(self._write(client), name=f"ws-writer-{client.remote}")
        return client

    def remove(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            CLIENTS.set(len(self.clients))
        if client.writer is not None and not client.writer.done():
            client.writer.cancel()

    def drop(self, client: Client, reason: str, kind: str) -> None:
        """Disconnect a client that cannot keep up; the others carry on untouched."""
        if client.dropped_reason:
            return
        client.dropped_reason = reason
        self.remove(client)
        DROPPED.labels(kind).inc()
        self.dropped.append(
            {"remote": client.remote, "view": client.view, "reason": reason, "at": time.time()}
        )
        log.warning("client too slow; disconnected", client=client.remote, reason=reason)
        closing = asyncio.create_task(self._close(client, CLOSE_TOO_SLOW, reason))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close_all(self, code: int, reason: str) -> None:
        clients = list(self.clients)
        for client in clients:
            self.remove(client)
        await asyncio.gather(*(self._close(c, code, reason) for c in clients))

    @staticmethod
    async def _close(client: Client, code: int, reason: str) -> None:
        """Send the close frame with the reason; abort if the client does not take it."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                client.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT_S
            )
        transport = client.transport
        if transport is not None and transport.get_write_buffer_size() > 0:
            transport.abort()  # whatever is still buffered will never be read

    # -- updates -------------------------------------------------------------------------

    def broadcast(self, data: bytes) -> None:
        """A message every client must get (infractions, dispatch, congestion, vehicles)."""
        for client in list(self.clients):
            if not client.push(data):
                self.drop(client, f"too slow: {len(client.queue)} messages waiting", "queue_full")

    def positions_ready(self, tick: int) -> None:
        """A new tick: wake every client up, drop the ones stuck in a send."""
        self.tick = tick
        now = time.monotonic()
        depths = [len(client.queue) for client in self.clients]
        WS_QUEUED.set(sum(depths))
        WS_QUEUE_MAX.set(max(depths, default=0))
        for client in list(self.clients):
            stalled = client.stalled_for(now)
            if stalled > self.stall_timeout_s:
                self.drop(client, f"too slow: nothing delivered for {stalled:.0f} s", "stalled")
            else:
                client.wakeup.set()

    async def _write(self, client: Client) -> None:
        ws = client.ws
        try:
            while True:
                await client.wakeup.wait()
                client.wakeup.clear()
                while True:
                    if client.queue:
                        data = client.queue.popleft()
                        kind = WSMsgType.TEXT
                    elif client.positions_tick < self.tick:
                        # A client's first frame follows its snapshot: connection, not push.
                        timed = client.positions_tick >= 0
                        tick, data = self._positions(client.positions_tick)
                        client.positions_tick = tick
                        kind = WSMsgType.BINARY
                        frame_ts_ms = frame_header(data)[1]
                    else:
                        break
                    client.sending_since = time.monotonic()
                    await ws.send_frame(data, kind)
                    client.sending_since = None
                    SENT_BYTES.inc(len(data))
                    if kind is WSMsgType.BINARY and timed:
                        push_ms = time.time() * 1000 - frame_ts_ms
                        self.push_ms.append(push_ms)
                        PUSH_SECONDS.observe(push_ms / 1000)
        except (ConnectionError, RuntimeError):
            self.remove(client)  # the client went away; its handler cleans up
        except Exception:
            log.exception("writer failed; client disconnected", client=client.remote)
            self.remove(client)
            await self._close(client, 1011, "internal error")
