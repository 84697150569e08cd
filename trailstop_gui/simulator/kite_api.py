"""The Kite Connect v3 REST facade, served at the root of the simulator's HTTP port."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from trailstop_gui.simulator import kite_format as fmt
from trailstop_gui.simulator.core import Simulator
from trailstop_gui.simulator.exchange import OrderInputError, OrderNotFound, OrderRequest
from trailstop_gui.simulator.http_util import BrokerError, OrderRateLimiter, add_error_renderer
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.sessions import Session

BROKER = "kite"
ERROR_TYPES = {
    400: "InputException",
    403: "TokenException",
    429: "NetworkException",
    500: "GeneralException",
    502: "DataException",
    503: "NetworkException",
    504: "NetworkException",
}
BAD_TOKEN = "Incorrect `api_key` or `access_token`."
MARKET_PROTECTION_REQUIRED = (
    "Market orders without market protection are not allowed via API. "
    "Please set market protection or use a Limit order."
)
ORDER_RATE_PER_SECOND = 10
ORDER_RATE_PER_MINUTE = 200
MAX_TAG_LENGTH = 20
MAX_SLICES = 10  # SEBI's 2026 retail-algo rules: one order may be sliced into at most 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, error_type: str | None = None) -> web.Response:
    body = {
        "status": "error",
        "message": message,
        "data": None,
        "error_type": error_type or ERROR_TYPES.get(status, "GeneralException"),
    }
    return web.json_response(body, status=status)


def kite_error(status: int, message: str, error_type: str | None = None) -> BrokerError:
    return BrokerError(error_response(status, message, error_type))


def input_error(message: str) -> BrokerError:
    return kite_error(400, message, "InputException")


def render_error(status: int, message: str) -> web.Response:
    if status == 404:
        message = "Route not found" if message in ("Not Found", "") else message
    if status == 429:
        message = "Too many requests" if message in ("Too Many Requests", "") else message
    return error_response(status, message)


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The form-encoded body; a body that is not one gets Kite's InputException, not a crash."""
    try:
        return await request.post()
    except web.HTTPException:
        raise
    except (ValueError, TypeError, AssertionError):
        raise input_error("Invalid request body: expected form-encoded fields.") from None


