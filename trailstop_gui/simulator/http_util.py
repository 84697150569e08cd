"""Helpers every facade shares: the app keys, broker error responses and per-prefix error renderers."""

from __future__ import annotations

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
