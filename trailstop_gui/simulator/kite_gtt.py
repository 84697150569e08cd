"""Kite GTT (good-till-triggered) triggers: stored per user, fired by ticks into regular LIMIT orders."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from trailstop_gui.simulator.core import SimListener, Simulator
from trailstop_gui.simulator.exchange import IST, OrderInputError, OrderRequest, OrderStatus, format_ist
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.kite_api import BROKER, KiteApi, input_error, ok, read_form
from trailstop_gui.simulator.market import Quote

SINGLE, TWO_LEG = "single", "two-leg"
PRODUCTS = ("CNC", "MIS", "NRML")


@dataclass(slots=True)
class Gtt:
    id: int
    user_id: str
    type: str
    instrument: Instrument
    trigger_values: list[float]
    last_price: float
    orders: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    status: str = "active"
    results: list[dict[str, Any] | None] = field(default_factory=list)
    modifications: int = 0

    def describe(self) -> dict[str, Any]:
        """The control API's view (``GET /_sim/gtts``), the same for both brokers."""
        fired = next((r for r in self.results if r), None)
        outcome = fired.get("order_result", {}) if fired else {}
        return {
            "broker": BROKER,
            "id": str(self.id),
            "user_id": self.user_id,
            "status": self.status,
            "symbol": self.instrument.symbol,
            "trigger": self.trigger_values[0] if self.type == SINGLE else list(self.trigger_values),
            "transaction_type": self.orders[0]["transaction_type"],
            "quantity": self.orders[0]["quantity"],
            "price": self.orders[0]["price"],
            "order_id": outcome.get("order_id") or None,
            "modifications": self.modifications,
        }

    def as_dict(self) -> dict[str, Any]:
        orders = []
        for i, o in enumerate(self.orders):
            orders.append({**o, "result": self.results[i] if i < len(self.results) else None})
        return {
            "id": self.id,
            "user_id": self.user_id,
            "parent_trigger": None,
            "type": self.type,
            "created_at": format_ist(self.created_at),
            "updated_at": format_ist(self.updated_at),
            "expires_at": format_ist(self.created_at + timedelta(days=365)),
            "status": self.status,
            "condition": {
                "exchange": self.instrument.exchange,
                "last_price": self.last_price,
                "tradingsymbol": self.instrument.tradingsymbol,
                "trigger_values": self.trigger_values,
                "instrument_token": self.instrument.kite_token,
            },
            "orders": orders,
            "meta": {},
        }


