"""A thread-safe client-side rate limiter over several sliding windows, with a fast lane for exits.

Brokers count orders per user over more than one window at once (Kite: 10 a second and 200 a minute).
Going over gets HTTP 429, and a 429 on an exit order is the worst possible moment to get one, so every
order call waits here first. ``acquire(priority=True)`` (exits) is served before any waiting normal
call, and ``reserved`` slots per window can be kept for priority calls only.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["KITE_ORDER_WINDOWS", "UPSTOX_ORDER_WINDOWS", "RateLimiter", "RateWindow"]


@dataclass(frozen=True, slots=True)
class RateWindow:
    """At most ``limit`` calls in any ``period`` seconds."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError(f"rate window: need limit >= 1 and period > 0, got {self.limit}/{self.period}")


KITE_ORDER_WINDOWS = (RateWindow(10, 1.0), RateWindow(200, 60.0))
# Upstox allows 50 a second only to exchange-registered algos; retail API use without a registration (ours)
# is held to 10 a second, as on Kite, by the exchanges' retail-algo framework (circular of 5 May 2025, in
# force from 1 April 2026). Sources: upstox.com/developer/api-documentation/rate-limiting ("Regular Algos":
# 10/s, 500/min, 2000/30 min per user per API), PROTOCOLS.md "The real brokers in 2026".
UPSTOX_ORDER_WINDOWS = (RateWindow(10, 1.0), RateWindow(500, 60.0), RateWindow(2000, 1800.0))

# How long a caller that is behind a higher-ranked waiter sleeps before looking again. That waiter
# takes the free slot within microseconds, so this is only ever a short pause.
_QUEUE_POLL = 0.002
# A grant this close to the edge of its window counts as gone: clock arithmetic in floats must not
# leave a waiter sleeping 1e-16 s forever.
_EDGE = 1e-9


class RateLimiter:
    """Blocks callers until every window has room. Safe to share between threads.

    ``clock`` and ``sleep`` are injectable so that tests can drive time by hand.
    """

    def __init__(
        self,
        windows: Sequence[RateWindow | tuple[int, float]],
        *,
        reserved: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._windows = tuple(w if isinstance(w, RateWindow) else RateWindow(*w) for w in windows)
        if not self._windows:
            raise ValueError("rate limiter: at least one window is needed")
        if reserved < 0 or any(reserved >= w.limit for w in self._windows):
            raise ValueError(f"rate limiter: reserved must be >= 0 and below every limit, got {reserved}")
        self._reserved = reserved
        self._clock = clock
        self._sleep = sleep
        self._horizon = max(w.period for w in self._windows)
        self._lock = threading.Lock()
        self._grants: list[float] = []  # times of granted calls, oldest first, within the horizon
        self._waiting: list[tuple[int, int]] = []  # (rank, ticket), sorted: priority first, then FIFO
        self._tickets = itertools.count()

    @property
    def windows(self) -> tuple[RateWindow, ...]:
        return self._windows

    def acquire(self, timeout: float | None = None, *, priority: bool = False) -> bool:
        """Wait for a slot and take it. False if none came within ``timeout`` seconds (None: wait on)."""
        entry = (0 if priority else 1, next(self._tickets))
        with self._lock:
            start = self._clock()
            deadline = None if timeout is None else start + max(0.0, timeout)
            bisect.insort(self._waiting, entry)
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    self._prune(now)
                    wait = self._wait_for(now, priority)
                    first = self._waiting[0] == entry
                    if first and wait <= 0:
                        self._grants.append(now)
                        return True
                    if not first:
                        wait = max(wait, _QUEUE_POLL)
                    if deadline is not None:
                        if now >= deadline:
                            return False
                        wait = min(wait, deadline - now)
                self._sleep(wait)
        finally:
            with self._lock:
                self._waiting.remove(entry)

    def try_acquire(self, *, priority: bool = False) -> bool:
        """Take a slot only if one is free now."""
        return self.acquire(0.0, priority=priority)

    def available_in(self, *, priority: bool = False) -> float:
        """Seconds until a call of this kind could go, ignoring other waiters (0 when it could go now)."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            return max(0.0, self._wait_for(now, priority))

    def _prune(self, now: float) -> None:
        cut = bisect.bisect_right(self._grants, now - self._horizon + _EDGE)
        if cut:
            del self._grants[:cut]

    def _wait_for(self, now: float, priority: bool) -> float:
        """Seconds until every window has room for one more call of this kind."""
        longest = 0.0
        for window in self._windows:
            allowed = window.limit if priority else window.limit - self._reserved
            start = bisect.bisect_right(self._grants, now - window.period + _EDGE)
            used = len(self._grants) - start
            if used >= allowed:
                # The call can go once enough of this window's grants have aged out.
                oldest_that_must_leave = self._grants[start + used - allowed]
                longest = max(longest, oldest_that_must_leave + window.period - now)
        return longest
