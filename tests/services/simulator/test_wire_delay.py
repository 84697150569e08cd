"""The latency fault's delays: never shorter than asked, and the loop goes on serving while they wait."""

from __future__ import annotations

import asyncio
import time

from trailstop_gui.simulator import wire_delay


def test_a_delay_never_ends_before_its_due_time() -> None:
    async def run() -> list[float]:
        early = []
        for _ in range(20):
            due = time.monotonic() + 0.003
            await wire_delay.wait_until(due)
            early.append(due - time.monotonic())
        return early

    assert max(asyncio.run(run())) <= 0


def test_a_due_time_already_past_returns_at_once_without_sleeping() -> None:
    ticks = iter([10.0, 10.0])  # the clock is read once for the timer, once for the wait: both past due

    asyncio.run(wire_delay.wait_until(5.0, clock=lambda: next(ticks)))


def test_other_work_runs_on_the_loop_while_a_delay_waits() -> None:
    """The last stretch yields to the loop instead of blocking it: a frame's delay holds up nothing else."""

    async def run() -> tuple[int, int]:
        turns = 0
        done = False

        async def other() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        before = turns
        await wire_delay.delay(0.01)
        done = True
        await task
        return before, turns

    before, after = asyncio.run(run())
    # Hundreds of turns in the spin alone (SPIN is 2 ms); the timer part gives a few more.
    assert after - before > 20
