"""Static IPs for orders: each account's registered IPs, and the brokers' refusal of any other source.

Since 1 April 2026 Zerodha and Upstox refuse API order placement, modification and cancellation
(Upstox: GTT and multi-order calls too) from an IP that is not registered for the account; reads,
login and the WebSockets work from anywhere. Sources: Kite forum thread 15912 "Preparing to comply with
SEBI's retail algo rules", Zerodha support article "static-ip", Upstox's announcement "Algo Registration &
Static IP Requirement" (which also documents GET/PUT /v2/user/ip).

Neither broker publishes the refusal's exact text. Kite's below follows the one reply quoted in public
(hopit-ai/india-trade-cli issue 127, "IP (2402:...) is not allowed"); its error type is our guess.
Upstox's words follow its announcement ("order requests from unregistered IPs will be rejected"); its
error code is the simulator's own (``SIM-STATIC-IP``), not one Upstox documents. An account with no
registered IP is not checked, so the demo and the older tests work from 127.0.0.1 as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from trailstop_gui.simulator.http_util import SIM_KEY
from trailstop_gui.simulator.ip_registry import IpRegistry

__all__ = ["IpRegistry", "enforce", "order_broker", "refusal", "register"]

KITE_ORDER_PATHS = re.compile(r"^/(?:orders/[^/]+(?:/[^/]+)?|gtt/triggers(?:/[^/]+)?)$")
UPSTOX_ORDER_PATHS = re.compile(
    r"^/v[23]/order/(?:place|modify|cancel|multi/place|multi/cancel|positions/exit"
    r"|gtt/place|gtt/modify|gtt/cancel)$"
)
ORDER_METHODS = frozenset({"POST", "PUT", "DELETE"})
UPSTOX_REFUSAL_CODE = "SIM-STATIC-IP"


def order_broker(method: str, path: str) -> str | None:
    """Which broker's order endpoint a request is ("kite", "upstox"), or None for anything else."""
    if method not in ORDER_METHODS:
        return None
    if KITE_ORDER_PATHS.match(path):
        return "kite"
    if UPSTOX_ORDER_PATHS.match(path):
        return "upstox"
    return None


def _user(request: web.Request, broker: str) -> str | None:
    sim = request.app[SIM_KEY]
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if broker == "kite":
        _key, _, token = credentials.strip().partition(":")
    else:
        token = credentials.strip() if scheme.lower() == "bearer" else ""
    session = sim.sessions.validate(broker, token) if token else None
    return None if session is None else session.user_id


def refusal(broker: str, source: str | None) -> web.Response:
    """Each broker's answer to an order call from an unregistered IP."""
    shown = source or "unknown"
    if broker == "kite":
        body: dict[str, Any] = {
            "status": "error",
            "message": f"IP ({shown}) is not allowed",
            "data": None,
            "error_type": "PermissionException",
        }
    else:
        body = {
            "status": "error",
            "errors": [
                {
                    "errorCode": UPSTOX_REFUSAL_CODE,
                    "message": f"Order requests from unregistered IP ({shown}) are rejected",
                    "propertyPath": None,
                    "invalidValue": None,
                }
            ],
        }
    return web.json_response(body, status=403)


@web.middleware
async def enforce(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Order calls of an account with registered IPs must come from one of them."""
    broker = order_broker(request.method, request.path)
    if broker is not None:
        user = _user(request, broker)  # an unknown token: the handler answers with the auth error
        if user is not None and not request.app[SIM_KEY].ips.allows(broker, user, request.remote):
            return refusal(broker, request.remote)
    response: web.StreamResponse = await handler(request)
    return response


async def upstox_user_ips(request: web.Request) -> web.Response:
    """GET /v2/user/ip: the account's registered IPs (readable from anywhere, as the real one is)."""
    from trailstop_gui.simulator.upstox_api import authenticate

    sim = request.app[SIM_KEY]
    session = authenticate(sim, request)
    ips = sim.ips.ips("upstox", session.user_id)
    return web.json_response(
        {
            "status": "success",
            "data": {
                "user_id": session.user_id,
                "primary_ip": ips[0] if ips else None,
                "secondary_ip": ips[1] if len(ips) > 1 else None,
            },
        }
    )


def register(app: web.Application, sim: Any) -> None:
    app.router.add_get("/v2/user/ip", upstox_user_ips)
