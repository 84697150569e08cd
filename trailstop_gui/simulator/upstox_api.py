"""The Upstox v2/v3 REST facade: orders (v2 and v3), order book, trades, portfolio, LTP and profile.

Served under ``/v2/`` and ``/v3/`` on the simulator's port, which is both the API host and the order host.
Errors use Upstox's envelope ``{"status": "error", "errors": [{"errorCode", "message", ...}]}``. Codes come
from Upstox's published tables where one fits; the few it does not publish are the simulator's choice.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
import time
from datetime import date
from typing import Any

from aiohttp import web

from trailstop_gui.simulator import upstox_format as fmt
from trailstop_gui.simulator.core import Simulator
from trailstop_gui.simulator.exchange import (
    Order,
    OrderInputError,
    OrderNotFound,
    OrderRequest,
    OrderStateError,
)
from trailstop_gui.simulator.http_util import BrokerError, OrderRateLimiter, add_error_renderer
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.sessions import Session

BROKER = "upstox"
PREFIXES = ("/v2/", "/v3/")
MASTER_PATH = "/market-quote/instruments/exchange/"  # Upstox's asset host serves the masters here
MASTER_FILES = ("complete.json.gz", "NSE.json.gz")

INVALID_TOKEN = "UDAPI100050"
INVALID_CREDENTIALS = "UDAPI100016"
INVALID_INPUT = "UDAPI100038"
NOT_SUPPORTED = "UDAPI10000"
NOT_FOUND = "UDAPI100060"
TOO_MANY = "UDAPI10005"
SERVER_ERROR = "UDAPI100500"
INSTRUMENT_REQUIRED = "UDAPI1026"
INVALID_INSTRUMENT = "UDAPI100011"
ORDER_TYPE_REQUIRED = "UDAPI1004"
ORDER_TYPE_INVALID = "UDAPI1056"
VALIDITY_REQUIRED = "UDAPI1007"
VALIDITY_INVALID = "UDAPI1055"
ORDER_ID_REQUIRED = "UDAPI1023"
ORDER_ID_INVALID = "UDAPI1010"
ORDER_NOT_FOUND = "UDAPI100010"
ORDER_FINAL = "UDAPI100040"

_DEFAULT_ERRORS = {
    400: (INVALID_INPUT, "Invalid input passed to the API"),
    401: (INVALID_TOKEN, "Invalid token used to access API"),
    404: (NOT_FOUND, "Resource not Found."),
    405: (NOT_SUPPORTED, "This request is not supported by Upstox API"),
    429: (TOO_MANY, "Too Many Request Sent"),
    500: (SERVER_ERROR, "Something went wrong... please contact us"),
}
_AIOHTTP_REASONS = {"Not Found", "Method Not Allowed", "Too Many Requests", "Unauthorized", "Bad Request", ""}

# Upstox's limits for unregistered ("regular") algos since the exchanges' retail-algo framework:
# upstox.com/developer/api-documentation/rate-limiting. 50 a second needs an exchange algo registration.
ORDER_RATE_PER_SECOND = 10
ORDER_RATE_PER_MINUTE = 500
MAX_TAG_LENGTH = 40
MAX_SLICES = 25
MAX_LTP_KEYS = 500
MAX_MARKET_PROTECTION = 25.0
MAX_PRICE = 1e9
PRODUCTS = {"I": "MIS", "D": "CNC", "MTF": "CNC"}
VALIDITIES = ("DAY", "IOC")
ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
TRANSACTION_TYPES = ("BUY", "SELL")
_ORDER_ID = re.compile(r"[A-Za-z0-9-]+")


# -- envelopes ---------------------------------------------------------------------------------------


def error_response(
    status: int,
    code: str | None = None,
    message: str | None = None,
    property_path: str | None = None,
    invalid_value: Any = None,
) -> web.Response:
    default_code, default_message = _DEFAULT_ERRORS.get(status, (SERVER_ERROR, "Something went wrong"))
    code = code or default_code
    message = message or default_message
    problem = {
        "errorCode": code,
        "message": message,
        "propertyPath": property_path,
        "invalidValue": invalid_value,
        # Upstox sends the snake_case spellings too (the camelCase ones are deprecated but still there).
        "error_code": code,
        "property_path": property_path,
        "invalid_value": invalid_value,
    }
    return web.json_response({"status": "error", "errors": [problem]}, status=status)


def upstox_error(
    status: int,
    code: str | None = None,
    message: str | None = None,
    property_path: str | None = None,
    invalid_value: Any = None,
) -> BrokerError:
    return BrokerError(error_response(status, code, message, property_path, invalid_value))


def input_error(
    message: str, field: str | None = None, value: Any = None, code: str = INVALID_INPUT
) -> BrokerError:
    return upstox_error(400, code, message, field, _jsonable(value))


def render_error(status: int, message: str) -> web.Response:
    """404s, 405s, injected faults and crashes under /v2/ and /v3/, in Upstox's envelope."""
    return error_response(status, None, None if message in _AIOHTTP_REASONS else message)


