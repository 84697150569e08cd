"""Orders and matching, broker-neutral: accounts keyed by (broker, user_id), Kite's status vocabulary.

Facades translate their own request formats into :class:`OrderRequest` and render :class:`Order`,
:class:`Trade`, :class:`Position` and :class:`Holding` in their broker's shapes.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from trailstop_gui.simulator.faults import Faults, PartialFill
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.market import Market, round_to_tick

IST = timezone(timedelta(hours=5, minutes=30), "IST")
MAX_MODIFICATIONS = 25
AUTO_MARKET_PROTECTION = 2.0  # percent applied for market_protection=-1


def format_ist(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


class OrderStatus(enum.StrEnum):
    PUT_ORDER_REQ_RECEIVED = "PUT ORDER REQ RECEIVED"
    VALIDATION_PENDING = "VALIDATION PENDING"
    OPEN_PENDING = "OPEN PENDING"
    OPEN = "OPEN"
    TRIGGER_PENDING = "TRIGGER PENDING"
    AMO_REQ_RECEIVED = "AMO REQ RECEIVED"
    MODIFY_VALIDATION_PENDING = "MODIFY VALIDATION PENDING"
    MODIFY_PENDING = "MODIFY PENDING"
    MODIFIED = "MODIFIED"
    CANCEL_PENDING = "CANCEL PENDING"
    COMPLETE = "COMPLETE"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.COMPLETE, OrderStatus.CANCELLED, OrderStatus.REJECTED)


WORKING = (OrderStatus.OPEN, OrderStatus.TRIGGER_PENDING, OrderStatus.AMO_REQ_RECEIVED)
TRANSACTION_TYPES = ("BUY", "SELL")
PRODUCTS = ("MIS", "CNC", "NRML")
ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
VALIDITIES = ("DAY", "IOC", "TTL")
VARIETIES = ("regular", "amo")


class OrderInputError(ValueError):
    """A request the broker refuses at its gate (no order is created); facades map it to their envelope."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class OrderNotFound(LookupError):
    """No order with that id in this account."""


class OrderStateError(OrderInputError):
    """The order exists but cannot be modified or cancelled in its current state."""


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[[], None]) -> Any: ...


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a client asked for, already parsed into the simulator's (Kite's) vocabulary."""

    instrument: Instrument
    transaction_type: str
    quantity: int
    product: str
    order_type: str
    price: float = 0.0
    trigger_price: float = 0.0
    validity: str = "DAY"
    variety: str = "regular"
    disclosed_quantity: int = 0
    tag: str | None = None
    market_protection: float = 0.0


@dataclass(frozen=True, slots=True)
class OrderState:
    """The changing part of an order; every change is kept in the order's history."""

    status: OrderStatus
    order_type: str
    quantity: int
    price: float
    trigger_price: float
    validity: str
    disclosed_quantity: int
    updated_at: datetime
    status_message: str | None = None
    filled_quantity: int = 0
    average_price: float = 0.0
    cancelled_quantity: int = 0
    exchange_order_id: str | None = None
    exchange_timestamp: datetime | None = None
    modified: bool = False

    @property
    def pending_quantity(self) -> int:
        if self.status in (OrderStatus.COMPLETE, OrderStatus.REJECTED):
            return 0
        return self.quantity - self.filled_quantity


@dataclass(slots=True)
class Order:
    order_id: str
    broker: str
    user_id: str
    instrument: Instrument
    transaction_type: str
    product: str
    variety: str
    tag: str | None
    market_protection: float
    placed_at: datetime
    state: OrderState
    history: list[OrderState] = field(default_factory=list)
    requested_order_type: str = ""  # as the client sent it; state.order_type may differ (market protection)
    extra_tags: tuple[str, ...] = ()
    modify_count: int = 0
    protection_limit: float | None = None  # fill no worse than this (market protection)
    hold_remainder: bool = False  # a partial fill's remainder waits for a cancel or a timer
    fill_scheduled: bool = False

    @property
    def status(self) -> OrderStatus:
        return self.state.status

    @property
    def tags(self) -> list[str]:
        return ([self.tag] if self.tag else []) + list(self.extra_tags)

    @property
    def is_buy(self) -> bool:
        return self.transaction_type == "BUY"


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    order_id: str
    exchange_order_id: str
    broker: str
    user_id: str
    instrument: Instrument
    product: str
    transaction_type: str
    quantity: int
    price: float
    filled_at: datetime
    order_placed_at: datetime


