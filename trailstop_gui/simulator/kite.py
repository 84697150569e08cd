"""The Kite Connect facade: REST, login, GTT and the ticker WebSocket, all at the root of the port."""

from __future__ import annotations

from aiohttp import web

from trailstop_gui.simulator import kite_api, kite_gtt, kite_login, kite_ticker
from trailstop_gui.simulator.core import Simulator


def register(app: web.Application, sim: Simulator) -> None:
    api = kite_api.register(app, sim)
    kite_login.register(app, sim)
    kite_gtt.register(app, sim, api)
    kite_ticker.register(app, sim)
