"""Helpers every facade shares: the app keys, broker error responses and per-prefix error renderers."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from aiohttp import web

from trailstop_gui.simulator.core import Simulator

ErrorRenderer = Callable[[int, str], web.Response]

SIM_KEY = web.AppKey("trailstop_sim", Simulator)
RENDERERS_KEY: web.AppKey[list[tuple[str, ErrorRenderer]]] = web.AppKey("trailstop_error_renderers")


class BrokerError(Exception):
    """Raised by a handler to answer with a ready-made error response in its broker's envelope."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text or str(response.status))
        self.response = response


def add_error_renderer(app: web.Application, prefix: str, renderer: ErrorRenderer) -> None:
    """Errors for paths under ``prefix`` (404s, 405s, injected faults, crashes) use ``renderer``."""
    if RENDERERS_KEY not in app:
        app[RENDERERS_KEY] = []
    app[RENDERERS_KEY].append((prefix, renderer))


def render_error(app: web.Application, path: str, status: int, message: str) -> web.Response:
    best: tuple[str, ErrorRenderer] | None = None
    for prefix, renderer in app.get(RENDERERS_KEY, []):
        if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, renderer)
    if best is None:
        return web.json_response({"status": "error", "message": message}, status=status)
    return best[1](status, message)


class OrderRateLimiter:
    """A broker's per-user order limits across place, modify and cancel. ``limits`` gives (a second,
    a minute) and is read on every order, so that a test can lift them by patching the facade's constants."""

    def __init__(
        self, limits: Callable[[], tuple[int, int]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._stamps: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def allow(self, user_id: str) -> bool:
        per_second, per_minute = self._limits()
        now = self._clock()
        stamps = self._stamps[user_id]
        while stamps and now - stamps[0] >= 60.0:
            stamps.popleft()
        last_second = sum(1 for s in stamps if now - s < 1.0)
        if last_second >= per_second or len(stamps) >= per_minute:
            return False
        stamps.append(now)
        return True