@dataclass(slots=True)
class Position:
    """Today's buys and sells of one instrument under one product (there is no overnight carry)."""

    instrument: Instrument
    product: str
    buy_quantity: int = 0
    buy_value: float = 0.0
    sell_quantity: int = 0
    sell_value: float = 0.0
    overnight_quantity: int = 0

    @property
    def quantity(self) -> int:
        return self.buy_quantity - self.sell_quantity

    @property
    def buy_price(self) -> float:
        return self.buy_value / self.buy_quantity if self.buy_quantity else 0.0

    @property
    def sell_price(self) -> float:
        return self.sell_value / self.sell_quantity if self.sell_quantity else 0.0

    @property
    def average_price(self) -> float:
        if self.quantity > 0:
            return self.buy_price
        if self.quantity < 0:
            return self.sell_price
        return 0.0

    @property
    def value(self) -> float:
        return self.sell_value - self.buy_value

    def pnl(self, last_price: float) -> float:
        return self.value + self.quantity * last_price

    def realised(self) -> float:
        closed = min(self.buy_quantity, self.sell_quantity)
        return closed * (self.sell_price - self.buy_price)


@dataclass(slots=True)
class Holding:
    """Delivery shares in the demat, listed under one exchange (a stock bought on BSE is listed there).

    ``quantity`` includes ``t1_quantity`` (bought, not yet settled), as Kite reports it.
    ``used_quantity`` is what today's sales took out of it and buy-backs have not returned.
    """

    instrument: Instrument
    quantity: int
    average_price: float
    t1_quantity: int = 0
    used_quantity: int = 0
    listing: str = ""  # "BSE": listed under BSE although the shares trade on the instrument's NSE book

    @property
    def exchange(self) -> str:
        return self.listing or self.instrument.exchange

    @property
    def kite_token(self) -> int:
        """The listing's token; a BSE listing gets a BSE-segment token (segment 4)."""
        if self.exchange == self.instrument.exchange:
            return self.instrument.kite_token
        return (BSE_TOKEN_BASE + self.instrument.exchange_token) << 8 | SEGMENT_BSE

    @property
    def upstox_key(self) -> str:
        if self.exchange == self.instrument.exchange:
            return self.instrument.upstox_key
        return f"{self.exchange}_EQ|{self.instrument.isin}"