def ok(data: Any, *, latency_since: float | None = None) -> web.Response:
    body: dict[str, Any] = {"status": "success", "data": data}
    if latency_since is not None:
        body["metadata"] = {"latency": max(1, round((time.perf_counter() - latency_since) * 1000))}
    return web.json_response(body)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# -- auth ------------------------------------------------------------------------------------------


def bearer_token(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


def authenticate(sim: Simulator, request: web.Request) -> Session:
    """The session behind the request's ``Authorization: Bearer`` token; 401 in Upstox's envelope if none."""
    token = bearer_token(request)
    session = sim.sessions.validate(BROKER, token) if token else None
    if session is None:
        raise upstox_error(401, INVALID_TOKEN, "Invalid token used to access API")
    return session


# -- request bodies --------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text() or "null")
    except (ValueError, UnicodeDecodeError):
        raise input_error("Invalid input passed to the API: the body is not JSON.") from None
    if not isinstance(body, dict):
        raise input_error("Invalid input passed to the API: the body must be a JSON object.")
    return body


def _choice(
    body: dict[str, Any], name: str, allowed: tuple[str, ...], required_code: str, invalid_code: str
) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise input_error(f"{name} is required", name, value, required_code)
    if value not in allowed:
        raise input_error(f"The '{name}' is invalid", name, value, invalid_code)
    return str(value)


def _int(
    body: dict[str, Any], name: str, *, required: bool = False, default: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise input_error(f"{name} is required", name)
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise input_error(f"Invalid {name}: a whole number is required", name, value)
    return int(value)


def _number(body: dict[str, Any], name: str, default: float | None = None) -> float | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise input_error(f"Invalid {name}: a number is required", name, value)
    if not 0 <= value <= MAX_PRICE:
        raise input_error(f"Invalid {name}: it must be between 0 and {MAX_PRICE:.0f}", name, value)
    return float(value)


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise input_error(f"Invalid {name}: true or false is required", name, value)
    return value


def _order_id(value: Any) -> str:
    if value is None or value == "":
        raise input_error("Order id is required", "order_id", value, ORDER_ID_REQUIRED)
    if not isinstance(value, str) or not _ORDER_ID.fullmatch(value):
        raise input_error(
            "Order id accepts only alphanumeric characters and '-'.", "order_id", value, ORDER_ID_INVALID
        )
    return value


def _upstox_field(core_field: str | None) -> str | None:
    """The exchange names fields as Kite does; say them as Upstox does."""
    return {"tradingsymbol": "instrument_token", "variety": "is_amo"}.get(core_field or "", core_field)


# -- the handlers ----------------------------------------------------------------------------------


class UpstoxApi:
    """Route handlers; each authenticates the request and answers in Upstox's envelope."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        # Upstox's per-user order limits, across place, modify and cancel.
        self.rate = OrderRateLimiter(lambda: (ORDER_RATE_PER_SECOND, ORDER_RATE_PER_MINUTE))
        self.mtf_orders: set[str] = set()  # orders placed with product MTF (the core books them as CNC)

    def product_of(self, order: Order) -> str:
        return "MTF" if order.order_id in self.mtf_orders else fmt.product_code(order.product)

    def _throttle(self, session: Session) -> None:
        if not self.rate.allow(session.user_id):
            raise upstox_error(429, TOO_MANY, "Too Many Request Sent")

    def _instrument(self, value: Any, field: str = "instrument_token") -> Instrument:
        if value is None or value == "":
            raise input_error("Instrument key is required", field, value, INSTRUMENT_REQUIRED)
        inst = self.sim.instruments.by_upstox_key(value) if isinstance(value, str) else None
        if inst is None:
            raise input_error("Invalid Instrument key", field, value, INVALID_INSTRUMENT)
        return inst

    def _order(self, session: Session, order_id: str) -> Order:
        try:
            return self.sim.exchange.order(BROKER, session.user_id, order_id)
        except OrderNotFound:
            raise input_error("Order not found", "order_id", order_id, ORDER_NOT_FOUND) from None

    # -- placing ---------------------------------------------------------------------------------

    def _parse_place(self, body: dict[str, Any], v3: bool) -> tuple[OrderRequest, str, bool]:
        inst = self._instrument(body.get("instrument_token"))
        quantity = _int(body, "quantity", required=True)
        assert quantity is not None
        if quantity <= 0:
            raise input_error("Quantity should be greater than 0", "quantity", quantity)
        product = body.get("product")
        if not isinstance(product, str) or product not in PRODUCTS:
            raise input_error("The 'product' is invalid", "product", product)
        if product == "MTF" and inst.is_derivative:
            raise input_error("MTF is available for equity delivery only", "product", product)
        core_product = "NRML" if product == "D" and inst.is_derivative else PRODUCTS[product]
        order_type = _choice(body, "order_type", ORDER_TYPES, ORDER_TYPE_REQUIRED, ORDER_TYPE_INVALID)
        validity = _choice(body, "validity", VALIDITIES, VALIDITY_REQUIRED, VALIDITY_INVALID)
        transaction_type = body.get("transaction_type")
        if transaction_type not in TRANSACTION_TYPES:
            raise input_error("The 'transaction_type' is invalid", "transaction_type", transaction_type)
        tag = body.get("tag")
        if tag is not None and (not isinstance(tag, str) or len(tag) > MAX_TAG_LENGTH):
            raise input_error(f"Invalid tag: at most {MAX_TAG_LENGTH} characters", "tag", tag)
        protection = body.get("market_protection") if v3 else None  # v2 has no such field
        if protection is not None and (
            isinstance(protection, bool)
            or not isinstance(protection, int | float)
            or not (protection == -1 or 0 <= protection <= MAX_MARKET_PROTECTION)
        ):
            raise input_error(
                "Invalid market_protection: -1 (automatic) or 0 to 25", "market_protection", protection
            )
        request = OrderRequest(
            instrument=inst,
            transaction_type=str(transaction_type),
            quantity=quantity,
            product=core_product,
            order_type=order_type,
            price=_number(body, "price", 0.0) or 0.0,
            trigger_price=_number(body, "trigger_price", 0.0) or 0.0,
            validity=validity,
            variety="amo" if _bool(body, "is_amo") else "regular",
            disclosed_quantity=_int(body, "disclosed_quantity", default=0) or 0,
            tag=tag or None,
            market_protection=float(protection) if protection is not None else 0.0,
        )
        return request, str(product), v3 and _bool(body, "slice")

    def _place(self, session: Session, request: OrderRequest, product: str) -> Order:
        try:
            order = self.sim.exchange.place(BROKER, session.user_id, request)
        except OrderInputError as exc:
            raise input_error(exc.message, _upstox_field(exc.field)) from None
        if product == "MTF":
            self.mtf_orders.add(order.order_id)
        return order

    async def place_order_v2(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        body = await _json_body(request)
        self._throttle(session)
        order_request, product, _ = self._parse_place(body, v3=False)
        order = self._place(session, order_request, product)
        return ok({"order_id": order.order_id})

    async def place_order_v3(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        session = authenticate(self.sim, request)
        body = await _json_body(request)
        self._throttle(session)
        order_request, product, slice_it = self._parse_place(body, v3=True)
        pieces = [order_request.quantity]
        freeze = self.sim.exchange.freeze_quantity(order_request.instrument)
        if slice_it and order_request.quantity > freeze:
            # Auto-slicing: orders of at most the freeze quantity (in whole lots), up to 25 of them.
            lot = max(order_request.instrument.lot_size, 1)
            size = max(freeze // lot, 1) * lot
            full, rest = divmod(order_request.quantity, size)
            pieces = [size] * full + ([rest] if rest else [])
            if len(pieces) > MAX_SLICES:
                raise input_error(
                    f"Order would be sliced into more than {MAX_SLICES} orders",
                    "quantity",
                    order_request.quantity,
                )
        ids = []
        for quantity in pieces:
            piece = dataclasses.replace(order_request, quantity=quantity)
            ids.append(self._place(session, piece, product).order_id)
        return ok({"order_ids": ids}, latency_since=started)

    # -- modifying and cancelling ----------------------------------------------------------------

    async def _modify(self, request: web.Request) -> str:
        session = authenticate(self.sim, request)
        body = await _json_body(request)
        self._throttle(session)
        order_id = _order_id(body.get("order_id"))
        order_type = _choice(body, "order_type", ORDER_TYPES, ORDER_TYPE_REQUIRED, ORDER_TYPE_INVALID)
        validity = _choice(body, "validity", VALIDITIES, VALIDITY_REQUIRED, VALIDITY_INVALID)
        quantity = _int(body, "quantity")
        disclosed = _int(body, "disclosed_quantity")
        price = _number(body, "price")
        trigger_price = _number(body, "trigger_price")
        self._order(session, order_id)
        try:
            order = self.sim.exchange.modify(
                BROKER,
                session.user_id,
                order_id,
                quantity=quantity or None,  # 0 or absent: keep the quantity
                price=price,
                trigger_price=trigger_price,
                order_type=order_type,
                validity=validity,
                disclosed_quantity=disclosed,
            )
        except OrderStateError as exc:
            raise input_error(exc.message, "order_id", order_id, ORDER_FINAL) from None
        except OrderInputError as exc:
            raise input_error(exc.message, _upstox_field(exc.field)) from None
        return order.order_id

    async def modify_order_v2(self, request: web.Request) -> web.Response:
        return ok({"order_id": await self._modify(request)})

    async def modify_order_v3(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        return ok({"order_id": await self._modify(request)}, latency_since=started)

    def _cancel(self, request: web.Request) -> str:
        session = authenticate(self.sim, request)
        self._throttle(session)
        order_id = _order_id(request.query.get("order_id"))
        self._order(session, order_id)
        try:
            order = self.sim.exchange.cancel(BROKER, session.user_id, order_id)
        except OrderStateError:
            raise input_error(
                "Cancel of already cancelled/rejected/completed order is not allowed",
                "order_id",
                order_id,
                ORDER_FINAL,
            ) from None
        return order.order_id

    async def cancel_order_v2(self, request: web.Request) -> web.Response:
        return ok({"order_id": self._cancel(request)})

    async def cancel_order_v3(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        return ok({"order_id": self._cancel(request)}, latency_since=started)

    # -- reading orders --------------------------------------------------------------------------

    async def order_details(self, request: web.Request) -> web.Response:
        """GET /v2/order/details: the latest state of one order (the SDK calls it get_order_status)."""
        session = authenticate(self.sim, request)
        order = self._order(session, _order_id(request.query.get("order_id")))
        return ok(fmt.order(order, product=self.product_of(order)))

    async def order_history(self, request: web.Request) -> web.Response:
        """GET /v2/order/history: every state of one order, or of every order with a tag."""
        session = authenticate(self.sim, request)
        order_id = request.query.get("order_id")
        tag = request.query.get("tag")
        if not order_id and not tag:
            raise input_error("Order id or tag is required", "order_id", None, ORDER_ID_REQUIRED)
        if order_id:
            orders = [self._order(session, _order_id(order_id))]
            if tag and orders[0].tag != tag:
                orders = []
        else:
            orders = [o for o in self.sim.exchange.orders(BROKER, session.user_id) if o.tag == tag]
            if not orders:
                raise input_error("Order not found", "tag", tag, ORDER_NOT_FOUND)
        rows = [fmt.order(o, state, self.product_of(o)) for o in orders for state in o.history]
        return ok(rows)

    async def order_book(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        orders = self.sim.exchange.orders(BROKER, session.user_id)
        return ok([fmt.order(o, product=self.product_of(o)) for o in orders])

    def _trade_rows(self, session: Session, order_id: str | None) -> list[dict[str, Any]]:
        rows = []
        for t in self.sim.exchange.trades(BROKER, session.user_id, order_id):
            order = self.sim.exchange.order(BROKER, session.user_id, t.order_id)
            rows.append(fmt.trade(t, order.state.order_type, self.product_of(order)))
        return rows

    async def trades(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        return ok(self._trade_rows(session, None))

    async def order_trades(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        order = self._order(session, _order_id(request.query.get("order_id")))
        return ok(self._trade_rows(session, order.order_id))

    # -- portfolio, quotes and the user ----------------------------------------------------------

    async def positions(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        rows = self.sim.exchange.positions(BROKER, session.user_id)
        return ok([fmt.position(p, self.sim.market) for p in rows])

    async def holdings(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        rows = self.sim.exchange.blocked_holdings(BROKER, session.user_id)
        return ok([fmt.holding(h, self.sim.market) for h in rows])

    def _quoted(self, request: web.Request, name: str) -> list[Instrument]:
        raw = request.query.get(name, "").strip()
        if not raw:
            raise input_error(f"{name} is required", name, None, INSTRUMENT_REQUIRED)
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if len(keys) > MAX_LTP_KEYS:
            raise input_error(f"At most {MAX_LTP_KEYS} instrument keys are allowed", name, len(keys))
        found = []
        for key in keys:
            if "|" not in key:
                raise input_error("Invalid Instrument key", name, key, INVALID_INSTRUMENT)
            inst = self.sim.instruments.by_upstox_key(key)
            if inst is not None:  # a well-formed key the exchange does not list is left out
                found.append(inst)
        return found

    async def ltp(self, request: web.Request) -> web.Response:
        authenticate(self.sim, request)
        quotes = [self.sim.market.quote(i) for i in self._quoted(request, "symbol")]
        return ok({fmt.quote_key(q.instrument): fmt.ltp(q) for q in quotes})

    async def ltp_v3(self, request: web.Request) -> web.Response:
        authenticate(self.sim, request)
        quotes = [self.sim.market.quote(i) for i in self._quoted(request, "instrument_key")]
        return ok({fmt.quote_key(q.instrument): fmt.ltp_v3(q) for q in quotes})

    async def instrument_master(self, request: web.Request) -> web.Response:
        """The instrument master as Upstox's asset host serves it: gzipped JSON, no token needed."""
        name = request.match_info["name"]
        if name not in MASTER_FILES:
            raise upstox_error(404, NOT_FOUND, "Resource not Found.")
        rows = [fmt.master_row(i) for i in self.sim.instruments]
        body = gzip.compress(json.dumps(rows).encode(), mtime=0)
        return web.Response(body=body, content_type="application/octet-stream")

    async def profile(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        return ok(
            fmt.profile(self.sim.upstox, self.sim.exchange.account(BROKER, session.user_id).demat_consent)
        )

    async def market_timings(self, request: web.Request) -> web.Response:
        """GET /v2/market/timings/{date}: the exchanges open that day (none on a holiday). The SDK's
        MarketHolidaysAndTimingsApi sends no token for it (its auth_settings are empty), so none is asked."""
        try:
            day = date.fromisoformat(request.match_info["date"])
        except ValueError:
            raise upstox_error(400, INVALID_INPUT, "Invalid date format. Expected yyyy-MM-dd") from None
        return ok(self.sim.calendar.timings(day))

    async def logout(self, request: web.Request) -> web.Response:
        session = authenticate(self.sim, request)
        if session.access_token is not None:
            self.sim.sessions.invalidate(BROKER, session.access_token)
        return ok(True)


def register(app: web.Application, sim: Simulator) -> UpstoxApi:
    api = UpstoxApi(sim)
    for prefix in (*PREFIXES, MASTER_PATH):
        add_error_renderer(app, prefix, render_error)
    r = app.router
    r.add_post("/v2/order/place", api.place_order_v2)
    r.add_post("/v3/order/place", api.place_order_v3)
    r.add_put("/v2/order/modify", api.modify_order_v2)
    r.add_put("/v3/order/modify", api.modify_order_v3)
    r.add_delete("/v2/order/cancel", api.cancel_order_v2)
    r.add_delete("/v3/order/cancel", api.cancel_order_v3)
    r.add_get("/v2/order/details", api.order_details)
    r.add_get("/v2/order/history", api.order_history)
    r.add_get("/v2/order/retrieve-all", api.order_book)
    r.add_get("/v2/order/trades/get-trades-for-day", api.trades)
    r.add_get("/v2/order/trades", api.order_trades)
    r.add_get("/v2/portfolio/short-term-positions", api.positions)
    r.add_get("/v2/portfolio/long-term-holdings", api.holdings)
    r.add_get("/v2/market-quote/ltp", api.ltp)
    r.add_get("/v3/market-quote/ltp", api.ltp_v3)
    r.add_get("/v2/user/profile", api.profile)
    r.add_get("/v2/market/timings/{date}", api.market_timings)
    r.add_delete("/v2/logout", api.logout)
    r.add_get(MASTER_PATH + "{name}", api.instrument_master)
    return api
