"""When each broker's feed was working (`FeedTracker`): the time the budgets of the checks count."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable

from bench.chaos.config import BROKERS

LIVE_STATES = ("live",)
DOWN_STATES = ("connecting", "stale", "reconnecting", "login needed", "stopped", "connection lost")
FEED_LINE = re.compile(r"trailstop\.feed: (kite|upstox) feed: ([a-z ]+?)(?: \(|$)")

Interval = tuple[float, float]


def _overlap(intervals: Iterable[Interval], t0: float, t1: float) -> float:
    return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in intervals)


def _subtract(intervals: list[Interval], holes: Iterable[Interval]) -> list[Interval]:
    result = intervals
    for h0, h1 in holes:
        kept: list[Interval] = []
        for a, b in result:
            if h1 <= a or h0 >= b:
                kept.append((a, b))
                continue
            if a < h0:
                kept.append((a, h0))
            if h1 < b:
                kept.append((h1, b))
        result = kept
    return result


class FeedTracker:
    """When each broker's feed was working: the app's own log lines, minus the feed faults injected.

    A feed counts as working while the app runs, its last state line for that broker says ``live``, and no
    injected fault is silencing it: a stall for its whole duration; a drop or a token expiry until the
    app logs ``live`` again (after a reconnect, or after the restart that brings a new login).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generations: list[list[float]] = []  # [start, end]; end is inf while it runs
        self._states: dict[str, list[tuple[float, bool]]] = {b: [] for b in BROKERS}
        self._holes: dict[str, list[tuple[float, float | None]]] = {b: [] for b in BROKERS}

    def process_started(self, t: float) -> None:
        with self._lock:
            self.generations.append([t, math.inf])
            for b in BROKERS:
                self._states[b].append((t, False))

    def process_ended(self, t: float) -> None:
        with self._lock:
            if self.generations and self.generations[-1][1] == math.inf:
                self.generations[-1][1] = t
            for b in BROKERS:
                self._states[b].append((t, False))

    def on_line(self, t: float, line: str) -> None:
        match = FEED_LINE.search(line)
        if match is None:
            return
        broker, state = match.group(1), match.group(2).strip()
        if state in LIVE_STATES or state in DOWN_STATES:
            with self._lock:
                self._states[broker].append((t, state in LIVE_STATES))

    def silenced(self, t: float, brokers: Iterable[str], seconds: float | None = None) -> None:
        """A fault cut the feed at ``t``: for ``seconds``, or (None) until the app says live again."""
        with self._lock:
            for b in brokers:
                self._holes[b].append((t, None if seconds is None else t + seconds))

    def up_intervals(self, broker: str, now: float | None = None) -> list[Interval]:
        end = time.time() if now is None else now
        with self._lock:
            states = sorted(self._states[broker])
            holes = list(self._holes[broker])
        live: list[Interval] = []
        since: float | None = None
        for t, up in states:
            if up and since is None:
                since = t
            elif not up and since is not None:
                live.append((since, t))
                since = None
        if since is not None:
            live.append((since, end))
        resolved: list[Interval] = []
        for start, hard_end in holes:
            if hard_end is None:
                hard_end = next((t for t, up in states if up and t > start), end)
            resolved.append((start, hard_end))
        return _subtract(live, resolved)

    def available(self, broker: str, t0: float, t1: float, now: float | None = None) -> float:
        return _overlap(self.up_intervals(broker, now), t0, t1)

    def is_up(self, broker: str, t: float | None = None) -> bool:
        at = time.time() if t is None else t
        return any(a <= at < b for a, b in self.up_intervals(broker, at + 1e-3))

    def longest_outage(self, broker: str, now: float) -> tuple[float, float]:
        """The longest time the feed was not working while the app ran: (seconds, start)."""
        ups = self.up_intervals(broker, now)
        worst = (0.0, 0.0)
        with self._lock:
            generations = [(a, min(b, now)) for a, b in self.generations]
        for g0, g1 in generations:
            inside = [(max(a, g0), min(b, g1)) for a, b in ups if b > g0 and a < g1]
            edges = [g0, *[x for iv in inside for x in iv], g1]
            for i in range(0, len(edges), 2):
                gap = edges[i + 1] - edges[i]
                if gap > worst[0]:
                    worst = (gap, edges[i])
        return worst
