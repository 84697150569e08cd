"""The control API under /_sim/: prices, the random walk, faults, and what the simulator has seen."""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from trailstop_gui.simulator import faults as fault_kinds
from trailstop_gui.simulator import kite_format
from trailstop_gui.simulator.calendar import EXCHANGES
from trailstop_gui.simulator.core import Simulator
from trailstop_gui.simulator.exchange import Order, format_ist
from trailstop_gui.simulator.faults import FaultError, parse_fault
from trailstop_gui.simulator.http_util import SIM_KEY, BrokerError, add_error_renderer
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.market import PriceError, Quote

PREFIX = "/_sim"
TOKEN_HEADER = "X-Sim-Token"
# Public market data the app's instrument service reads with no token (it knows only the api root).
OPEN_PATHS = frozenset({f"{PREFIX}/instruments"})
# The content types an HTML form or a no-preflight fetch() can send. A programme that sends no
# Content-Type (requests data=...) is not a web page: a cross-origin POST from a browser always carries an
# Origin, refused in guard().
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


def render_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def bad_request(message: str) -> BrokerError:
    return BrokerError(render_error(400, message))


def instrument_dict(inst: Instrument) -> dict[str, Any]:
    return {
        "symbol": inst.symbol,
        "kite_token": inst.kite_token,
        "upstox_key": inst.upstox_key,
        "tick_size": inst.tick_size,
        "lot_size": inst.lot_size,
        "name": inst.name,
        "exchange": inst.exchange,
        "tradingsymbol": inst.tradingsymbol,
        "exchange_token": inst.exchange_token,
        "isin": inst.isin,
        "instrument_type": inst.instrument_type,
        "expiry": inst.expiry.isoformat() if inst.expiry else None,
        "strike": inst.strike,
        "tradable": inst.tradable,
    }


def quote_dict(q: Quote) -> dict[str, Any]:
    return {
        "symbol": q.instrument.symbol,
        "kite_token": q.instrument.kite_token,
        "upstox_key": q.instrument.upstox_key,
        "ltp": q.ltp,
        "bid": q.bid,
        "ask": q.ask,
        "open": q.open,
        "high": q.high,
        "low": q.low,
        "close": q.close,
        "volume": q.volume,
        "timestamp": q.timestamp,
    }


def order_log_entry(order: Order) -> dict[str, Any]:
    """An order as the log shows it: Kite's field names whichever broker received it, plus `broker`."""
    row = kite_format.order(order)
    row["order_timestamp"] = format_ist(order.placed_at)
    row["broker"] = order.broker
    row["user_id"] = order.user_id
    row["instrument_key"] = order.instrument.upstox_key
    row["history"] = [state.status.value for state in order.history]
    # Epoch seconds with microseconds: benchmarks time the path from a price push to the order's arrival.
    row["received_at"] = order.placed_at.timestamp()
    return row


