"""The latency fault's delays, kept to their nominal length within a fraction of a millisecond.

An asyncio timer wakes up to a millisecond or two late: epoll takes its timeout in whole milliseconds,
rounded up, and the kernel adds timer slack. Measured under bench.tick_to_exit, a 12.5 ms ``asyncio.sleep``
on a request came out 14.4 ms, so the fault alone cost a 25 ms round trip about 28 ms, and the bench
charged the simulator's error to the app. A delay here sleeps to just short of its due time and then yields
to the loop until the due time comes: other coroutines and callbacks run meanwhile, and the cost is a few
hundred loop turns per delayed message, only under the latency fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# How long before the due time the timer hands over to the yielding wait: above asyncio's worst timer
# lateness here (rounding to the millisecond plus slack), so the timer itself never wakes up late.
SPIN = 0.002


async def wait_until(due: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Return at ``due`` on ``clock`` (time.monotonic: the loop's own clock), never before it."""
    ahead = due - SPIN - clock()
    if ahead > 0:
        await asyncio.sleep(ahead)
    while clock() < due:
        await asyncio.sleep(0)


async def delay(seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
    """``asyncio.sleep(seconds)``, kept to its length (see the module's docstring)."""
    await wait_until(clock() + seconds, clock)
