"""One retry policy for the exit path: exponential backoff with a ceiling, and a 429's Retry-After.

Used by the exit jobs (sending an exit, the reads around it, the look-up after a lost reply), by the
safety stop (its calls on the exit path, its per-protection retries, its reads of a lagging book) and by
the entry's look-up and watch (protection_service.py), so that every loop waits by the same rule.

Why not tenacity: these loops do work between attempts that decides what the next attempt is (journal
"exit_sending" before each send, look a lost order up, switch to a sliced order, give up at once on an
ambiguous reply), and they sleep through an injected ``sleep`` so tests never wait; tenacity would wrap
each of those in a callback and hide the loop. The rule itself is a few lines, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from trailstop_gui.services.brokers.errors import RateLimitedError, TemporaryError

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Pauses that start at ``initial`` and grow by ``factor``, never past ``maximum``."""

    initial: float
    maximum: float
    factor: float = 2.0

    def nth(self, n: int) -> float:
        """The pause after ``n`` failures in a row (0: the first pause)."""
        return min(self.maximum, self.initial * self.factor**n)

    def next(self, pause: float) -> float:
        """The pause after ``pause``."""
        return min(self.maximum, pause * self.factor)

    def honour(self, pause: float, exc: BaseException) -> float:
        """The pause before the next attempt after ``exc``: a 429's Retry-After lengthens it, never past
        ``maximum`` (the adapters already cap the header at errors.RETRY_AFTER_CAP: a Retry-After of 3600
        once held an exit for an hour, issue 13 item 10)."""
        if isinstance(exc, RateLimitedError) and exc.retry_after:
            return min(self.maximum, max(pause, exc.retry_after))
        return pause


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    backoff: Backoff,
    sleep: Callable[[float], None],
    give_up: Callable[[TemporaryError], bool] = lambda _exc: False,
    on_retry: Callable[[int, TemporaryError], None] | None = None,
    honour_retry_after: bool = False,
) -> T:
    """``fn()``, tried again after a TemporaryError up to ``attempts`` times in all; the last error (or one
    ``give_up`` says to stop at) is raised. Any other error is raised at once: it is not temporary.

    ``honour_retry_after``: a 429's Retry-After lengthens the pause (Backoff.honour). Off by default: the
    reads around an exit keep their own short backoff, so a header never holds up a position read on the
    exit path; sending the exit itself honours it (exit_jobs._send).
    """
    pause = backoff.initial
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except TemporaryError as exc:
            if attempt >= attempts or give_up(exc):
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            if honour_retry_after:
                pause = backoff.honour(pause, exc)
            sleep(pause)
            pause = backoff.next(pause)
    raise ValueError(f"attempts must be at least 1, not {attempts}")


def polls(
    backoff: Backoff,
    window: float,
    *,
    sleep: Callable[[float], None],
    clock: Callable[[], float] | None = None,
) -> Iterator[int]:
    """Looks 0, 1, 2, ... until ``window`` seconds have passed, a ``backoff`` pause after each look: for a
    loop that reads until the broker shows something (an entry's fill, an order a lagging book hides).

    ``clock`` None: the window counts the pauses alone (a look's own time is not counted).
    """
    start = clock() if clock is not None else 0.0
    waited, pause, look = 0.0, backoff.initial, 0
    while (clock() - start if clock is not None else waited) < window:
        yield look
        look += 1
        sleep(pause)
        waited += pause
        pause = backoff.next(pause)