def _loopback_host(host: str) -> bool:
    """A Host header naming this machine by address or as localhost: never a name DNS could rebind."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _same_origin(origin: str, base_url: str) -> bool:
    try:
        a, b = urlsplit(origin), urlsplit(base_url)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
    except ValueError:
        return False


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """The control API answers only this machine's programs, never a web page.

    A page in the trader's browser can send a form POST anywhere, and a DNS-rebinding page can even read
    replies: so the Host must be a loopback address or localhost, a browser's Origin must be the
    simulator's own, a body is never of a form's content type (JSON cannot be sent without a preflight we
    never answer), and, when the simulator requires it, every call but the public instrument list carries
    the per-run token from the JSON line.
    """
    if not request.path.startswith(PREFIX + "/"):
        response: web.StreamResponse = await handler(request)
        return response
    sim = request.app[SIM_KEY]
    if not _loopback_host(request.headers.get("Host", "")):
        return render_error(403, "the control API answers only requests addressed to a loopback host")
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(origin, sim.base_url):
        return render_error(403, "the control API does not answer web pages")
    if request.method in ("POST", "PUT", "PATCH") and request.content_type in FORM_TYPES:
        return render_error(415, "the body must be JSON (Content-Type: application/json)")
    if sim.require_token and request.path not in OPEN_PATHS:
        token = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), sim.control_token.encode()):
            return render_error(401, f"missing or wrong {TOKEN_HEADER} (see control_token in the JSON line)")
    response = await handler(request)
    return response


class Control:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.text() or "{}")
        except ValueError:
            raise bad_request("the body must be JSON") from None
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        return body

    def _instrument(self, ident: object) -> Instrument:
        inst = self.sim.instruments.find(ident)
        if inst is None:
            raise bad_request(f"unknown instrument: {ident!r}")
        return inst

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.sim.info())

    async def instruments(self, request: web.Request) -> web.Response:
        return web.json_response([instrument_dict(i) for i in self.sim.instruments])

    async def quote(self, request: web.Request) -> web.Response:
        inst = self._instrument(request.query.get("symbol"))
        return web.json_response(quote_dict(self.sim.market.quote(inst)))

    async def price(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        inst = self._instrument(body.get("symbol"))
        if inst.is_index and (body.get("bid") is not None or body.get("ask") is not None):
            raise bad_request("an index has no bid or ask")
        pushed_at = time.time()
        try:
            quote = self.sim.set_price(inst, body.get("ltp"), body.get("bid"), body.get("ask"))  # type: ignore[arg-type]
        except PriceError as exc:
            raise bad_request(str(exc)) from None
        # When the tick went out to the feeds (epoch seconds), for latency benchmarks; see received_at.
        return web.json_response(dict(quote_dict(quote), pushed_at=pushed_at))

    async def auto(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        on = body.get("on")
        if not isinstance(on, bool):
            raise bad_request("`on` must be true or false")
        interval = body.get("interval")
        if interval is not None:
            if (
                isinstance(interval, bool)
                or not isinstance(interval, int | float)
                or not 0.01 <= interval <= 60
            ):
                raise bad_request("`interval` must be a number of seconds between 0.01 and 60")
            self.sim.tick_interval = float(interval)
        self.sim.auto = on
        return web.json_response({"auto": self.sim.auto, "interval": self.sim.tick_interval})

    async def fault(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            spec = parse_fault(body)
        except FaultError as exc:
            raise bad_request(str(exc)) from None
        result: dict[str, Any] = {"fault": spec}
        kind = spec["fault"]
        if kind == fault_kinds.DROP_WS:
            result["dropped"] = self.sim.feeds.drop(spec["broker"], abort=spec["mode"] == "abort")
        elif kind == fault_kinds.EXPIRE_TOKENS:
            result["expired"] = self.sim.expire_tokens(spec["broker"])
        elif kind == fault_kinds.PRICE_GAP:
            quote = self.sim.gap(self._instrument(spec["symbol"]), spec["percent"])
            result["quote"] = quote_dict(quote)
        elif kind == fault_kinds.CLEAR:
            self.sim.faults.clear(spec["kind"])
        elif kind == fault_kinds.FREEZE_QUANTITY:
            spec["symbol"] = self._instrument(spec["symbol"]).symbol  # one spelling for every alias
            self.sim.faults.add(spec)
        else:
            self.sim.faults.add(spec)
        result["active"] = self.sim.faults.describe()
        return web.json_response(result)

    async def faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.sim.faults.describe())

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.sim.faults.clear()
        return web.json_response(self.sim.faults.describe())

    async def demat(self, request: web.Request) -> web.Response:
        """Give or take away an account's standing demat consent (DDPI/POA): without it, a delivery sale
        from holdings is refused with the broker's refusal, and the profile says so."""
        body = await self._body(request)
        broker, consent = body.get("broker"), body.get("consent")
        if broker not in ("kite", "upstox"):
            raise bad_request("`broker` must be kite or upstox")
        if not isinstance(consent, bool):
            raise bad_request("`consent` must be true or false")
        accounts = self.sim.exchange.set_demat_consent(broker, consent)
        return web.json_response({"broker": broker, "consent": consent, "accounts": accounts})

    async def calendar(self, request: web.Request) -> web.Response:
        """Close a day (``{"date": "2026-12-25", "closed": true}``) or give it other hours
        (``{"date": ..., "open": "18:15", "close": "19:15"}``), on every exchange or only on those named
        (``"exchanges": ["NFO"]``): Upstox's market timings then say so."""
        body = await self._body(request)
        try:
            day = dt.date.fromisoformat(str(body.get("date")))
        except ValueError:
            raise bad_request("`date` must be YYYY-MM-DD") from None
        exchanges = body.get("exchanges", list(EXCHANGES))
        if (
            not isinstance(exchanges, list)
            or not exchanges
            or any(exchange not in EXCHANGES for exchange in exchanges)
        ):
            raise bad_request(f"`exchanges` must be a non-empty list of {', '.join(EXCHANGES)}")
        if body.get("closed") is True:
            self.sim.calendar.set_day(day, None, exchanges)
        else:
            try:
                opens = dt.time.fromisoformat(str(body.get("open")))
                closes = dt.time.fromisoformat(str(body.get("close")))
            except ValueError:
                raise bad_request("give `closed: true`, or `open` and `close` as HH:MM") from None
            if closes <= opens:
                raise bad_request("`close` must be after `open`")
            self.sim.calendar.set_day(day, (opens, closes), exchanges)
        return web.json_response({"date": day.isoformat(), "timings": self.sim.calendar.timings(day)})

    async def orders(self, request: web.Request) -> web.Response:
        broker = request.query.get("broker")
        orders = [o for o in self.sim.exchange.all_orders() if broker in (None, o.broker)]
        return web.json_response([order_log_entry(o) for o in orders])

    async def gtts(self, request: web.Request) -> web.Response:
        """Every GTT of both brokers (active, triggered and deleted), oldest first per broker."""
        broker = request.query.get("broker")
        rows: list[dict[str, Any]] = []
        for listener in self.sim.listeners():
            describe = getattr(listener, "describe_gtts", None)
            if describe is not None:
                rows.extend(row for row in describe() if broker in (None, row["broker"]))
        return web.json_response(rows)

    async def feeds(self, request: web.Request) -> web.Response:
        return web.json_response([c.as_dict() for c in self.sim.feeds.connections()])

    async def sessions(self, request: web.Request) -> web.Response:
        return web.json_response([s.as_dict() for s in self.sim.sessions.all()])

    async def ips(self, request: web.Request) -> web.Response:
        """Registered static IPs for orders: GET lists them; POST ``{"broker", "user_id", "ips"}`` sets one
        account's (``broker`` omitted: both demo users; ``user_id`` omitted: the demo user; ``[]``: none)."""
        if request.method == "POST":
            body = await self._body(request)
            ips = body.get("ips")
            if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
                raise bad_request("`ips` must be a list of IP addresses")
            broker = body.get("broker")
            if broker not in (None, "kite", "upstox"):
                raise bad_request("`broker` must be kite, upstox or absent (both)")
            for name in ("kite", "upstox") if broker is None else (broker,):
                demo = self.sim.kite if name == "kite" else self.sim.upstox
                user = body.get("user_id") or demo.user_id
                try:
                    self.sim.ips.register(name, str(user), ips)
                except ValueError as exc:
                    raise bad_request(str(exc)) from None
        return web.json_response(self.sim.ips.describe())

    async def reset(self, request: web.Request) -> web.Response:
        self.sim.reset()
        return web.json_response({"reset": True})


