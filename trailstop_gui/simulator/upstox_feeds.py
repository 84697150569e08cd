"""Upstox's WebSockets: the V3 market-data feed (protobuf) and the portfolio stream (order updates as JSON).

Each has an ``.../authorize`` endpoint that checks the Bearer token and hands out a one-time
``ws://.../<feed>?code=..`` URL. The socket itself also takes ``Authorization: Bearer`` on the plain URL,
which is what the SDK's own streamers send. Every socket is a :class:`FeedConnection` in the simulator's
registry, so ``/_sim/feeds`` lists it and the drop/stall faults reach it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from trailstop_gui.simulator import upstox_format as fmt
from trailstop_gui.simulator import upstox_frames as frames
from trailstop_gui.simulator.core import SimListener, Simulator
from trailstop_gui.simulator.exchange import Order
from trailstop_gui.simulator.feeds import FeedConnection
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.market import Quote
from trailstop_gui.simulator.sessions import Session, random_token
from trailstop_gui.simulator.upstox_api import BROKER, UpstoxApi, bearer_token, input_error, ok, upstox_error

log = logging.getLogger(__name__)

MARKET_PATH = "/v3/feed/market-data-feed"
PORTFOLIO_PATH = "/v2/feed/portfolio-stream-feed"
GRANT_TTL = 60.0  # seconds a one-time socket code stays valid
UPDATE_TYPES = ("order", "position", "holding", "gtt_order")
MAX_KEYS_PER_CONNECTION = 5000


@dataclass(frozen=True, slots=True)
class _Grant:
    kind: str
    access_token: str
    issued_at: float
    update_types: tuple[str, ...] = ()


class _Grants:
    """One-time codes for socket URLs, each bound to the access token that asked for it."""

    def __init__(self) -> None:
        self._grants: dict[str, _Grant] = {}

    def issue(self, kind: str, access_token: str, update_types: tuple[str, ...] = ()) -> str:
        now = time.monotonic()
        self._grants = {c: g for c, g in self._grants.items() if now - g.issued_at < GRANT_TTL}
        code = random_token(24)
        self._grants[code] = _Grant(kind, access_token, now, update_types)
        return code

    def redeem(self, kind: str, code: str) -> _Grant | None:
        grant = self._grants.pop(code, None)
        if grant is None or grant.kind != kind or time.monotonic() - grant.issued_at >= GRANT_TTL:
            return None
        return grant


def _unauthorized() -> web.Response:
    return upstox_error(401, message="Invalid token used to access API").response


class UpstoxFeeds(SimListener):
    """Both Upstox socket kinds; fans ticks and order updates out to them."""

    streams_order_updates = True

    def __init__(self, sim: Simulator, api: UpstoxApi) -> None:
        self.sim = sim
        self.api = api
        self._grants = _Grants()
        self._market: set[FeedConnection] = set()
        self._portfolio: set[FeedConnection] = set()

    # -- authorize endpoints ---------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session:
        token = bearer_token(request)
        session = self.sim.sessions.validate(BROKER, token) if token else None
        if session is None or session.access_token is None:
            raise upstox_error(401, message="Invalid token used to access API")
        return session

    def _redirect(self, path: str, code: str) -> web.Response:
        url = f"{self.sim.ws_base_url}{path}?code={code}"
        return ok({"authorized_redirect_uri": url, "authorizedRedirectUri": url})

    async def authorize_market(self, request: web.Request) -> web.Response:
        session = self._session(request)
        assert session.access_token is not None
        return self._redirect(MARKET_PATH, self._grants.issue("market", session.access_token))

    async def authorize_portfolio(self, request: web.Request) -> web.Response:
        session = self._session(request)
        assert session.access_token is not None
        types = _update_types(request)
        return self._redirect(PORTFOLIO_PATH, self._grants.issue("portfolio", session.access_token, types))

    # -- the sockets -----------------------------------------------------------------------------

    def _socket_session(self, request: web.Request, kind: str) -> tuple[Session, _Grant | None] | None:
        code = request.query.get("code")
        grant = self._grants.redeem(kind, code) if code else None
        token = grant.access_token if grant is not None else bearer_token(request)
        session = self.sim.sessions.validate(BROKER, token) if token else None
        if session is None or session.access_token is None:
            return None
        return session, grant

    async def market_socket(self, request: web.Request) -> web.StreamResponse:
        found = self._socket_session(request, "market")
        if found is None:
            return _unauthorized()  # refused before the upgrade, as Upstox does
        session, _ = found
        assert session.access_token is not None
        # autoping off: the connection answers pings itself, and not while the stall fault is on.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = FeedConnection(
            ws, request, self.sim.faults, BROKER, session.user_id, session.access_token, "upstox-market"
        )
        self._market.add(conn)
        self.sim.feeds.add(conn)
        try:
            await conn.run(
                on_text=lambda text: self._on_request(conn, text),
                on_binary=lambda data: self._on_request(conn, data),
                on_open=lambda: conn.send_bytes(frames.market_info_frame()),
            )
        finally:
            self._market.discard(conn)
            self.sim.feeds.remove(conn)
        return ws

    async def portfolio_socket(self, request: web.Request) -> web.StreamResponse:
        found = self._socket_session(request, "portfolio")
        if found is None:
            return _unauthorized()
        session, grant = found
        assert session.access_token is not None
        types = grant.update_types if grant is not None else _update_types(request)
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 16)
        await ws.prepare(request)
        conn = FeedConnection(
            ws, request, self.sim.faults, BROKER, session.user_id, session.access_token, "upstox-portfolio"
        )
        # No instruments on this stream: its "subscriptions" are the update types it carries.
        conn.subscriptions = dict.fromkeys(types, "update_type")
        self._portfolio.add(conn)
        self.sim.feeds.add(conn)
        try:
            await conn.run(on_text=lambda text: None, on_binary=lambda data: None)
        finally:
            self._portfolio.discard(conn)
            self.sim.feeds.remove(conn)
        return ws

    # -- market-data requests --------------------------------------------------------------------

    def _on_request(self, conn: FeedConnection, data: bytes | str) -> None:
        """``{"guid", "method": "sub"|"change_mode"|"unsub", "data": {"mode", "instrumentKeys"}}``."""
        try:
            message = json.loads(data)
            method = message["method"]
            body = message["data"]
            keys = body["instrumentKeys"]
            mode = body.get("mode")
            if not isinstance(keys, list) or not isinstance(method, str):
                raise TypeError("instrumentKeys must be a list")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # The real feed ignores a request it cannot read; say why in the log.
            log.info("upstox feed %s: unreadable request ignored (%s)", conn.id, exc)
            return
        instruments = self._instruments(keys)
        if method == "unsub":
            for inst in instruments:
                conn.subscriptions.pop(inst.upstox_key, None)
            return
        if method not in ("sub", "change_mode"):
            log.info("upstox feed %s: unknown method %r ignored", conn.id, method)
            return
        mode = mode or "ltpc"
        if mode not in frames.FEED_MODES:
            log.info("upstox feed %s: unknown mode %r ignored", conn.id, mode)
            return
        chosen = []
        for inst in instruments:
            key = inst.upstox_key
            if method == "change_mode" and key not in conn.subscriptions:
                continue
            if key not in conn.subscriptions and len(conn.subscriptions) >= MAX_KEYS_PER_CONNECTION:
                break
            conn.subscriptions[key] = mode
            chosen.append(inst)
        self._snapshot(conn, chosen)

    def _instruments(self, keys: list[Any]) -> list[Instrument]:
        found = []
        for key in keys:
            inst = self.sim.instruments.by_upstox_key(key) if isinstance(key, str) else None
            if inst is not None:  # unknown keys are left out
                found.append(inst)
        return found

    def _snapshot(self, conn: FeedConnection, instruments: list[Instrument]) -> None:
        quotes = [self.sim.market.quote(i) for i in instruments]
        self._send(conn, quotes, initial=True)

    def _send(self, conn: FeedConnection, quotes: list[Quote], *, initial: bool) -> None:
        pairs = []
        for quote in quotes:
            mode = conn.subscriptions.get(quote.instrument.upstox_key)
            if mode is not None:
                pairs.append((quote, mode))
        if pairs:
            conn.send_bytes(frames.feed_frame(pairs, initial=initial))

    # -- listener --------------------------------------------------------------------------------

    def on_ticks(self, quotes: list[Quote]) -> None:
        for conn in list(self._market):
            self._send(conn, quotes, initial=False)

    def on_order_update(self, order: Order) -> None:
        if order.broker != BROKER:
            return
        listeners = [c for c in self._portfolio if c.user_id == order.user_id]
        if not listeners:
            return
        order_text = json.dumps(fmt.order_update(order, self.api.product_of(order)))
        position_text = None
        if any("position" in c.subscriptions for c in listeners) and order.state.filled_quantity:
            for p in self.sim.exchange.positions(BROKER, order.user_id):
                if p.instrument == order.instrument and p.product == order.product:
                    position_text = json.dumps(fmt.position_update(p, self.sim.market, order.user_id))
        for conn in listeners:
            if "order" in conn.subscriptions:
                conn.send_str(order_text)
            if position_text is not None and "position" in conn.subscriptions:
                conn.send_str(position_text)


def _update_types(request: web.Request) -> tuple[str, ...]:
    raw = request.query.get("update_types", "order")
    types = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    bad = [t for t in types if t not in UPDATE_TYPES]
    if bad or not types:
        raise input_error("Invalid update_types", "update_types", raw)
    return types


def register(app: web.Application, sim: Simulator, api: UpstoxApi) -> UpstoxFeeds:
    feeds = UpstoxFeeds(sim, api)
    sim.add_listener(feeds)
    r = app.router
    r.add_get(MARKET_PATH + "/authorize", feeds.authorize_market)
    r.add_get(MARKET_PATH, feeds.market_socket)
    r.add_get(PORTFOLIO_PATH + "/authorize", feeds.authorize_portfolio)
    r.add_get(PORTFOLIO_PATH, feeds.portfolio_socket)
    return feeds