class GttBook(SimListener):
    """Every user's GTTs; fires them when a tick crosses a trigger value."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.triggers: dict[int, Gtt] = {}
        self._ids = itertools.count(100001)
        self.max_modifications: int | None = None  # Kite documents no cap for GTTs; tests may set one

    def describe_gtts(self) -> list[dict[str, Any]]:
        return [g.describe() for g in self.triggers.values()]

    def reset(self) -> None:
        self.triggers.clear()

    def on_ticks(self, quotes: list[Quote]) -> None:
        by_token = {q.instrument.kite_token: q for q in quotes}
        for gtt in list(self.triggers.values()):
            quote = by_token.get(gtt.instrument.kite_token)
            if gtt.status != "active" or quote is None:
                continue
            leg = self._leg_hit(gtt, quote.ltp)
            if leg is not None:
                self._fire(gtt, leg, quote.ltp)

    @staticmethod
    def _leg_hit(gtt: Gtt, ltp: float) -> int | None:
        if gtt.type == SINGLE:
            trigger = gtt.trigger_values[0]
            rising = trigger > gtt.last_price
            return 0 if (ltp >= trigger if rising else ltp <= trigger) else None
        low, high = gtt.trigger_values
        if ltp <= low:
            return 0
        if ltp >= high:
            return 1
        return None

    def _fire(self, gtt: Gtt, leg: int, ltp: float) -> None:
        spec = gtt.orders[leg]
        now = datetime.now(IST)
        result: dict[str, Any] = {
            "account_id": gtt.user_id,
            "exchange": gtt.instrument.exchange,
            "tradingsymbol": gtt.instrument.tradingsymbol,
            "validity": "DAY",
            "product": spec["product"],
            "order_type": spec["order_type"],
            "transaction_type": spec["transaction_type"],
            "quantity": spec["quantity"],
            "price": spec["price"],
            "meta": json.dumps({"app_id": 4242, "gtt": gtt.id}),
            "timestamp": format_ist(now),
            "triggered_at": ltp,
        }
        try:
            order = self.sim.exchange.place(
                BROKER,
                gtt.user_id,
                OrderRequest(
                    instrument=gtt.instrument,
                    transaction_type=spec["transaction_type"],
                    quantity=spec["quantity"],
                    product=spec["product"],
                    order_type="LIMIT",
                    price=spec["price"],
                ),
            )
            failed = order.status == OrderStatus.REJECTED
            result["order_result"] = {
                "status": "failed" if failed else "success",
                "order_id": order.order_id,
                "rejection_reason": order.state.status_message or "",
            }
        except OrderInputError as exc:
            result["order_result"] = {"status": "failed", "order_id": "", "rejection_reason": exc.message}
        gtt.results = [None] * len(gtt.orders)
        gtt.results[leg] = result
        gtt.status = "triggered"
        gtt.updated_at = now


class GttRoutes:
    def __init__(self, api: KiteApi, book: GttBook) -> None:
        self.api = api
        self.book = book

    async def _parse(
        self, request: web.Request, user_id: str
    ) -> tuple[str, Instrument, list[float], float, list[Any]]:
        form = await read_form(request)
        kind = form.get("type")
        if kind not in (SINGLE, TWO_LEG):
            raise input_error("Invalid `type`. Should be `single` or `two-leg`.")
        try:
            condition = json.loads(str(form.get("condition", "")))
            orders = json.loads(str(form.get("orders", "")))
        except ValueError:
            raise input_error("Invalid `condition` or `orders`: not valid JSON.") from None
        if not isinstance(condition, dict) or not isinstance(orders, list):
            raise input_error("Invalid `condition` or `orders`.")
        inst = self.api._instrument(condition.get("exchange"), condition.get("tradingsymbol"))
        raw_values = condition.get("trigger_values")
        values = [_positive(v) for v in raw_values] if isinstance(raw_values, list) else [None]
        if any(v is None for v in values):
            raise input_error("Invalid `trigger_values`.")
        triggers = [v for v in values if v is not None]
        if len(triggers) != (1 if kind == SINGLE else 2) or len(orders) != len(triggers):
            raise input_error(f"Invalid `trigger_values` or `orders` for a {kind} trigger.")
        if kind == TWO_LEG and not triggers[0] < triggers[1]:
            raise input_error("The lower trigger value must be below the upper one.")
        last_price = _positive(condition.get("last_price"))
        if last_price is None:
            raise input_error("Invalid `last_price`.")
        parsed = []
        for o in orders:
            if not isinstance(o, dict):
                raise input_error("Invalid `orders`.")
            quantity, price = o.get("quantity"), _positive(o.get("price"))
            if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0 or price is None:
                raise input_error("Invalid `quantity` or `price` in `orders`.")
            if o.get("transaction_type") not in ("BUY", "SELL") or o.get("product") not in PRODUCTS:
                raise input_error("Invalid `transaction_type` or `product` in `orders`.")
            parsed.append(
                {
                    "exchange": inst.exchange,
                    "tradingsymbol": inst.tradingsymbol,
                    "product": o["product"],
                    "order_type": "LIMIT",
                    "transaction_type": o["transaction_type"],
                    "quantity": quantity,
                    "price": price,
                }
            )
        return str(kind), inst, triggers, last_price, parsed

    def _get(self, request: web.Request, user_id: str) -> Gtt:
        try:
            gtt = self.book.triggers.get(int(request.match_info["trigger_id"]))
        except ValueError:
            gtt = None
        if gtt is None or gtt.user_id != user_id or gtt.status == "deleted":
            raise input_error("Invalid trigger ID.")
        return gtt

    async def place(self, request: web.Request) -> web.Response:
        session = self.api.auth(request)
        kind, inst, values, last_price, orders = await self._parse(request, session.user_id)
        now = datetime.now(IST)
        gtt = Gtt(next(self.book._ids), session.user_id, kind, inst, values, last_price, orders, now, now)
        self.book.triggers[gtt.id] = gtt
        return ok({"trigger_id": gtt.id})

    async def list_all(self, request: web.Request) -> web.Response:
        session = self.api.auth(request)
        gtts = [
            g for g in self.book.triggers.values() if g.user_id == session.user_id and g.status != "deleted"
        ]
        return ok([g.as_dict() for g in reversed(gtts)])

    async def info(self, request: web.Request) -> web.Response:
        session = self.api.auth(request)
        return ok(self._get(request, session.user_id).as_dict())

    async def modify(self, request: web.Request) -> web.Response:
        session = self.api.auth(request)
        gtt = self._get(request, session.user_id)
        if gtt.status != "active":
            raise input_error(f"Trigger cannot be modified as it is {gtt.status}.")
        cap = self.book.max_modifications
        if cap is not None and gtt.modifications >= cap:
            raise input_error("Maximum allowed trigger modifications exceeded.")
        gtt.type, gtt.instrument, gtt.trigger_values, gtt.last_price, gtt.orders = await self._parse(
            request, session.user_id
        )
        gtt.updated_at = datetime.now(IST)
        gtt.modifications += 1
        return ok({"trigger_id": gtt.id})

    async def delete(self, request: web.Request) -> web.Response:
        session = self.api.auth(request)
        gtt = self._get(request, session.user_id)
        gtt.status = "deleted"
        gtt.updated_at = datetime.now(IST)
        return ok({"trigger_id": gtt.id})


def _positive(value: object) -> float | None:
    """``value`` as a float when it is a finite number above zero, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def register(app: web.Application, sim: Simulator, api: KiteApi) -> None:
    book = GttBook(sim)
    sim.add_listener(book)
    routes = GttRoutes(api, book)
    app.router.add_post("/gtt/triggers", routes.place)
    app.router.add_get("/gtt/triggers", routes.list_all)
    app.router.add_get("/gtt/triggers/{trigger_id}", routes.info)
    app.router.add_put("/gtt/triggers/{trigger_id}", routes.modify)
    app.router.add_delete("/gtt/triggers/{trigger_id}", routes.delete)
