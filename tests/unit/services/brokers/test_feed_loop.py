"""FeedLoop's watchdog on an injected clock: a heartbeat stream that goes silent is dead, a quiet Upstox
market is not. The clock is jumped ahead, so a minute of silence costs no minute of the test's time."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from trailstop_gui.models.domain import InstrumentId
from trailstop_gui.services.brokers.feed_loop import Depth, FeedBatch, FeedLoop, FeedState
from trailstop_gui.services.brokers.kite_feed import KiteFeed
from trailstop_gui.services.brokers.upstox_feed import UpstoxFeed, UpstoxPortfolioFeed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class Socket:
    transport = None

    def __init__(self) -> None:
        self.transport = Transport()  # type: ignore[assignment]


class Protocol:
    name = "test"

    def __init__(self, silence_means_dead: bool) -> None:
        self.silence_means_dead = silence_means_dead

    def subscribe_frames(self, instruments: Mapping[InstrumentId, Depth]) -> list[str | bytes]:
        return []

    def unsubscribe_frames(self, instruments: list[InstrumentId]) -> list[str | bytes]:
        return []

    def decode(self, message: str | bytes) -> FeedBatch:
        return FeedBatch()


def live_loop(silence_means_dead: bool, clock: Clock) -> FeedLoop:
    loop = FeedLoop(Protocol(silence_means_dead), on_batch=lambda _batch: None, watchdog=0.4, clock=clock)  # type: ignore[arg-type]
    loop.state = FeedState.LIVE
    loop.last_message_at = clock()
    return loop


def watch(loop: FeedLoop, socket: Any) -> None:
    """Run the watchdog as the loop runs it beside the read loop; it returns once it has decided."""

    async def main() -> None:
        await asyncio.wait_for(loop._watchdog_task(socket), timeout=5)

    asyncio.run(main())


def test_a_heartbeat_stream_silent_past_the_watchdog_is_aborted_as_stale() -> None:
    clock = Clock()
    loop = live_loop(True, clock)
    socket = Socket()
    clock.now += 60.0  # a minute without a message or a heartbeat, far past the 0.4 s watchdog
    watch(loop, socket)
    assert loop.state is FeedState.STALE and loop._stale
    assert socket.transport.aborted  # type: ignore[attr-defined]


def test_a_quiet_market_without_heartbeats_is_no_reason_to_reconnect() -> None:
    clock = Clock()
    loop = live_loop(False, clock)
    socket = Socket()
    clock.now += 3600.0  # an hour without a tick
    watch(loop, socket)  # returns at once: silence proves nothing on this stream
    assert loop.state is FeedState.LIVE and not loop._stale
    assert not socket.transport.aborted  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("protocol", "heartbeats"),
    [(KiteFeed, True), (UpstoxFeed, False), (UpstoxPortfolioFeed, False)],
)
def test_which_streams_send_heartbeats(protocol: type, heartbeats: bool) -> None:
    # Kite's ticker sends a 1-byte heartbeat every second (kite.trade/docs/connect/v3/websocket); Upstox's
    # feeds send nothing while nothing changes.
    assert protocol.silence_means_dead is heartbeats
