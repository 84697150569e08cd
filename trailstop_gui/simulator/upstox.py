"""The Upstox facade under /v2/ and /v3/: login and token exchange, REST, GTT, and the two WebSockets."""

from __future__ import annotations

from aiohttp import web

from trailstop_gui.simulator import upstox_api, upstox_feeds, upstox_gtt, upstox_login
from trailstop_gui.simulator.core import Simulator


def register(app: web.Application, sim: Simulator) -> None:
    api = upstox_api.register(app, sim)
    upstox_login.register(app, sim)
    upstox_feeds.register(app, sim, api)
    upstox_gtt.register(app, sim, api)
