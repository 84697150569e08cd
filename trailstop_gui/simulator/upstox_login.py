"""Upstox's authorization dialog (a plain HTML form) and the code -> access token exchange."""

from __future__ import annotations

import base64
import hmac
import html
import json
import secrets
import time
import urllib.parse
from typing import Any

from aiohttp import web

from trailstop_gui.simulator import upstox_format as fmt
from trailstop_gui.simulator.core import Simulator
from trailstop_gui.simulator.login_flow import LoginFailed, submit_login_form
from trailstop_gui.simulator.upstox_api import BROKER, INVALID_CREDENTIALS, input_error, upstox_error

DIALOG_PATH = "/v2/login/authorization/dialog"
TOKEN_PATH = "/v2/login/authorization/token"
WRONG_CLIENT = "UDAPI100069"
INVALID_CODE = "UDAPI100057"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Upstox - Login (TrailStop simulator)</title></head>
<body>
<h1>Login to Upstox</h1>
<p>TrailStop loopback simulator: no real broker is involved.</p>
{error}
<form method="post" action="{action}">
  <input type="hidden" name="response_type" value="code">
  <input type="hidden" name="client_id" value="{client_id}">
  <input type="hidden" name="redirect_uri" value="{redirect_uri}">
  <input type="hidden" name="state" value="{state}">
  <label>User ID <input type="text" name="user_id" autocomplete="username" autofocus></label>
  <label>Password <input type="password" name="password" autocomplete="current-password"></label>
  <button type="submit">Continue</button>
</form>
</body></html>
"""


def _page(client_id: str, redirect_uri: str, state: str, error: str | None = None) -> web.Response:
    error_html = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _PAGE.format(
        action=DIALOG_PATH,
        client_id=html.escape(client_id, quote=True),
        redirect_uri=html.escape(redirect_uri, quote=True),
        state=html.escape(state, quote=True),
        error=error_html,
    )
    return web.Response(text=body, content_type="text/html")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_access_token(user_id: str, client_id: str) -> str:
    """A JWT-shaped token, as Upstox issues (the signature is random: nobody verifies it here)."""
    now = int(time.time())
    header = {"typ": "JWT", "key_id": "sk_v1.0", "alg": "HS256"}
    payload = {
        "sub": user_id,
        "jti": secrets.token_hex(12),
        "isMultiClient": False,
        "iat": now,
        "iss": "udapi-gateway-service",
        "exp": now + 86400,
        "client_id": client_id,
    }
    parts = [json.dumps(part, separators=(",", ":")).encode() for part in (header, payload)]
    parts.append(secrets.token_bytes(32))
    return ".".join(_b64(p) for p in parts)


class UpstoxLogin:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @property
    def redirect_uri(self) -> str:
        return str(self.sim.info()["upstox"]["redirect_uri"])

    def _check_client(self, client_id: str, redirect_uri: str) -> None:
        if client_id != self.sim.upstox.client_id or redirect_uri != self.redirect_uri:
            raise upstox_error(
                400, WRONG_CLIENT, "Check your 'client_id' and 'redirect_uri'; one or both are incorrect."
            )

    async def dialog(self, request: web.Request) -> web.Response:
        query = request.query
        self._check_client(query.get("client_id", ""), query.get("redirect_uri", ""))
        if query.get("response_type", "code") != "code":
            raise input_error("response_type must be code", "response_type", query.get("response_type"))
        return _page(query["client_id"], query["redirect_uri"], query.get("state", ""))

    async def submit(self, request: web.Request) -> web.Response:
        form = await _read_form(request)
        client_id, redirect_uri = str(form.get("client_id", "")), str(form.get("redirect_uri", ""))
        state = str(form.get("state", ""))
        self._check_client(client_id, redirect_uri)
        demo = self.sim.upstox
        user_id, password = str(form.get("user_id", "")).strip(), str(form.get("password", ""))
        if user_id.upper() != demo.user_id or not hmac.compare_digest(password, demo.password):
            return _page(client_id, redirect_uri, state, "Invalid user id or password.")
        code = self.sim.sessions.issue_code(BROKER, demo.user_id, client_id)
        query = {"code": code, **({"state": state} if state else {})}
        raise web.HTTPFound(f"{redirect_uri}?{urllib.parse.urlencode(query)}")

    async def token(self, request: web.Request) -> web.Response:
        form = await _read_form(request)
        fields = {name: str(form.get(name, "")).strip() for name in _TOKEN_FIELDS}
        for name in _TOKEN_FIELDS:
            if not fields[name]:
                raise input_error(f"{name} is required", name)
        demo = self.sim.upstox
        if fields["client_id"] != demo.client_id or not hmac.compare_digest(
            fields["client_secret"], demo.client_secret
        ):
            raise upstox_error(401, INVALID_CREDENTIALS, "Invalid Credentials")
        if fields["redirect_uri"] != self.redirect_uri:
            raise upstox_error(
                400, WRONG_CLIENT, "Check your 'client_id' and 'redirect_uri'; one or both are incorrect."
            )
        if fields["grant_type"] != "authorization_code":
            raise input_error("Invalid grant_type", "grant_type", fields["grant_type"])
        session = self.sim.sessions.redeem(
            BROKER,
            fields["code"],
            demo.client_id,
            make_token=lambda: make_access_token(demo.user_id, demo.client_id),
        )
        if session is None or session.access_token is None:
            raise upstox_error(400, INVALID_CODE, "Invalid Auth code")
        # The one Upstox reply that is not wrapped in {"status", "data"}.
        poa = self.sim.exchange.account(BROKER, demo.user_id).demat_consent
        return web.json_response(fmt.token_reply(demo, session.access_token, poa))


_TOKEN_FIELDS = ("code", "client_id", "client_secret", "redirect_uri", "grant_type")


def upstox_code(info: dict[str, Any], state: str = "trailstop", timeout: float = 10.0) -> str:
    """Log in as the Upstox demo user through the dialog; ``info`` is the simulator's JSON line."""
    upstox = info["upstox"]
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": upstox["client_id"],
            "redirect_uri": upstox["redirect_uri"],
            "state": state,
        }
    )
    page = f"{upstox['dialog_url']}?{query}"
    params = submit_login_form(page, upstox["user_id"], upstox["password"], timeout)
    if params.get("state") != state or "code" not in params:
        raise LoginFailed(f"unexpected redirect parameters: {sorted(params)}")
    return params["code"]


async def _read_form(request: web.Request) -> Any:
    """The form body; one that cannot be read (not UTF-8, say) gets Upstox's input error, not a 500."""
    try:
        return await request.post()
    except web.HTTPException:
        raise
    except (ValueError, TypeError, AssertionError):
        raise input_error("Invalid input passed to the API: expected form-encoded fields.") from None


def register(app: web.Application, sim: Simulator) -> None:
    login = UpstoxLogin(sim)
    app.router.add_get(DIALOG_PATH, login.dialog)
    app.router.add_post(DIALOG_PATH, login.submit)
    app.router.add_post(TOKEN_PATH, login.token)
