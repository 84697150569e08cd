"""Stopping a feed loop: a stop asked before the loop ran is kept, never lost."""

from __future__ import annotations

import asyncio

from trailstop_gui.services.brokers.feed_loop import FeedLoop, FeedState


class NeverOpens:
    """A protocol whose socket would never open: a loop that tried to connect would hang on it."""

    name = "test"
    silence_means_dead = False

    async def open(self) -> None:
        await asyncio.Event().wait()


def test_a_stop_asked_before_the_loop_ran_ends_it_without_connecting() -> None:
    """Found at interpreter exit: a feed stopped in the moment between its thread starting and its loop
    running was never told (stop() found no loop to tell), ran on, and Qt aborted the process."""
    protocol = NeverOpens()
    loop = FeedLoop(protocol, on_batch=lambda batch: None)  # type: ignore[arg-type]
    loop.stop()
    asyncio.run(asyncio.wait_for(loop.run(), timeout=2.0))
    assert loop.state is FeedState.STOPPED and loop.connects == 0
