"""The Upstox facade under /v2/ and /v3/: login dialog and token exchange, REST, and the two WebSockets."""

from __future__ import annotations

from aiohttp import web

from trailstop_gui.simulator import upstox_api, upstox_feeds, upstox_login
from trailstop_gui.simulator.core import Simulator


def register(app: web.Application, sim: Simulator) -> None:
    api = upstox_api.register(app, sim)
    upstox_login.register(app, sim)
    upstox_feeds.register(app, sim, api)