def ok(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": data})


class KiteApi:
    """Route handlers; each authenticates the request and answers in Kite's envelope."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        # Kite's per-user order limits, across place, modify and cancel.
        self.rate = OrderRateLimiter(lambda: (ORDER_RATE_PER_SECOND, ORDER_RATE_PER_MINUTE))

    # -- plumbing --------------------------------------------------------------------------------

    def auth(self, request: web.Request) -> Session:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        api_key, _, token = credentials.strip().partition(":")
        if scheme.lower() != "token" or not api_key or not token:
            raise kite_error(403, BAD_TOKEN, "TokenException")
        session = self.sim.sessions.validate(BROKER, token, api_key)
        if session is None:
            raise kite_error(403, BAD_TOKEN, "TokenException")
        return session

    def _throttle(self, session: Session) -> None:
        if not self.rate.allow(session.user_id):
            raise kite_error(429, "Too many requests", "NetworkException")

    def _instrument(self, exchange: str | None, tradingsymbol: str | None) -> Instrument:
        if not exchange:
            raise input_error("Missing or invalid `exchange`.")
        if not tradingsymbol:
            raise input_error("Missing or invalid `tradingsymbol`.")
        inst = self.sim.instruments.by_symbol(exchange, tradingsymbol)
        if inst is None:
            raise input_error(f"Invalid `tradingsymbol` ({exchange}:{tradingsymbol}): instrument not found.")
        return inst

    # -- orders ----------------------------------------------------------------------------------

    async def place_order(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        variety = request.match_info["variety"]
        form = await read_form(request)
        self._throttle(session)
        if variety not in ("regular", "amo"):
            if variety in ("co", "iceberg", "auction"):
                raise input_error(f"The `{variety}` variety is not available on this exchange.")
            raise input_error("Invalid `variety`.")
        inst = self._instrument(_text(form, "exchange"), _text(form, "tradingsymbol"))
        order_type = _text(form, "order_type") or ""
        protection = _number(form, "market_protection", default=0.0)
        if order_type in ("MARKET", "SL-M") and not (protection == -1 or 0 < protection <= 100):
            raise input_error(MARKET_PROTECTION_REQUIRED)
        tag = _text(form, "tag")
        if tag is not None and len(tag) > MAX_TAG_LENGTH:
            raise input_error(f"Invalid `tag`: at most {MAX_TAG_LENGTH} characters.")
        request_obj = OrderRequest(
            instrument=inst,
            transaction_type=_required(form, "transaction_type"),
            quantity=_integer(form, "quantity", required=True),
            product=_required(form, "product"),
            order_type=_required(form, "order_type"),
            price=_number(form, "price", default=0.0),
            trigger_price=_number(form, "trigger_price", default=0.0),
            validity=_text(form, "validity") or "DAY",
            variety=variety,
            disclosed_quantity=_integer(form, "disclosed_quantity") or 0,
            tag=tag,
            market_protection=protection,
        )
        freeze = self.sim.exchange.freeze_quantity(inst)
        lot = max(inst.lot_size, 1)
        if _text(form, "autoslice") == "true":
            return ok(self._place_sliced(session, request_obj, freeze))
        if request_obj.quantity > freeze:
            # Kite refuses it at the door (InputException), in these words (Kite forum, "Iceberg order
            # error", comment 42709); place_autoslice_order or an iceberg order splits it.
            self.sim.exchange.faults.freeze_refused(inst.symbol)
            raise input_error(
                f"The order quantity {request_obj.quantity} ({request_obj.quantity // lot} lots) is higher "
                f"than the maximum quantity of {freeze} ({freeze // lot} lots) allowed by the exchanges. "
                "Please reduce the order quantity or use iceberg orders."
            )
        try:
            order = self.sim.exchange.place(BROKER, session.user_id, request_obj)
        except OrderInputError as exc:
            raise input_error(exc.message) from None
        return ok({"order_id": order.order_id})

    def _place_sliced(self, session: Session, request_obj: OrderRequest, freeze: int) -> dict[str, Any]:
        """``autoslice=true`` (kiteconnect's place_autoslice_order): whole-lot slices of at most the freeze
        quantity; the reply carries the parent ``order_id`` and a ``children`` list, each child an
        ``order_id`` or an ``error``. Kite refuses a quantity that needs no slicing (Kite forum, "Wrong
        Documentation for autoslice order", comment 53037: "Quantity should be greater than or equal to
        N for order slicing"); the simulator takes N as the freeze quantity plus one lot.
        """
        lot = max(request_obj.instrument.lot_size, 1)
        if request_obj.quantity <= freeze:
            raise input_error(
                f"Quantity should be greater than or equal to {freeze + lot} for order slicing."
            )
        size = max(freeze // lot, 1) * lot
        pieces = [size] * (request_obj.quantity // size)
        if request_obj.quantity % size:
            pieces.append(request_obj.quantity % size)
        if len(pieces) > MAX_SLICES:
            raise input_error(f"The order would be sliced into more than {MAX_SLICES} orders.")
        children: list[dict[str, Any]] = []
        parent: str | None = None
        for quantity in pieces:
            try:
                order = self.sim.exchange.place(
                    BROKER, session.user_id, dataclasses.replace(request_obj, quantity=quantity)
                )
            except OrderInputError as exc:
                children.append({"error": {"message": exc.message, "error_type": "InputException"}})
                continue
            parent = parent or order.order_id
            order.extra_tags = (*order.extra_tags, "autoslice", f"autoslice:{parent}")
            children.append({"order_id": order.order_id})
        if parent is None:
            raise input_error(children[0]["error"]["message"])
        return {"order_id": parent, "children": children}

    async def modify_order(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        form = await read_form(request)
        self._throttle(session)
        order_id = request.match_info["order_id"]
        order_type = _text(form, "order_type")
        try:
            order = self.sim.exchange.modify(
                BROKER,
                session.user_id,
                order_id,
                quantity=_integer(form, "quantity"),
                price=_number(form, "price"),
                trigger_price=_number(form, "trigger_price"),
                order_type=order_type,
                validity=_text(form, "validity"),
                disclosed_quantity=_integer(form, "disclosed_quantity"),
            )
        except OrderNotFound:
            raise input_error("Couldn't find that `order_id`.") from None
        except OrderInputError as exc:
            raise input_error(exc.message) from None
        return ok({"order_id": order.order_id})

    async def cancel_order(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        self._throttle(session)
        try:
            order = self.sim.exchange.cancel(BROKER, session.user_id, request.match_info["order_id"])
        except OrderNotFound:
            raise input_error("Couldn't find that `order_id`.") from None
        except OrderInputError as exc:
            raise input_error(exc.message) from None
        return ok({"order_id": order.order_id})

    async def orders(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        return ok([fmt.order(o) for o in self.sim.exchange.orders(BROKER, session.user_id)])

    async def order_history(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        try:
            order = self.sim.exchange.order(BROKER, session.user_id, request.match_info["order_id"])
        except OrderNotFound:
            raise input_error("Couldn't find that `order_id`.") from None
        return ok([fmt.order(order, state) for state in order.history])

    async def trades(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        return ok([fmt.trade(t) for t in self.sim.exchange.trades(BROKER, session.user_id)])

    async def order_trades(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        order_id = request.match_info["order_id"]
        try:
            self.sim.exchange.order(BROKER, session.user_id, order_id)
        except OrderNotFound:
            raise input_error("Couldn't find that `order_id`.") from None
        return ok([fmt.trade(t) for t in self.sim.exchange.trades(BROKER, session.user_id, order_id)])

    # -- portfolio and user ----------------------------------------------------------------------

    async def positions(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        rows = [
            fmt.position(p, self.sim.market) for p in self.sim.exchange.positions(BROKER, session.user_id)
        ]
        # Every position here was opened today, so the net and day views agree.
        return ok({"net": rows, "day": [dict(r) for r in rows]})

    async def holdings(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        return ok(
            [fmt.holding(h, self.sim.market) for h in self.sim.exchange.holdings(BROKER, session.user_id)]
        )

    async def profile(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        return ok(
            fmt.profile(self.sim.kite, self.sim.exchange.account(BROKER, session.user_id).demat_consent)
        )

    async def margins(self, request: web.Request) -> web.Response:
        session = self.auth(request)
        data = fmt.margins(self.sim.exchange.positions(BROKER, session.user_id))
        segment = request.match_info.get("segment")
        if segment is None:
            return ok(data)
        if segment not in data:
            raise input_error("Invalid segment. Should be `equity` or `commodity`.")
        return ok(data[segment])

    # -- market data -----------------------------------------------------------------------------

    def _quotes(self, request: web.Request) -> dict[str, Any]:
        keys = request.query.getall("i", [])
        if not keys:
            raise input_error("No instruments specified (`i`).")
        found = {}
        for key in keys:
            inst = self.sim.instruments.find(key) if ":" in key else None
            if inst is not None:  # Kite silently leaves out instruments it does not know
                found[key] = self.sim.market.quote(inst)
        return found

    async def quote(self, request: web.Request) -> web.Response:
        self.auth(request)
        return ok({k: fmt.quote(q) for k, q in self._quotes(request).items()})

    async def ltp(self, request: web.Request) -> web.Response:
        self.auth(request)
        return ok({k: fmt.ltp(q) for k, q in self._quotes(request).items()})

    async def ohlc(self, request: web.Request) -> web.Response:
        self.auth(request)
        return ok({k: fmt.ohlc_quote(q) for k, q in self._quotes(request).items()})

    async def instruments(self, request: web.Request) -> web.Response:
        # Kite serves the instrument dump without checking the token.
        exchange = request.match_info.get("exchange")
        chosen = [i for i in self.sim.instruments if exchange is None or i.exchange == exchange]
        body = fmt.instruments_csv(chosen, self.sim.market)
        return web.Response(text=body, content_type="text/csv")


def _text(form: MultiDictProxy[Any], name: str) -> str | None:
    value = form.get(name)
    if value is None or not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _required(form: MultiDictProxy[Any], name: str) -> str:
    value = _text(form, name)
    if value is None:
        raise input_error(f"Missing or empty field `{name}`.")
    return value


def _number(form: MultiDictProxy[Any], name: str, default: float | None = None) -> Any:
    value = _text(form, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise input_error(f"Invalid `{name}`.") from None
    if not math.isfinite(number):
        raise input_error(f"Invalid `{name}`.")
    return number


def _integer(form: MultiDictProxy[Any], name: str, required: bool = False) -> Any:
    value = _text(form, name)
    if value is None:
        if required:
            raise input_error(f"Missing or empty field `{name}`.")
        return None
    try:
        return int(value)
    except ValueError:
        raise input_error(f"Invalid `{name}`.") from None


def register(app: web.Application, sim: Simulator) -> KiteApi:
    api = KiteApi(sim)
    add_error_renderer(app, "/", render_error)
    r = app.router
    r.add_post("/orders/{variety}", api.place_order)
    r.add_put("/orders/{variety}/{order_id}", api.modify_order)
    r.add_delete("/orders/{variety}/{order_id}", api.cancel_order)
    r.add_get("/orders", api.orders)
    r.add_get("/orders/{order_id}", api.order_history)
    r.add_get("/orders/{order_id}/trades", api.order_trades)
    r.add_get("/trades", api.trades)
    r.add_get("/portfolio/positions", api.positions)
    r.add_get("/portfolio/holdings", api.holdings)
    r.add_get("/user/profile", api.profile)
    r.add_get("/user/margins", api.margins)
    r.add_get("/user/margins/{segment}", api.margins)
    r.add_get("/quote", api.quote)
    r.add_get("/quote/ltp", api.ltp)
    r.add_get("/quote/ohlc", api.ohlc)
    r.add_get("/instruments", api.instruments)
    r.add_get("/instruments/{exchange}", api.instruments)
    return api