@dataclass(slots=True)
class Account:
    broker: str
    user_id: str
    orders: dict[str, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    positions: dict[tuple[int, str], Position] = field(default_factory=dict)
    holdings: dict[int, Holding] = field(default_factory=dict)  # by the listing's Kite token
    demat_consent: bool = True  # DDPI/POA on file: sales from the demat need no daily TPIN

    def holdings_of(self, inst: Instrument) -> list[Holding]:
        """Every listing (NSE, BSE) of the instrument's ISIN."""
        return [h for h in self.holdings.values() if h.instrument.isin == inst.isin and inst.isin]


# Demo holdings every new account starts with:
# (symbol, quantity, average price as a fraction of today's, T1 quantity within it, listed under).
# SBIN is held twice, on NSE and BSE (one ISIN); TCS has 2 shares bought yesterday and not yet settled.
DEMO_HOLDINGS = (
    ("NSE:INFY", 10, 0.92, 0, ""),
    ("NSE:ITC", 100, 0.87, 0, ""),
    ("NSE:SBIN", 10, 1.04, 0, ""),
    ("NSE:SBIN", 6, 1.01, 0, "BSE"),
    ("NSE:TCS", 5, 0.96, 2, ""),
)
BSE_TOKEN_BASE = 500000
SEGMENT_BSE = 4

# Neither broker publishes the text it refuses an unauthorised demat debit with; these follow the words of
# their help pages (Zerodha: TPIN/DP authorisation; Upstox: "not authorized on CDSL using TPIN", DDPI).
DEMAT_REFUSAL = {
    "kite": (
        "RMS: Holdings not authorised for sale. Authorise the sale with your CDSL TPIN or submit DDPI/POA."
    ),
    "upstox": "Sell order not authorized on CDSL using TPIN. Authorise your holdings or enable DDPI to sell.",
}


class Exchange:
    """Accepts, matches and reports orders. Call it on the simulator's loop thread only."""

    def __init__(
        self,
        market: Market,
        faults: Faults,
        scheduler: Scheduler,
        on_update: Callable[[Order], None],
        fill_delay: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.market = market
        self.faults = faults
        self.fill_delay = fill_delay
        self._scheduler = scheduler
        self._on_update = on_update
        self._clock = clock
        self._accounts: dict[tuple[str, str], Account] = {}
        self._orders: dict[str, Order] = {}  # every order received, in arrival order
        self._working: dict[str, Order] = {}
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self.demat_consent: dict[str, bool] = {}  # per broker; accounts made later start with it

    def set_demat_consent(self, broker: str, consent: bool) -> int:
        """Give (or take away) standing demat consent on every account of ``broker``, now and later."""
        self.demat_consent[broker] = consent
        changed = 0
        for account in self._accounts.values():
            if account.broker == broker:
                account.demat_consent = consent
                changed += 1
        return changed

    # -- accounts --------------------------------------------------------------------------------

    def account(self, broker: str, user_id: str) -> Account:
        key = (broker, user_id)
        account = self._accounts.get(key)
        if account is None:
            account = Account(broker, user_id, demat_consent=self.demat_consent.get(broker, True))
            for symbol, quantity, ratio, t1, listing in DEMO_HOLDINGS:
                inst = self.market.instruments.find(symbol)
                if inst is not None:
                    price = round_to_tick(inst.base_price * ratio, inst.tick_size)
                    holding = Holding(inst, quantity, price, t1_quantity=t1, listing=listing)
                    account.holdings[holding.kite_token] = holding
            self._accounts[key] = account
        return account

    def reset(self) -> None:
        """Forget every account, order and trade (sessions and prices stay)."""
        self._accounts.clear()
        self.demat_consent.clear()
        self._orders.clear()
        self._working.clear()

    # -- queries ---------------------------------------------------------------------------------

    def all_orders(self) -> list[Order]:
        return list(self._orders.values())

    # The read calls answer as the broker's REST API does: with the ``book_lag`` fault, as things were that
    # many seconds ago (an order placed since is not there yet; fills since are not seen). The order-update
    # stream is not late. Kite's forum: the order book, trades and positions can trail a fill by a moment.

    def orders(self, broker: str, user_id: str) -> list[Order]:
        cutoff = self._lag_cutoff(self.faults.orders_lag)
        orders = self.account(broker, user_id).orders.values()
        if cutoff is None:
            return list(orders)
        return [lagged for o in orders if (lagged := _as_of(o, cutoff)) is not None]

    def order(self, broker: str, user_id: str, order_id: str) -> Order:
        order = self._own_order(broker, user_id, order_id)
        cutoff = self._lag_cutoff(self.faults.orders_lag)
        if cutoff is None:
            return order
        lagged = _as_of(order, cutoff)
        if lagged is None:
            raise OrderNotFound(order_id)
        return lagged

    def trades(self, broker: str, user_id: str, order_id: str | None = None) -> list[Trade]:
        cutoff = self._lag_cutoff(self.faults.orders_lag)
        trades = self.account(broker, user_id).trades
        return [
            t
            for t in trades
            if (order_id is None or t.order_id == order_id) and (cutoff is None or t.filled_at <= cutoff)
        ]

    def positions(self, broker: str, user_id: str) -> list[Position]:
        positions = list(self.account(broker, user_id).positions.values())
        cutoff = self._lag_cutoff()
        if cutoff is None:
            return positions
        late = [t for t in self.account(broker, user_id).trades if t.filled_at > cutoff]
        return [_without(p, late) for p in positions]

    def freeze_quantity(self, inst: Instrument) -> int:
        """The exchange's largest quantity for one order of ``inst`` (a fault may lower it)."""
        return self.faults.freeze.get(inst.symbol, inst.freeze_quantity)

    def _lag_cutoff(self, own: float | None = None) -> datetime | None:
        """The moment the lagging reads answer as of; ``own``: the order book's own lag, when it has one
        (the positions endpoint can trail fills that the order book already shows: Kite forum 8676, where
        the positions page showed nothing of an order the order book listed)."""
        lag = self.faults.book_lag if own is None else own
        if not lag:
            return None
        return datetime.fromtimestamp(self._clock() - lag, IST)

    def _own_order(self, broker: str, user_id: str, order_id: str) -> Order:
        order = self.account(broker, user_id).orders.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    def holdings(self, broker: str, user_id: str) -> list[Holding]:
        return list(self.account(broker, user_id).holdings.values())

    def blocked_holdings(self, broker: str, user_id: str) -> list[Holding]:
        """The holdings as Upstox reports them: ``cnc_used_quantity`` is "Quantity either blocked towards
        open or completed order" (Upstox API docs, Get Holdings), so a working delivery sale counts in it
        as soon as it is placed, not only once it fills."""
        account = self.account(broker, user_id)
        pending: dict[str, int] = {}
        for inst_isin, quantity in self._working_delivery_sales(account):
            pending[inst_isin] = pending.get(inst_isin, 0) + quantity
        rows = []
        for holding in account.holdings.values():
            isin = holding.instrument.isin
            free = holding.quantity - holding.used_quantity
            blocked = min(free, pending.get(isin, 0))
            pending[isin] = pending.get(isin, 0) - blocked
            rows.append(replace(holding, used_quantity=holding.used_quantity + blocked))
        return rows

    @staticmethod
    def _working_delivery_sales(account: Account, excluding: Order | None = None) -> list[tuple[str, int]]:
        """(ISIN, unfilled quantity) of every working CNC SELL order of the account.

        A working delivery sale blocks the shares it would deliver: the brokers' RMS refuses a second sale
        of the same shares while the first is open (Upstox documents it in ``cnc_used_quantity`` above; on
        Kite the order is rejected with an insufficient-holdings RMS message). An open SL sell blocks
        them too; a GTT does not (it is no order until it triggers).
        """
        return [
            (o.instrument.isin, o.state.quantity - o.state.filled_quantity)
            for o in account.orders.values()
            if o is not excluding
            and o.product == "CNC"
            and not o.is_buy
            and o.instrument.isin
            and not o.status.is_final
            and o.status is not OrderStatus.VALIDATION_PENDING
        ]

    # -- placing ---------------------------------------------------------------------------------

    def place(self, broker: str, user_id: str, request: OrderRequest) -> Order:
        """Accept an order (raising OrderInputError for a malformed one); the result may be REJECTED."""
        _check_request(request)
        now = self._now()
        account = self.account(broker, user_id)
        order = Order(
            order_id=self._next_order_id(now),
            broker=broker,
            user_id=user_id,
            instrument=request.instrument,
            transaction_type=request.transaction_type,
            product=request.product,
            variety=request.variety,
            tag=request.tag,
            market_protection=request.market_protection,
            placed_at=now,
            requested_order_type=request.order_type,
            state=OrderState(
                status=OrderStatus.PUT_ORDER_REQ_RECEIVED,
                order_type=request.order_type,
                quantity=request.quantity,
                price=request.price if request.order_type in ("LIMIT", "SL") else 0.0,
                trigger_price=request.trigger_price if request.order_type in ("SL", "SL-M") else 0.0,
                validity=request.validity,
                disclosed_quantity=request.disclosed_quantity,
                updated_at=now,
            ),
        )
        order.history.append(order.state)
        account.orders[order.order_id] = order
        self._orders[order.order_id] = order
        self._set(order, status=OrderStatus.VALIDATION_PENDING, notify=False)

        reason = self.faults.take_rejection(broker) or self._risk_check(order, account)
        if reason:
            self._set(order, status=OrderStatus.REJECTED, status_message=reason)
            return order

        if order.state.order_type == "MARKET" and request.market_protection and broker == "kite":
            # Kite reports a protected market order as a LIMIT at the protection price; Upstox's v3
            # market_protection is recorded (GET /_sim/orders) and its order stays MARKET.
            self._apply_market_protection(order)
        self._set(order, status=OrderStatus.OPEN_PENDING, notify=False)
        if order.variety == "amo":
            self._set(order, status=OrderStatus.AMO_REQ_RECEIVED)
            self._working[order.order_id] = order
            return order
        self._open(order)
        return order

    def modify(
        self,
        broker: str,
        user_id: str,
        order_id: str,
        *,
        quantity: int | None = None,
        price: float | None = None,
        trigger_price: float | None = None,
        order_type: str | None = None,
        validity: str | None = None,
        disclosed_quantity: int | None = None,
    ) -> Order:
        order = self._own_order(broker, user_id, order_id)
        if order.status not in WORKING:
            raise OrderStateError(f"Order cannot be modified as it is {order.status.value.lower()}.")
        if order.modify_count >= MAX_MODIFICATIONS:
            raise OrderStateError("Maximum allowed order modifications exceeded.")
        state = order.state
        new_type = order_type or state.order_type
        if new_type not in ORDER_TYPES:
            raise OrderInputError("Invalid `order_type`.", "order_type")
        new_quantity = state.quantity if quantity is None else quantity
        if new_quantity <= state.filled_quantity:
            raise OrderInputError("Quantity should be greater than the filled quantity.", "quantity")
        new_price = state.price if price is None else price
        new_trigger = state.trigger_price if trigger_price is None else trigger_price
        request = OrderRequest(
            instrument=order.instrument,
            transaction_type=order.transaction_type,
            quantity=new_quantity,
            product=order.product,
            order_type=new_type,
            price=new_price if new_type in ("LIMIT", "SL") else 0.0,
            trigger_price=new_trigger if new_type in ("SL", "SL-M") else 0.0,
            validity=validity or state.validity,
            disclosed_quantity=state.disclosed_quantity if disclosed_quantity is None else disclosed_quantity,
        )
        _check_request(request)
        problem = _tick_and_lot_problem(request)
        if problem:
            raise OrderInputError(problem)
        order.modify_count += 1
        self._set(order, status=OrderStatus.MODIFY_VALIDATION_PENDING, notify=False)
        self._set(order, status=OrderStatus.MODIFY_PENDING, notify=False)
        self._set(
            order,
            status=OrderStatus.MODIFIED,
            order_type=request.order_type,
            quantity=request.quantity,
            price=request.price,
            trigger_price=request.trigger_price,
            validity=request.validity,
            disclosed_quantity=request.disclosed_quantity,
            modified=True,
            notify=False,
        )
        if order.variety == "amo":
            self._set(order, status=OrderStatus.AMO_REQ_RECEIVED)
        else:
            order.protection_limit = None
            # A modification re-prices the order: a remainder held by the partial_fill fault is free again.
            order.hold_remainder = False
            self._open(order)
        return order

    def cancel(self, broker: str, user_id: str, order_id: str) -> Order:
        order = self._own_order(broker, user_id, order_id)
        if order.status not in WORKING:
            raise OrderStateError(f"Order cannot be cancelled as it is {order.status.value.lower()}.")
        self._cancel_remainder(order, None)
        return order

    # -- matching --------------------------------------------------------------------------------

    def on_prices(self, instruments: list[Instrument]) -> None:
        """Match working orders against the books of instruments whose prices just moved."""
        tokens = {i.kite_token for i in instruments}
        for order in list(self._working.values()):
            if order.instrument.kite_token not in tokens or order.fill_scheduled or order.hold_remainder:
                continue
            status = order.status
            if status == OrderStatus.TRIGGER_PENDING and self._triggered(order):
                self._activate_stop(order)
            elif status == OrderStatus.OPEN:
                self._match_resting(order)

    def _open(self, order: Order) -> None:
        if order.state.order_type in ("SL", "SL-M"):
            if self._triggered(order):
                self._activate_stop(order)
            else:
                self._set(
                    order, status=OrderStatus.TRIGGER_PENDING, exchange_order_id=self._exchange_id(order)
                )
                self._working[order.order_id] = order
            return
        self._set(order, status=OrderStatus.OPEN, exchange_order_id=self._exchange_id(order))
        self._working[order.order_id] = order
        if order.state.order_type == "MARKET" or self._crossed(order, order.state.price):
            self._schedule_fill(order)
        elif order.state.validity == "IOC":
            self._cancel_remainder(order, None)

    def _triggered(self, order: Order) -> bool:
        ltp = self.market.ltp(order.instrument)
        trigger = order.state.trigger_price
        return ltp >= trigger if order.is_buy else ltp <= trigger

    def _activate_stop(self, order: Order) -> None:
        if order.state.order_type == "SL-M" and order.market_protection and order.broker == "kite":
            order.protection_limit = self._protection_price(order)
        self._set(
            order,
            status=OrderStatus.OPEN,
            exchange_order_id=order.state.exchange_order_id or self._exchange_id(order),
        )
        self._working[order.order_id] = order
        if order.state.order_type == "SL-M" or self._crossed(order, order.state.price):
            self._schedule_fill(order)

    def _crossed(self, order: Order, limit: float) -> bool:
        quote = self.market.quote(order.instrument)
        if order.is_buy:
            return quote.ask is not None and quote.ask <= limit
        return quote.bid is not None and quote.bid >= limit

    def _limit_of(self, order: Order) -> float | None:
        if order.state.order_type in ("LIMIT", "SL"):
            return order.state.price
        return order.protection_limit

    def _schedule_fill(self, order: Order) -> None:
        delay = self.faults.fill_delay if self.faults.fill_delay is not None else self.fill_delay
        order.fill_scheduled = True

        def fill() -> None:
            order.fill_scheduled = False
            if order.status == OrderStatus.OPEN and not order.hold_remainder:
                self._match_aggressive(order)

        self._scheduler.call_later(delay, fill)

    def _match_aggressive(self, order: Order) -> None:
        """Fill against the opposite best price, within the order's limit if it has one."""
        quote = self.market.quote(order.instrument)
        best = quote.ask if order.is_buy else quote.bid
        limit = self._limit_of(order)
        if best is None:
            best = quote.ltp
        if limit is not None and (best > limit if order.is_buy else best < limit):
            if order.state.validity == "IOC":
                self._cancel_remainder(order, None)
            return  # rests at its limit until the book comes to it
        self._fill_working(order, best)

    def _match_resting(self, order: Order) -> None:
        limit = self._limit_of(order)
        if limit is None:
            self._match_aggressive(order)
        elif self._crossed(order, limit):
            self._fill_working(order, limit)

    def _fill_working(self, order: Order, price: float) -> None:
        remaining = order.state.quantity - order.state.filled_quantity
        partial: PartialFill | None = None
        if order.state.filled_quantity == 0:
            partial = self.faults.take_partial_fill()
        if partial is not None:
            lot = max(order.instrument.lot_size, 1)
            lots = remaining // lot
            first = max(1, math.floor(lots * partial.ratio)) * lot
            if first < remaining:
                self._fill(order, first, price)
                order.hold_remainder = True
                if partial.rest_after is not None:
                    self._scheduler.call_later(partial.rest_after, lambda: self._release_remainder(order))
                return
        self._fill(order, remaining, price)
        if order.state.validity == "IOC" and order.status == OrderStatus.OPEN:
            self._cancel_remainder(order, None)

    def _release_remainder(self, order: Order) -> None:
        order.hold_remainder = False
        if order.status == OrderStatus.OPEN:
            self._match_aggressive(order)

    def _fill(self, order: Order, quantity: int, price: float) -> None:
        now = self._now()
        state = order.state
        filled = state.filled_quantity + quantity
        average = (state.average_price * state.filled_quantity + price * quantity) / filled
        status = OrderStatus.COMPLETE if filled >= state.quantity else OrderStatus.OPEN
        account = self.account(order.broker, order.user_id)
        exchange_id = state.exchange_order_id or self._exchange_id(order)
        account.trades.append(
            Trade(
                trade_id=f"{next(self._trade_ids):08d}",
                order_id=order.order_id,
                exchange_order_id=exchange_id,
                broker=order.broker,
                user_id=order.user_id,
                instrument=order.instrument,
                product=order.product,
                transaction_type=order.transaction_type,
                quantity=quantity,
                price=price,
                filled_at=now,
                order_placed_at=order.placed_at,
            )
        )
        self._book_position(account, order, quantity, price)
        if status.is_final:
            self._working.pop(order.order_id, None)
        self._set(
            order,
            status=status,
            filled_quantity=filled,
            average_price=round(average, 4),
            exchange_order_id=exchange_id,
            exchange_timestamp=now,
        )

    def _cancel_remainder(self, order: Order, message: str | None) -> None:
        self._working.pop(order.order_id, None)
        order.hold_remainder = False
        pending = order.state.quantity - order.state.filled_quantity
        self._set(order, status=OrderStatus.CANCELLED, cancelled_quantity=pending, status_message=message)

    # -- checks and bookkeeping ------------------------------------------------------------------

    def _risk_check(self, order: Order, account: Account) -> str | None:
        """The broker's own reasons to reject an order after accepting it (REJECTED, with a message)."""
        inst = order.instrument
        state = order.state
        if inst.is_derivative and order.product == "CNC":
            return "CNC orders are not allowed for F&O instruments. Use NRML or MIS."
        if not inst.is_derivative and order.product == "NRML":
            return "NRML orders are not allowed for equity. Use CNC or MIS."
        problem = _tick_and_lot_problem_state(inst, state)
        if problem:
            return problem
        freeze = self.freeze_quantity(inst)
        if state.quantity > freeze:
            # The exchange's own refusal (NSE NNF error 16327, "order quantity greater than the limit");
            # Kite refuses such an order at the door instead (kite_api.py).
            self.faults.freeze_refused(inst.symbol)
            return f"Quantity {state.quantity} exceeds the freeze limit of {freeze} for this instrument."
        if state.order_type == "SL-M" and slm_withdrawn(inst.exchange, inst.instrument_type):
            return SLM_WITHDRAWN_MESSAGE
        ltp = self.market.ltp(inst)
        if state.order_type in ("SL", "SL-M"):
            trigger = state.trigger_price
            if order.is_buy and trigger <= ltp:
                return "Trigger price for stoploss buy orders should be higher than the last traded price."
            if not order.is_buy and trigger >= ltp:
                return "Trigger price for stoploss sell orders should be lower than the last traded price."
            if state.order_type == "SL" and (
                (order.is_buy and state.price < trigger) or (not order.is_buy and state.price > trigger)
            ):
                side = "buy" if order.is_buy else "sell"
                relation = "higher" if order.is_buy else "lower"
                return f"Price for stoploss {side} orders should be {relation} than or equal to the trigger."
        if order.product == "CNC" and not order.is_buy:
            # What the brokers let a delivery sale take: every listing's holdings (T1 included) plus
            # today's signed CNC net, less what working delivery sales already block; a same-day buy-back
            # restores what a sale took.
            held = sum(h.quantity for h in account.holdings_of(inst))
            position = account.positions.get((inst.kite_token, "CNC"))
            net = position.quantity if position else 0
            blocked = sum(q for isin, q in self._working_delivery_sales(account, order) if isin == inst.isin)
            available = max(0, held + net - blocked)
            if state.quantity > available:
                return f"Insufficient holdings for {inst.tradingsymbol}: available {available}."
            if not account.demat_consent and state.quantity > max(net, 0):
                return DEMAT_REFUSAL.get(order.broker, DEMAT_REFUSAL["kite"])
        return None

    def _apply_market_protection(self, order: Order) -> None:
        """A MARKET order with protection becomes a LIMIT at the protection price, as Kite reports it."""
        limit = self._protection_price(order)
        percent = AUTO_MARKET_PROTECTION if order.market_protection < 0 else order.market_protection
        order.extra_tags = ("mktp", f"mktp:{percent:.2f}")
        order.state = replace(order.state, order_type="LIMIT", price=limit)

    def _protection_price(self, order: Order) -> float:
        percent = AUTO_MARKET_PROTECTION if order.market_protection < 0 else order.market_protection
        ltp = self.market.ltp(order.instrument)
        tick = order.instrument.tick_size
        raw = ltp * (1 + percent / 100) if order.is_buy else ltp * (1 - percent / 100)
        steps = math.floor(raw / tick + 1e-9) if order.is_buy else math.ceil(raw / tick - 1e-9)
        return round(max(steps * tick, tick), 2)

    def _book_position(self, account: Account, order: Order, quantity: int, price: float) -> None:
        key = (order.instrument.kite_token, order.product)
        position = account.positions.get(key)
        if position is None:
            position = account.positions[key] = Position(order.instrument, order.product)
        if order.is_buy:
            position.buy_quantity += quantity
            position.buy_value += quantity * price
        else:
            position.sell_quantity += quantity
            position.sell_value += quantity * price
        if order.product == "CNC":
            self._settle_used(account, order.instrument, position.quantity)

    @staticmethod
    def _settle_used(account: Account, inst: Instrument, net: int) -> None:
        """Spread what today's sales took from the demat (and buy-backs did not return) over its listings."""
        sold = max(0, -net)
        for holding in account.holdings_of(inst):
            holding.used_quantity = min(holding.quantity, sold)
            sold -= holding.used_quantity

    def _set(self, order: Order, notify: bool = True, **changes: Any) -> None:
        changes.setdefault("updated_at", self._now())
        order.state = replace(order.state, **changes)
        order.history.append(order.state)
        if notify:
            self._on_update(order)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), IST)

    def _next_order_id(self, now: datetime) -> str:
        return f"{now:%y%m%d}{next(self._ids):09d}"

    def _exchange_id(self, order: Order) -> str:
        return f"13{int(order.order_id[6:]):014d}"


