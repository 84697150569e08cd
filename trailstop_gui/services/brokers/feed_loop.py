"""A broker-neutral streaming loop: connect, subscribe, read, watchdog, reconnect with backoff and jitter.

Pure asyncio, no Qt: the FeedWorker runs it in its own thread and turns the callbacks into signals. Each
broker supplies a ``FeedProtocol`` (how to open the socket, what to send to subscribe, how to decode).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus, WebSocketException

from trailstop_gui.models.domain import InstrumentId, Tick
from trailstop_gui.services.brokers.errors import AuthError
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError

log = logging.getLogger("trailstop.feed")


class FeedState(enum.StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALE = "stale"
    RECONNECTING = "reconnecting"
    LOGIN_NEEDED = "login needed"
    STOPPED = "stopped"


class Depth(enum.Enum):
    """How much of the book a subscription needs: depth only where a product trails on bid/ask."""

    LTP = "ltp"
    DEPTH = "depth"


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """An order's new state, pushed by the broker's stream (Kite text message, Upstox portfolio feed)."""

    order_id: str
    status: str
    tag: str = ""
    filled_quantity: int = 0
    average_price: float = 0.0
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


def update_number(payload: Mapping[str, Any], key: str, feed: str) -> float:
    """A numeric field of a pushed order update: 0 when absent or empty, FeedDecodeError when unreadable.

    A malformed update must be skipped like any malformed message: an exception of another type would end
    the socket's session and cost a reconnect.
    """
    value = payload.get(key)
    if value is None or value == "":
        return 0.0
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(type(value).__name__)
        number = float(value)
    except (ValueError, OverflowError):
        raise FeedDecodeError(f"{feed}: order update field {key} is not a number") from None
    if not math.isfinite(number):
        raise FeedDecodeError(f"{feed}: order update field {key} is not a finite number")
    return number


@dataclass(frozen=True, slots=True)
class FeedBatch:
    ticks: list[Tick] = field(default_factory=list)
    orders: list[OrderUpdate] = field(default_factory=list)


class FeedProtocol(Protocol):
    """What one broker's stream looks like to the loop.

    ``silence_means_dead``: the server sends heartbeats (Kite, every second), so a silent socket is a dead
    one. Where it does not (Upstox: a quiet instrument sends nothing), WebSocket pings watch the link instead.
    """

    name: str
    silence_means_dead: bool

    async def open(self) -> ClientConnection:
        """Open an authenticated socket; raise AuthError when the token is refused."""
        ...

    def subscribe_frames(self, instruments: Mapping[InstrumentId, Depth]) -> list[str | bytes]: ...

    def unsubscribe_frames(self, instruments: list[InstrumentId]) -> list[str | bytes]: ...

    def decode(self, message: str | bytes) -> FeedBatch:
        """Turn one message into ticks and order updates; raise FeedDecodeError when malformed."""
        ...


@dataclass
class Backoff:
    """Exponential backoff with full jitter: many clients never reconnect in lock-step."""

    initial: float = 0.5
    maximum: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def is_auth_refusal(exc: BaseException) -> bool:
    if isinstance(exc, AuthError):
        return True
    return isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403)


class FeedLoop:
    """Keeps one broker stream alive and feeds every decoded batch to ``on_batch``.

    Thread use: ``run`` on the loop's thread; ``set_instruments`` and ``stop`` from any thread.
    """

    def __init__(
        self,
        protocol: FeedProtocol,
        *,
        on_batch: Callable[[FeedBatch], None],
        on_state: Callable[[FeedState, str], None] = lambda state, why: None,
        on_connected: Callable[[bool], None] = lambda reconnect: None,
        watchdog: float = 5.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.protocol = protocol
        # What the watchdog measures silence with: a test jumps it ahead instead of waiting out the silence.
        self.clock = clock
        self._on_batch = on_batch
        self._on_state = on_state
        self._on_connected = on_connected
        self.watchdog = watchdog
        self.backoff = backoff or Backoff()
        self._instruments: dict[InstrumentId, Depth] = {}
        self._subscribed: dict[InstrumentId, Depth] = {}
        self._socket: ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False  # asked before run() started: run() then returns at once
        self._wake_subscriptions: asyncio.Event | None = None
        self.state = FeedState.STOPPED
        self._stale = False
        self.connects = 0
        self.decode_errors = 0
        self.last_message_at = 0.0

    # ----------------------------------------------------------------- called from any thread

    def set_instruments(self, instruments: Mapping[InstrumentId, Depth]) -> None:
        """What the stream must carry; (un)subscribes on the live socket and after every reconnect."""
        snapshot = dict(instruments)
        loop = self._loop
        if loop is None:
            self._instruments = snapshot
            return
        loop.call_soon_threadsafe(self._apply_instruments, snapshot)

    def stop(self, *, abort: bool = False) -> None:
        """End the loop; ``abort``: drop the socket at once instead of the closing handshake."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(self._abort if abort else stopping.set)

    def _abort(self) -> None:
        # At process exit a polite close waits for the peer's closing frame, which may never come (the
        # interpreter is shutting down; seen with the in-process simulator: the feed thread outlived a 15 s
        # wait and Qt aborted the process). Nothing is left to say to the broker then.
        assert self._stopping is not None
        self._stopping.set()
        socket = self._socket
        transport = socket.transport if socket is not None else None
        if transport is not None:
            transport.abort()

    # ----------------------------------------------------------------- the loop

    def _set_state(self, state: FeedState, why: str = "") -> None:
        if state is not self.state:
            self.state = state
            log.info("%s feed: %s%s", self.protocol.name, state.value, f" ({why})" if why else "")
            self._on_state(state, why)

    def _apply_instruments(self, instruments: dict[InstrumentId, Depth]) -> None:
        self._instruments = instruments
        if self._wake_subscriptions is not None:
            self._wake_subscriptions.set()

    async def run(self) -> None:
        """Run until ``stop()`` or until the broker refuses the token (state LOGIN_NEEDED)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self._wake_subscriptions = asyncio.Event()
        try:
            while not self._stopping.is_set():
                self._set_state(FeedState.CONNECTING if self.connects == 0 else FeedState.RECONNECTING)
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_auth_refusal(exc):
                        # Reconnecting with a dead token only hammers the broker: wait for a new login.
                        self._set_state(FeedState.LOGIN_NEEDED, "the broker refused the access token")
                        return
                    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    log.warning("%s feed: connection lost (%s)", self.protocol.name, why)
                    self._set_state(FeedState.RECONNECTING, why)
                if self._stopping.is_set():
                    break
                delay = self.backoff.next_delay()
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            socket, self._socket = self._socket, None
            if socket is not None:
                await socket.close()
            if self.state is not FeedState.LOGIN_NEEDED:
                self._set_state(FeedState.STOPPED)
            self._loop = None

    async def _session(self) -> None:
        assert self._stopping is not None
        socket = await self.protocol.open()
        self._socket = socket
        self._stale = False
        helpers: list[asyncio.Future[None]] = []
        try:
            self._subscribed = {}
            await self._sync_subscriptions(socket)
            reconnect = self.connects > 0
            self.connects += 1
            self.last_message_at = self.clock()
            self._set_state(FeedState.LIVE)
            self.backoff.reset()
            self._on_connected(reconnect)
            # The read loop does nothing but read: the watchdog, subscription changes and stop requests
            # run beside it, so a message costs no more than its decode and the engine.
            helpers = [
                asyncio.ensure_future(self._watchdog_task(socket)),
                asyncio.ensure_future(self._subscription_task(socket)),
                asyncio.ensure_future(self._stop_task(socket)),
            ]
            handle = self._handle
            async for message in socket:
                self.last_message_at = self.clock()
                handle(message)
            if self._stopping.is_set():
                return
            if self._stale:
                raise TimeoutError(f"no data or heartbeat for {self.watchdog:g} s")
            raise ConnectionError("the server closed the feed")
        finally:
            for helper in helpers:
                helper.cancel()
            self._socket = None
            await socket.close()

    async def _watchdog_task(self, socket: ClientConnection) -> None:
        if not self.protocol.silence_means_dead:
            return  # the protocol's WebSocket pings close a dead link; silence alone proves nothing
        while True:
            await asyncio.sleep(min(1.0, self.watchdog / 4))
            silent = self.clock() - self.last_message_at
            if silent > self.watchdog:
                # Silent dead socket: open at the TCP level, but no data and no heartbeat.
                self._stale = True
                self._set_state(FeedState.STALE, f"nothing received for {self.watchdog:g} s")
                transport = socket.transport
                if transport is not None:
                    transport.abort()  # a polite close would wait on the very peer that went silent
                return

    async def _subscription_task(self, socket: ClientConnection) -> None:
        assert self._wake_subscriptions is not None
        while True:
            await self._wake_subscriptions.wait()
            self._wake_subscriptions.clear()
            await self._sync_subscriptions(socket)

    async def _stop_task(self, socket: ClientConnection) -> None:
        assert self._stopping is not None
        await self._stopping.wait()
        await socket.close()

    def _handle(self, message: str | bytes) -> None:
        try:
            batch = self.protocol.decode(message)
        except FeedDecodeError as exc:
            self.decode_errors += 1
            log.warning("%s feed: skipped a malformed message (%s)", self.protocol.name, exc)
            return
        if batch.ticks or batch.orders:
            self._on_batch(batch)

    async def _sync_subscriptions(self, socket: ClientConnection) -> None:
        wanted, current = self._instruments, self._subscribed
        gone = [i for i in current if i not in wanted]
        changed = {i: d for i, d in wanted.items() if current.get(i) is not d}
        frames: list[str | bytes] = []
        if gone:
            frames += self.protocol.unsubscribe_frames(gone)
        if changed:
            frames += self.protocol.subscribe_frames(changed)
        for frame in frames:
            await socket.send(frame)
        self._subscribed = dict(wanted)


__all__ = [
    "Backoff",
    "Depth",
    "FeedBatch",
    "FeedLoop",
    "FeedProtocol",
    "FeedState",
    "OrderUpdate",
    "WebSocketException",
    "is_auth_refusal",
    "update_number",
]
