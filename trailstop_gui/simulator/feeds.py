"""WebSocket connections of every facade: a common connection class, the registry behind /_sim/feeds.

A facade subclasses nothing: it creates a :class:`FeedConnection` for each accepted socket, keeps its
subscriptions in ``conn.subscriptions`` and sends through ``send_bytes``/``send_str``, which honour the
stall fault (nothing leaves a stalled socket, pings go unanswered) and the latency fault (each frame leaves
half a round trip after it was sent, in order), and never block the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from trailstop_gui.simulator import wire_delay

if TYPE_CHECKING:
    from trailstop_gui.simulator.faults import Faults

log = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 20000  # a client this far behind is treated as dead, as a real server would
_ids = itertools.count(1)


class FeedConnection:
    """One accepted WebSocket with its broker, user, token and subscriptions (instrument id -> mode)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        faults: Faults,
        broker: str,
        user_id: str,
        access_token: str,
        kind: str,
    ) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.broker = broker
        self.user_id = user_id
        self.access_token = access_token
        self.kind = kind  # e.g. "kite-ticker", "upstox-market", "upstox-portfolio"
        self.path = request.path
        self.opened_at = time.time()
        self.subscriptions: dict[str, str] = {}
        self.frames_sent = 0
        self._faults = faults
        self._transport = request.transport
        # Each frame with the loop time it may leave at (the latency fault; 0: at once).
        self._queue: asyncio.Queue[tuple[bytes | str, float] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    # -- sending ---------------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        self._enqueue(data)

    def send_str(self, text: str) -> None:
        self._enqueue(text)

    def _enqueue(self, frame: bytes | str) -> None:
        if self._faults.ws_stalled or self.ws.closed:
            return
        if self._queue.qsize() >= MAX_QUEUED_FRAMES:
            log.warning("feed %s: client too slow, dropping it", self.id)
            self.drop(abort=True)
            return
        one_way = self._faults.one_way
        self._queue.put_nowait((frame, self._faults.now() + one_way if one_way else 0.0))

    async def _write(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None or self.ws.closed:
                return
            frame, due = item
            # A fixed delay per frame, not a rate: frames queued behind it are already due when it leaves.
            if due and due > self._faults.now():
                await wire_delay.wait_until(due, self._faults.now)
                if self.ws.closed:
                    return
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
                self.frames_sent += 1
            except (ConnectionError, RuntimeError):
                return

    # -- the connection's life -------------------------------------------------------------------

    async def run(
        self,
        on_text: Callable[[str], None],
        on_binary: Callable[[bytes], None] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        """Read client messages until the socket closes; replies to pings unless stalled."""
        self._writer = asyncio.create_task(self._write())
        try:
            if on_open is not None:
                on_open()
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    on_text(msg.data)
                elif msg.type == WSMsgType.BINARY and on_binary is not None:
                    on_binary(msg.data)
                elif msg.type == WSMsgType.PING:
                    if not self._faults.ws_stalled:
                        await self.ws.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._queue.put_nowait(None)
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._writer

    def drop(self, abort: bool = True) -> None:
        """Abort the TCP connection (no close frame), or close it cleanly with 1001 going away."""
        if abort and self._transport is not None:
            self._transport.abort()
        else:
            asyncio.ensure_future(self.ws.close(code=1001, message=b"going away"))

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "broker": self.broker,
            "kind": self.kind,
            "user_id": self.user_id,
            "path": self.path,
            "opened_at": self.opened_at,
            "subscriptions": dict(self.subscriptions),
            "frames_sent": self.frames_sent,
            "stalled": self._faults.ws_stalled,
        }


class FeedRegistry:
    """Every open feed connection, whichever facade accepted it."""

    def __init__(self) -> None:
        self._connections: dict[int, FeedConnection] = {}

    def add(self, conn: FeedConnection) -> None:
        self._connections[conn.id] = conn

    def remove(self, conn: FeedConnection) -> None:
        self._connections.pop(conn.id, None)

    def connections(self, broker: str | None = None) -> list[FeedConnection]:
        return [c for c in self._connections.values() if broker in (None, c.broker)]

    def drop(
        self,
        broker: str | None = None,
        abort: bool = True,
        where: Callable[[FeedConnection], bool] | None = None,
    ) -> int:
        dropped = 0
        for conn in self.connections(broker):
            if where is None or where(conn):
                conn.drop(abort=abort)
                dropped += 1
        return dropped

    async def close_all(self) -> None:
        closing: list[Awaitable[bool]] = [
            c.ws.close(code=1001, message=b"server shutdown") for c in self.connections()
        ]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