# NSE withdrew stop-loss market orders for index and stock options on 27 September 2021 and rejects them with
# "16052: Function not available" (the NSE circular, as relayed by brokers' bulletins, e.g. SAS Online
# bulletin 388); BSE discontinued SL-M in every segment on 9 October 2023 (Upstox's notice "BSE halts Stop
# Loss Market (SL-M) Orders"). The order reaches the exchange and comes back REJECTED with its message.
SLM_WITHDRAWN_MESSAGE = "16052: Function not available"
_NO_SLM_EXCHANGES = frozenset({"BSE", "BFO", "BCD"})


def slm_withdrawn(exchange: str, instrument_type: str) -> bool:
    """The exchange refuses SL-M orders for this instrument."""
    return exchange in _NO_SLM_EXCHANGES or (exchange == "NFO" and instrument_type in ("CE", "PE"))


def _as_of(order: Order, cutoff: datetime) -> Order | None:
    """``order`` as the order book showed it at ``cutoff``; None when it was not placed yet."""
    if order.placed_at > cutoff:
        return None
    history = [s for s in order.history if s.updated_at <= cutoff] or order.history[:1]
    return replace(order, state=history[-1], history=history)


def _without(position: Position, trades: list[Trade]) -> Position:
    """``position`` before ``trades`` (the ones a lagging positions endpoint has not seen yet)."""
    lagged = replace(position)
    for t in trades:
        if t.instrument.kite_token != position.instrument.kite_token or t.product != position.product:
            continue
        if t.transaction_type == "BUY":
            lagged.buy_quantity -= t.quantity
            lagged.buy_value -= t.quantity * t.price
        else:
            lagged.sell_quantity -= t.quantity
            lagged.sell_value -= t.quantity * t.price
    return lagged


