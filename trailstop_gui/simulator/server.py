"""The one aiohttp application: every facade's routes, the fault middleware and error envelopes.

A facade is a ``register(app, sim)`` function; add it to :data:`FACADES`. Paths do not collide: Kite is
served at the root (``/orders``, ``/kite-ws``...), Upstox under ``/v2/`` and ``/v3/``, control at ``/_sim/``.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Callable

from aiohttp import web

from trailstop_gui.simulator import control, kite, static_ip, upstox, wire_delay
from trailstop_gui.simulator.core import Simulator
from trailstop_gui.simulator.faults import HTTP_FAULT, LOST_REPLY, MALFORMED, SLOW, RequestFault, malform
from trailstop_gui.simulator.http_util import SIM_KEY, BrokerError, render_error

log = logging.getLogger(__name__)

Facade = Callable[[web.Application, Simulator], None]
FACADES: list[Facade] = [control.register, kite.register, upstox.register, static_ip.register]
UNFAULTED_PREFIXES = ("/_sim/", "/redirect/")


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], object]) -> web.StreamResponse:
    """Every failure answers in the envelope of the API the path belongs to, never with a traceback."""
    try:
        response = await handler(request)  # type: ignore[misc]
    except BrokerError as exc:
        return exc.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render_error(request.app, request.path, exc.status, exc.reason)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("simulator handler failed: %s %s", request.method, request.path)
        return render_error(request.app, request.path, 500, "Something went wrong in the simulator.")
    assert isinstance(response, web.StreamResponse)
    return response


def _fault_response(request: web.Request, fault: RequestFault) -> web.Response:
    message = fault.message or f"Simulated HTTP {fault.status} error"
    response = render_error(request.app, request.path, fault.status, message)
    if fault.retry_after is not None:
        response.headers["Retry-After"] = fault.retry_after
    return response


@web.middleware
async def _faults(request: web.Request, handler: Callable[[web.Request], object]) -> web.StreamResponse:
    """Injected HTTP errors, slow responses and lost replies, before or after the request is carried out."""
    if request.path.startswith(UNFAULTED_PREFIXES):
        return await handler(request)  # type: ignore[no-any-return,misc]
    faults = request.app[SIM_KEY].faults
    # The latency fault: the request reaches the broker half a round trip late (its order is received then)
    # and the answer takes the other half to come back. Read once, so a request pays what it started with.
    one_way = faults.one_way
    if one_way:
        await wire_delay.delay(one_way)
    slow = faults.take_request_fault(SLOW, request.method, request.path)
    error = faults.take_request_fault(HTTP_FAULT, request.method, request.path)
    malformed = faults.take_request_fault(MALFORMED, request.method, request.path)
    lost = faults.take_request_fault(LOST_REPLY, request.method, request.path)
    if slow is not None and slow.phase == "before":
        await asyncio.sleep(slow.seconds)
    if error is not None and error.phase == "before":
        await _way_back(one_way)
        return _fault_response(request, error)
    try:
        response: web.StreamResponse = await handler(request)  # type: ignore[misc]
    except Exception:
        # A refusal raised by the handler (a BrokerError, a 404) is an answer too: it takes the way back.
        await _way_back(one_way)
        raise
    if isinstance(response, web.WebSocketResponse):
        return response
    if slow is not None and slow.phase == "after":
        await asyncio.sleep(slow.seconds)
    await _way_back(one_way)
    if error is not None and error.phase == "after":
        return _fault_response(request, error)
    if lost is not None and request.transport is not None:
        # The broker took the request and the answer never arrives: the connection closes without a
        # reply (the client sees RemoteDisconnected / a reset), as after a gateway time-out on a bad day.
        request.transport.abort()
        return response  # written to a closed transport: nothing reaches the client
    if malformed is not None:
        return _malformed_response(response, malformed)
    return response


async def _way_back(one_way: float) -> None:
    if one_way:
        await wire_delay.delay(one_way)


def _malformed_response(response: web.StreamResponse, fault: RequestFault) -> web.StreamResponse:
    """A successful JSON reply, spoilt: the request was carried out, only the answer is wrong."""
    if not isinstance(response, web.Response) or response.status != 200 or response.body is None:
        return response
    if "json" not in (response.content_type or ""):
        return response
    try:
        body = json.loads(bytes(response.body))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return response
    return web.json_response(malform(body, fault), status=response.status)


async def _landing(request: web.Request) -> web.Response:
    """Where both brokers' logins redirect: a page the user can close (the app reads the URL itself)."""
    broker = html.escape(request.match_info["broker"])
    body = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Logged in</title></head>"
        f"<body><p>{broker} login complete. You can close this window.</p></body></html>"
    )
    return web.Response(text=body, content_type="text/html")


def build_app(sim: Simulator) -> web.Application:
    """The application serving ``sim`` through every facade in :data:`FACADES`."""
    app = web.Application(
        middlewares=[control.guard, _errors, _faults, static_ip.enforce], client_max_size=1 << 20
    )
    app[SIM_KEY] = sim
    app.router.add_get("/redirect/{broker}", _landing)
    for register in FACADES:
        register(app, sim)

    async def start(app: web.Application) -> None:
        await sim.start()

    async def stop(app: web.Application) -> None:
        await sim.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app
