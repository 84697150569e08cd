"""Upstox GTT (v3): place, modify, cancel and read GTTs; ticks fire their rules into LIMIT orders.

As Upstox documents it: every GTT opens with an ENTRY rule (ABOVE, BELOW or IMMEDIATE); a MULTIPLE GTT adds
a TARGET and/or a STOPLOSS rule that arm only once the ENTRY's order has filled, and the first of them to
fire cancels the other. A fired rule places a LIMIT order priced ``market_protection`` percent through the
last price (2 % when none is given). A STOPLOSS rule with a ``trailing_gap`` trails the last price by that
gap. A GTT whose ENTRY has fired can no longer be modified or cancelled; modifications per GTT are capped
only when ``GttBook.max_modifications`` is set (Upstox documents no cap).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from trailstop_gui.simulator.core import SimListener, Simulator
from trailstop_gui.simulator.exchange import IST, Order, OrderInputError, OrderRequest, OrderStatus
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.market import Quote
from trailstop_gui.simulator.upstox_api import (
    BROKER,
    PRODUCTS,
    UpstoxApi,
    _json_body,
    authenticate,
    input_error,
    ok,
)

GTT_NOT_FOUND = "UDAPI1111"  # the simulator's choice: Upstox publishes no code for it
GTT_NOT_ACTIVE = "UDAPI1112"
GTT_TOO_MANY_MODIFICATIONS = "UDAPI1113"
STRATEGIES = ("ENTRY", "TARGET", "STOPLOSS")
TRIGGER_TYPES = ("ABOVE", "BELOW", "IMMEDIATE")
DEFAULT_PROTECTION = 2.0
YEAR_US = 365 * 24 * 3600 * 1_000_000


@dataclass(slots=True)
class Rule:
    strategy: str
    trigger_type: str
    trigger_price: float
    transaction_type: str
    trailing_gap: float | None = None
    market_protection: float | None = None
    status: str = "SCHEDULED"  # TARGET/STOPLOSS wait as PENDING until the ENTRY fills
    message: str | None = None
    order_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "status": self.status,
            "message": self.message,
            "trigger_type": self.trigger_type,
            "trigger_price": self.trigger_price,
            "transaction_type": self.transaction_type,
            "order_id": self.order_id,
        }
        if self.trailing_gap is not None:
            out["trailing_gap"] = self.trailing_gap
        return out


@dataclass(slots=True)
class UpstoxGtt:
    id: str
    user_id: str
    type: str
    instrument: Instrument
    quantity: int
    product: str  # I, D or MTF
    rules: list[Rule]
    created_us: int
    modifications: int = 0
    cancelled: bool = False

    @property
    def entry(self) -> Rule:
        return self.rules[0]

    def describe(self) -> dict[str, Any]:
        """The control API's view (``GET /_sim/gtts``), the same for both brokers."""
        entry = self.entry
        status = "cancelled" if self.cancelled else entry.status.lower()
        return {
            "broker": BROKER,
            "id": self.id,
            "user_id": self.user_id,
            "status": status,
            "symbol": self.instrument.symbol,
            "trigger": entry.trigger_price,
            "transaction_type": entry.transaction_type,
            "quantity": self.quantity,
            "price": None,
            "order_id": entry.order_id,
            "modifications": self.modifications,
            "rules": [r.as_dict() for r in self.rules],
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "exchange": self.instrument.upstox_segment,
            "quantity": self.quantity,
            "product": self.product,
            "rules": [r.as_dict() for r in self.rules],
            "trading_symbol": self.instrument.tradingsymbol,
            "instrument_token": self.instrument.upstox_key,
            "gtt_order_id": self.id,
            "expires_at": self.created_us + YEAR_US,
            "created_at": self.created_us,
        }