def _check_request(request: OrderRequest) -> None:
    if not request.instrument.tradable:
        raise OrderInputError("Instrument is not tradable.", "tradingsymbol")
    if request.transaction_type not in TRANSACTION_TYPES:
        raise OrderInputError("Invalid `transaction_type`.", "transaction_type")
    if request.product not in PRODUCTS:
        raise OrderInputError("Invalid `product`.", "product")
    if request.order_type not in ORDER_TYPES:
        raise OrderInputError("Invalid `order_type`.", "order_type")
    if request.validity not in VALIDITIES:
        raise OrderInputError("Invalid `validity`.", "validity")
    if request.variety not in VARIETIES:
        raise OrderInputError("Invalid `variety`.", "variety")
    if request.quantity <= 0:
        raise OrderInputError("Quantity should be greater than zero.", "quantity")
    if request.disclosed_quantity < 0 or request.disclosed_quantity > request.quantity:
        raise OrderInputError("Invalid `disclosed_quantity`.", "disclosed_quantity")
    for name, value in (("price", request.price), ("trigger_price", request.trigger_price)):
        if not math.isfinite(value) or value < 0:
            raise OrderInputError(f"Invalid `{name}`.", name)
    if request.order_type in ("LIMIT", "SL") and request.price <= 0:
        raise OrderInputError("Price should be greater than zero for limit orders.", "price")
    if request.order_type in ("SL", "SL-M") and request.trigger_price <= 0:
        raise OrderInputError(
            "Trigger price should be greater than zero for stoploss orders.", "trigger_price"
        )
    if request.market_protection != -1 and not 0 <= request.market_protection <= 100:
        raise OrderInputError("Invalid `market_protection`. It should be -1 or between 0 and 100.")


def _off_tick(value: float, tick: float) -> bool:
    steps = value / tick
    return abs(steps - round(steps)) > 1e-6


def _tick_and_lot_problem(request: OrderRequest) -> str | None:
    inst = request.instrument
    for value in (request.price, request.trigger_price):
        if value and _off_tick(value, inst.tick_size):
            return (
                f"Tick size for this script is {inst.tick_size:.2f}. Kindly enter price in the multiple "
                "of tick size for this script"
            )
    if request.quantity % max(inst.lot_size, 1):
        return f"Quantity should be a multiple of lot size ({inst.lot_size})."
    return None


def _tick_and_lot_problem_state(inst: Instrument, state: OrderState) -> str | None:
    request = OrderRequest(
        instrument=inst,
        transaction_type="BUY",
        quantity=state.quantity,
        product="MIS",
        order_type=state.order_type,
        price=state.price,
        trigger_price=state.trigger_price,
    )
    return _tick_and_lot_problem(request)
