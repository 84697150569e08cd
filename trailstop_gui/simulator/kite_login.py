"""Kite's login page (a plain HTML form) and the request_token -> access_token exchange."""

from __future__ import annotations

import hashlib
import hmac
import html
from datetime import datetime
from urllib.parse import urlencode

from aiohttp import web

from trailstop_gui.simulator import kite_format as fmt
from trailstop_gui.simulator.core import Simulator
from trailstop_gui.simulator.exchange import IST
from trailstop_gui.simulator.kite_api import BAD_TOKEN, BROKER, input_error, kite_error, ok, read_form

LOGIN_PATH = "/connect/login"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Kite - Login (TrailStop simulator)</title></head>
<body>
<h1>Login to Kite</h1>
<p>TrailStop loopback simulator: no real broker is involved.</p>
{error}
<form method="post" action="{action}">
  <input type="hidden" name="api_key" value="{api_key}">
  <input type="hidden" name="v" value="3">
  <label>User ID <input type="text" name="user_id" autocomplete="username" autofocus></label>
  <label>Password <input type="password" name="password" autocomplete="current-password"></label>
  <button type="submit">Login</button>
</form>
</body></html>
"""


def _page(api_key: str, error: str | None = None, status: int = 200) -> web.Response:
    error_html = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _PAGE.format(action=LOGIN_PATH, api_key=html.escape(api_key, quote=True), error=error_html)
    return web.Response(text=body, content_type="text/html", status=status)


def _error_page(message: str, status: int) -> web.Response:
    body = f"<!DOCTYPE html><html><body><h1>Error</h1><p>{html.escape(message)}</p></body></html>"
    return web.Response(text=body, content_type="text/html", status=status)


class KiteLogin:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def login_page(self, request: web.Request) -> web.Response:
        api_key = request.query.get("api_key", "")
        if api_key != self.sim.kite.api_key:
            return _error_page("Invalid `api_key`.", 400)
        return _page(api_key)

    async def login_submit(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except (ValueError, TypeError, AssertionError):
            return _error_page("Invalid form submission.", 400)
        api_key = str(form.get("api_key", ""))
        if api_key != self.sim.kite.api_key:
            return _error_page("Invalid `api_key`.", 400)
        demo = self.sim.kite
        user_id, password = str(form.get("user_id", "")), str(form.get("password", ""))
        if user_id.upper() != demo.user_id or password != demo.password:
            return _page(api_key, "Invalid `user_id` or `password`.")
        token = self.sim.sessions.issue_code(BROKER, demo.user_id, api_key)
        query = urlencode({"action": "login", "type": "login", "status": "success", "request_token": token})
        raise web.HTTPFound(f"{self.sim.base_url}/redirect/kite?{query}")

    async def create_session(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        api_key = str(form.get("api_key", "")).strip()
        request_token = str(form.get("request_token", "")).strip()
        checksum = str(form.get("checksum", "")).strip()
        if not api_key or not request_token or not checksum:
            raise input_error("Missing `api_key`, `request_token` or `checksum`.")
        demo = self.sim.kite
        if api_key != demo.api_key:
            raise kite_error(403, "Invalid `api_key`.", "TokenException")
        expected = hashlib.sha256((api_key + request_token + demo.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(expected, checksum.lower()):
            raise kite_error(403, "Invalid `checksum`.", "TokenException")
        session = self.sim.sessions.redeem(BROKER, request_token, api_key)
        if session is None or session.access_token is None or session.public_token is None:
            raise kite_error(403, "Token is invalid or has expired.", "TokenException")
        login_time = datetime.now(IST)
        consent = self.sim.exchange.account(BROKER, demo.user_id).demat_consent
        return ok(fmt.session(demo, session.access_token, session.public_token, login_time, consent))

    async def delete_session(self, request: web.Request) -> web.Response:
        api_key = request.query.get("api_key", "")
        access_token = request.query.get("access_token", "")
        if api_key != self.sim.kite.api_key or not access_token:
            raise kite_error(403, BAD_TOKEN, "TokenException")
        self.sim.sessions.invalidate(BROKER, access_token)
        return ok(True)


def register(app: web.Application, sim: Simulator) -> None:
    login = KiteLogin(sim)
    app.router.add_get(LOGIN_PATH, login.login_page)
    app.router.add_post(LOGIN_PATH, login.login_submit)
    app.router.add_post("/session/token", login.create_session)
    app.router.add_delete("/session/token", login.delete_session)