class GttBook(SimListener):
    """Every Upstox user's GTTs; fires their rules on ticks and follows the orders they place."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.gtts: dict[str, UpstoxGtt] = {}
        self.max_modifications: int | None = None
        self._seq = itertools.count(1)
        self._by_order: dict[str, tuple[UpstoxGtt, Rule]] = {}

    def reset(self) -> None:
        self.gtts.clear()
        self._by_order.clear()

    def describe_gtts(self) -> list[dict[str, Any]]:
        return [g.describe() for g in self.gtts.values()]

    def new_id(self) -> str:
        return f"GTT-C{datetime.now(IST):%y%m%d}{next(self._seq):08d}"

    # -- firing ------------------------------------------------------------------------------------

    def on_ticks(self, quotes: list[Quote]) -> None:
        by_key = {q.instrument.upstox_key: q for q in quotes}
        for gtt in list(self.gtts.values()):
            quote = by_key.get(gtt.instrument.upstox_key)
            if quote is not None and not gtt.cancelled:
                self.check(gtt, quote.ltp)

    def check(self, gtt: UpstoxGtt, ltp: float) -> None:
        for rule in gtt.rules:
            if rule.status != "SCHEDULED":
                continue
            if rule.strategy == "STOPLOSS" and rule.trailing_gap:
                self._trail(rule, ltp, gtt.instrument.tick_size)
            if self._hit(rule, ltp):
                self._fire(gtt, rule, ltp)
                if rule.strategy != "ENTRY":
                    for other in gtt.rules[1:]:
                        if other is not rule and other.status in ("SCHEDULED", "PENDING"):
                            other.status = "CANCELLED"
                break

    @staticmethod
    def _trail(rule: Rule, ltp: float, tick: float) -> None:
        gap = rule.trailing_gap or 0.0
        if rule.transaction_type == "SELL":
            rule.trigger_price = max(rule.trigger_price, _grid(ltp - gap, tick, up=False))
        else:
            rule.trigger_price = min(rule.trigger_price, _grid(ltp + gap, tick, up=True))

    @staticmethod
    def _hit(rule: Rule, ltp: float) -> bool:
        if rule.strategy == "ENTRY":
            if rule.trigger_type == "IMMEDIATE":
                return True
            return ltp >= rule.trigger_price if rule.trigger_type == "ABOVE" else ltp <= rule.trigger_price
        selling = rule.transaction_type == "SELL"
        if rule.strategy == "STOPLOSS":
            return ltp <= rule.trigger_price if selling else ltp >= rule.trigger_price
        return ltp >= rule.trigger_price if selling else ltp <= rule.trigger_price  # TARGET

    def _fire(self, gtt: UpstoxGtt, rule: Rule, ltp: float) -> None:
        inst = gtt.instrument
        percent = DEFAULT_PROTECTION if rule.market_protection in (None, -1) else rule.market_protection
        assert percent is not None
        buying = rule.transaction_type == "BUY"
        raw = ltp * (1 + percent / 100) if buying else ltp * (1 - percent / 100)
        price = max(_grid(raw, inst.tick_size, up=not buying), inst.tick_size)
        rule.status = "TRIGGERED"
        try:
            order = self.sim.exchange.place(
                BROKER,
                gtt.user_id,
                OrderRequest(
                    instrument=inst,
                    transaction_type=rule.transaction_type,
                    quantity=gtt.quantity,
                    product=_core_product(gtt.product, inst),
                    order_type="LIMIT",
                    price=round(price, 2),
                ),
            )
        except OrderInputError as exc:
            rule.status, rule.message = "FAILED", exc.message
            return
        rule.order_id = order.order_id
        self._by_order[order.order_id] = (gtt, rule)
        self.on_order_update(order)

    def on_order_update(self, order: Order) -> None:
        found = self._by_order.get(order.order_id)
        if found is None or order.broker != BROKER:
            return
        gtt, rule = found
        if order.status == OrderStatus.COMPLETE:
            rule.status = "COMPLETED"
            if rule.strategy == "ENTRY":
                for other in gtt.rules[1:]:
                    if other.status == "PENDING":
                        other.status = "SCHEDULED"
                quote = self.sim.market.quote(gtt.instrument)
                self.check(gtt, quote.ltp)
        elif order.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
            rule.status = "FAILED" if order.status == OrderStatus.REJECTED else "CANCELLED"
            rule.message = order.state.status_message
            if rule.strategy == "ENTRY":
                for other in gtt.rules[1:]:
                    other.status = "CANCELLED"
        elif order.status == OrderStatus.OPEN:
            rule.status = "OPEN"


class GttRoutes:
    def __init__(self, api: UpstoxApi, book: GttBook) -> None:
        self.api = api
        self.book = book

    def _rules(self, body: dict[str, Any], kind: str, transaction_type: str) -> list[Rule]:
        raw = body.get("rules")
        if not isinstance(raw, list) or not raw or len(raw) > 3:
            raise input_error("rules: one to three rules are required", "rules", None)
        rules: list[Rule] = []
        for item in raw:
            if not isinstance(item, dict):
                raise input_error("rules: each rule must be an object", "rules", None)
            strategy, trigger_type = item.get("strategy"), item.get("trigger_type")
            if strategy not in STRATEGIES:
                raise input_error("Invalid strategy", "rules[].strategy", strategy)
            if trigger_type not in TRIGGER_TYPES:
                raise input_error("Invalid trigger_type", "rules[].trigger_type", trigger_type)
            price = _positive(item.get("trigger_price"))
            if price is None:
                raise input_error("Invalid trigger_price", "rules[].trigger_price", item.get("trigger_price"))
            gap = item.get("trailing_gap")
            if gap is not None and (_positive(gap) is None or strategy != "STOPLOSS"):
                raise input_error("trailing_gap: a positive number, on a STOPLOSS rule", "trailing_gap", gap)
            protection = item.get("market_protection")
            if protection is not None and (
                isinstance(protection, bool)
                or not isinstance(protection, int | float)
                or not (protection == -1 or 0 <= protection <= 25)
            ):
                raise input_error("Invalid market_protection", "market_protection", protection)
            exit_side = "SELL" if transaction_type == "BUY" else "BUY"
            rules.append(
                Rule(
                    strategy=str(strategy),
                    trigger_type=str(trigger_type),
                    trigger_price=price,
                    transaction_type=transaction_type if strategy == "ENTRY" else exit_side,
                    trailing_gap=float(gap) if gap is not None else None,
                    market_protection=float(protection) if protection is not None else None,
                    status="SCHEDULED" if strategy == "ENTRY" else "PENDING",
                )
            )
        strategies = [r.strategy for r in rules]
        if strategies[0] != "ENTRY" or len(set(strategies)) != len(strategies):
            raise input_error("rules: an ENTRY rule first, and no strategy twice", "rules", strategies)
        if (kind == "SINGLE") != (len(rules) == 1):
            raise input_error(f"rules: a {kind} GTT has {'one rule' if kind == 'SINGLE' else 'two or three'}")
        for rule in rules[1:]:
            if rule.trigger_type != "IMMEDIATE":
                raise input_error("TARGET and STOPLOSS rules take trigger_type IMMEDIATE", "trigger_type")
        return rules

    def _get(self, user_id: str, gtt_id: Any) -> UpstoxGtt:
        gtt = self.book.gtts.get(gtt_id) if isinstance(gtt_id, str) else None
        if gtt is None or gtt.user_id != user_id:
            raise input_error("GTT order not found", "gtt_order_id", gtt_id, GTT_NOT_FOUND)
        return gtt

    @staticmethod
    def _type(body: dict[str, Any]) -> str:
        kind = body.get("type")
        if kind not in ("SINGLE", "MULTIPLE"):
            raise input_error("Invalid type: SINGLE or MULTIPLE", "type", kind)
        return str(kind)

    @staticmethod
    def _quantity(body: dict[str, Any]) -> int:
        quantity = body.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise input_error("Invalid quantity", "quantity", quantity)
        return quantity

    async def place(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        session = authenticate(self.api.sim, request)
        body = await _json_body(request)
        inst = self.api._instrument(body.get("instrument_token"))
        kind = self._type(body)
        quantity = self._quantity(body)
        product = body.get("product")
        if product not in PRODUCTS:
            raise input_error("The 'product' is invalid", "product", product)
        transaction_type = body.get("transaction_type")
        if transaction_type not in ("BUY", "SELL"):
            raise input_error("The 'transaction_type' is invalid", "transaction_type", transaction_type)
        rules = self._rules(body, kind, str(transaction_type))
        gtt = UpstoxGtt(
            id=self.book.new_id(),
            user_id=session.user_id,
            type=kind,
            instrument=inst,
            quantity=quantity,
            product=str(product),
            rules=rules,
            created_us=int(time.time() * 1_000_000),
        )
        self.book.gtts[gtt.id] = gtt
        self.book.check(gtt, self.api.sim.market.ltp(inst))  # IMMEDIATE, or a level already crossed
        return ok({"gtt_order_ids": [gtt.id]}, latency_since=started)

    async def modify(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        session = authenticate(self.api.sim, request)
        body = await _json_body(request)
        gtt = self._get(session.user_id, body.get("gtt_order_id"))
        if gtt.cancelled or gtt.entry.status != "SCHEDULED":
            raise input_error(
                "GTT order cannot be modified as it is no longer active",
                "gtt_order_id",
                gtt.id,
                GTT_NOT_ACTIVE,
            )
        cap = self.book.max_modifications
        if cap is not None and gtt.modifications >= cap:
            raise input_error(
                "Maximum allowed GTT modifications exceeded",
                "gtt_order_id",
                gtt.id,
                GTT_TOO_MANY_MODIFICATIONS,
            )
        kind = self._type(body)
        quantity = self._quantity(body)
        gtt.rules = self._rules(body, kind, gtt.entry.transaction_type)
        gtt.type, gtt.quantity = kind, quantity
        gtt.modifications += 1
        self.book.check(gtt, self.api.sim.market.ltp(gtt.instrument))
        return ok({"gtt_order_ids": [gtt.id]}, latency_since=started)

    async def cancel(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        session = authenticate(self.api.sim, request)
        body = await _json_body(request)
        gtt = self._get(session.user_id, body.get("gtt_order_id"))
        live = [r for r in gtt.rules if r.status in ("SCHEDULED", "PENDING")]
        if gtt.cancelled or not live or gtt.entry.status not in ("SCHEDULED", "COMPLETED"):
            raise input_error(
                "GTT order cannot be cancelled as it is no longer active",
                "gtt_order_id",
                gtt.id,
                GTT_NOT_ACTIVE,
            )
        for rule in live:
            rule.status = "CANCELLED"
        gtt.cancelled = True
        return ok({"gtt_order_ids": [gtt.id]}, latency_since=started)

    async def details(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        session = authenticate(self.api.sim, request)
        gtt_id = request.query.get("gtt_order_id")
        if gtt_id:
            return ok([self._get(session.user_id, gtt_id).as_dict()], latency_since=started)
        mine = [g.as_dict() for g in self.book.gtts.values() if g.user_id == session.user_id]
        return ok(mine, latency_since=started)


def _grid(price: float, tick: float, *, up: bool) -> float:
    steps = math.ceil(price / tick - 1e-9) if up else math.floor(price / tick + 1e-9)
    return round(steps * tick, 2)


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _core_product(code: str, inst: Instrument) -> str:
    core = PRODUCTS[code]
    return "NRML" if code == "D" and inst.is_derivative else core


def register(app: web.Application, sim: Simulator, api: UpstoxApi) -> GttBook:
    book = GttBook(sim)
    sim.add_listener(book)
    routes = GttRoutes(api, book)
    app.router.add_post("/v3/order/gtt/place", routes.place)
    app.router.add_put("/v3/order/gtt/modify", routes.modify)
    app.router.add_delete("/v3/order/gtt/cancel", routes.cancel)
    app.router.add_get("/v3/order/gtt", routes.details)
    return book


__all__ = ["GttBook", "Rule", "UpstoxGtt", "register"]