def register(app: web.Application, sim: Simulator) -> None:
    control = Control(sim)
    add_error_renderer(app, PREFIX + "/", render_error)
    r = app.router
    r.add_get(f"{PREFIX}/info", control.info)
    r.add_get(f"{PREFIX}/instruments", control.instruments)
    r.add_get(f"{PREFIX}/quote", control.quote)
    r.add_post(f"{PREFIX}/price", control.price)
    r.add_post(f"{PREFIX}/auto", control.auto)
    r.add_post(f"{PREFIX}/fault", control.fault)
    r.add_get(f"{PREFIX}/fault", control.faults)
    r.add_delete(f"{PREFIX}/fault", control.clear_faults)
    r.add_get(f"{PREFIX}/orders", control.orders)
    r.add_post(f"{PREFIX}/demat", control.demat)
    r.add_post(f"{PREFIX}/calendar", control.calendar)
    r.add_get(f"{PREFIX}/feeds", control.feeds)
    r.add_get(f"{PREFIX}/gtts", control.gtts)
    r.add_get(f"{PREFIX}/sessions", control.sessions)
    r.add_post(f"{PREFIX}/reset", control.reset)
    r.add_get(f"{PREFIX}/ips", control.ips)
    r.add_post(f"{PREFIX}/ips", control.ips)
