"""Paper trading: the ``Broker`` protocol with every order filled locally at live prices.

A trader rehearses against a real market without sending a single order. Prices come from any feed: a
``quote(instrument) -> (ltp, bid, ask) | None`` callable (the services hand in the live FeedWorker
quotes), the ticks passed to :meth:`PaperBroker.on_tick`, or, as a fallback, ``ltp()`` of a real
account's broker. Fills follow the simulator's rules, so a rehearsal there and here look the same:

- MARKET (and a triggered SL-M) fills at once at the best ask (buy) or best bid (sell); LTP when the
  feed carries no depth. With no price at all it waits, OPEN, for the first tick.
- LIMIT fills at once at the better price when it crosses on arrival; otherwise it rests and fills at
  its limit when a later tick crosses it.
- SL and SL-M wait (TRIGGER PENDING) until the LTP reaches the trigger (buy: at or above, sell: at or
  below); then SL acts as a LIMIT at its price and SL-M as a MARKET order.

Orders and fills are kept in the database (``models/paper_store.py``); positions are the sum of the fills,
so they survive a restart and can never disagree with them. Quantities always fill whole.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from trailstop_gui.models.domain import InstrumentId, Product, Side, Tick
from trailstop_gui.models.paper_store import PaperStore
from trailstop_gui.services.brokers.base import (
    IST,
    KITE_CAPABILITIES,
    Capabilities,
    Holding,
    Instrument,
    Order,
    OrderRequest,
    OrderType,
    Position,
    Profile,
    normalize_order_status,
)
from trailstop_gui.services.brokers.errors import BrokerError, BrokerInputError, RejectedError
from trailstop_gui.services.brokers.rate_limit import RateWindow

__all__ = ["PAPER_CAPABILITIES", "PaperBroker", "PriceBroker", "QuoteSource", "paper_capabilities"]

log = logging.getLogger(__name__)

QuoteSource = Callable[[InstrumentId], "tuple[float, float | None, float | None] | None"]
"""The latest (ltp, bid, ask) of an instrument, or None when there is none; bid/ask may be None."""

OrderListener = Callable[[Order], None]


class PriceBroker(Protocol):
    """What the paper broker asks of a real account's broker: prices and the instrument list."""

    def ltp(self, keys: Sequence[str]) -> dict[str, float]: ...

    def instruments(self) -> list[Instrument]: ...


# The broker's own spellings of the states a paper order goes through (Kite's, as the adapters see them).
_OPEN = "OPEN"
_TRIGGER_PENDING = "TRIGGER PENDING"
_COMPLETE = "COMPLETE"
_CANCELLED = "CANCELLED"
_REJECTED = "REJECTED"
_LIVE = (_OPEN, _TRIGGER_PENDING)


def paper_capabilities(feed: Capabilities | None = None) -> Capabilities:
    """Paper trading's capabilities; feed modes are those of the broker whose feed supplies the prices."""
    feed = feed or KITE_CAPABILITIES
    return Capabilities(
        broker="paper",
        supports_gtt=False,
        max_tag_length=20,
        tag_pattern=r"[A-Za-z0-9]+",
        # Nothing remote to overload; the limiter type needs a window, so give it one nobody reaches.
        order_rate_limits=(RateWindow(1_000_000, 1.0),),
        needs_market_protection=False,
        supports_market_protection=False,
        max_market_protection=0.0,
        depth_modes=feed.depth_modes,
        ltp_mode=feed.ltp_mode,
        product_names=((Product.MIS, "MIS"), (Product.CNC, "CNC"), (Product.NRML, "NRML")),
    )


PAPER_CAPABILITIES = paper_capabilities()


@dataclass(frozen=True, slots=True)
class _Price:
    ltp: float
    bid: float | None
    ask: float | None

    def to_fill(self, side: Side) -> float:
        """What an order that takes liquidity pays (buy) or gets (sell)."""
        best = self.ask if side is Side.BUY else self.bid
        return best if best is not None else self.ltp


def _price(ltp: object, bid: object = None, ask: object = None) -> _Price | None:
    """A usable price, or None; a missing or non-positive bid/ask falls back to the LTP."""
    value = _positive(ltp)
    if value is None:
        return None
    return _Price(value, _positive(bid), _positive(ask))


def _positive(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _instrument_id(text: str) -> InstrumentId:
    """Kite tokens go back to ints (ticks carry ints); Upstox keys and symbols stay strings."""
    return int(text) if text.isdigit() else text


def _quote_key(request: OrderRequest, instrument: str) -> str:
    if "|" in instrument:  # an Upstox instrument key is its own quote key
        return instrument
    return f"{request.exchange}:{request.symbol}" if request.exchange else request.symbol


class PaperBroker:
    """A paper account: orders are filled here, at the prices of a live feed. Safe to call from any thread.

    ``account`` keeps several paper accounts apart in one database. ``quote`` gives prices by the
    instrument ticks carry; ``price_broker`` (a real account) is asked for the LTP when neither ``quote``
    nor the ticks seen have one. ``on_order_update`` hears every change of an order (placed, filled,
    triggered, modified, cancelled), outside any lock; ``feed_capabilities`` names the feed's broker.
    The paper tables must exist (``db.init_db`` creates them).
    """

    def __init__(
        self,
        account: str | int = "paper",
        quote: QuoteSource | None = None,
        *,
        price_broker: PriceBroker | None = None,
        on_order_update: OrderListener | None = None,
        feed_capabilities: Capabilities | None = None,
        user_name: str = "Paper trading",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._account = str(account)
        self._store = PaperStore(self._account)
        self._quote = quote
        self._price_broker = price_broker
        self._listener = on_order_update
        self._capabilities = paper_capabilities(feed_capabilities)
        self._user_name = user_name
        self._clock = clock
        self._lock = threading.RLock()
        self._ticks: dict[str, _Price] = {}  # the latest price per instrument seen by on_tick
        self._live: dict[str, set[str]] = {}  # instrument -> ids of its orders still waiting
        for instrument, order_id in self._store.waiting(_LIVE):
            self._live.setdefault(instrument, set()).add(order_id)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def account(self) -> str:
        return self._account

    # ------------------------------------------------------------------------- prices

    def on_tick(self, tick: Tick) -> list[Order]:
        """Remember the tick's prices and fill what they cross; returns the orders that changed.

        Cheap when the instrument has no waiting order: safe to call on every tick of the feed thread.
        """
        price = _price(tick.ltp, tick.bid, tick.ask)
        if price is None:
            return []
        instrument = str(tick.instrument)
        with self._lock:
            self._ticks[instrument] = price
            if not self._live.get(instrument):
                return []
            changed = self._match_instrument(instrument, price)
        self._notify(changed)
        return changed

    def poll(self) -> list[Order]:
        """Check every waiting order against the current prices (for use without a tick stream)."""
        with self._lock:
            ids = sorted(order_id for waiting in self._live.values() for order_id in waiting)
            keys = self._store.quote_keys(ids)
        changed: list[Order] = []
        for instrument, quote_key in keys.items():
            price = self._current_price(instrument, quote_key)  # may ask the network: no lock held
            if price is not None:
                with self._lock:
                    changed.extend(self._match_instrument(instrument, price))
        self._notify(changed)
        return changed

    def _current_price(self, instrument: str, quote_key: str) -> _Price | None:
        price = self._local_price(instrument)
        if price is not None or self._price_broker is None:
            return price
        try:
            ltp = self._price_broker.ltp([quote_key]).get(quote_key)
        except BrokerError as exc:
            log.info("paper: no price for %s from the account's broker: %s", quote_key, exc)
            return None
        return _price(ltp)

    def _local_price(self, instrument: str) -> _Price | None:
        if self._quote is not None:
            try:
                quote = self._quote(_instrument_id(instrument))
            except Exception:
                log.exception("paper: the quote source failed for %s", instrument)
                quote = None
            if quote is not None:
                price = _price(*quote)
                if price is not None:
                    return price
        with self._lock:
            return self._ticks.get(instrument)

    # ------------------------------------------------------------------------- orders

    def place_order(self, request: OrderRequest) -> str:
        if request.tag is not None and not self._capabilities.is_valid_tag(request.tag):
            raise BrokerInputError(f"paper: a tag must be 1-20 letters and digits, got {request.tag!r}")
        instrument = str(request.instrument) if request.instrument is not None else ""
        if not instrument:
            if not request.symbol or not request.exchange:
                raise BrokerInputError("paper: give the instrument, or the symbol and the exchange")
            instrument = f"{request.exchange}:{request.symbol}"
        quote_key = _quote_key(request, instrument)
        price = self._current_price(instrument, quote_key)
        reason = _rejection(request, price)
        now = self._clock()
        if reason is not None:
            status = _REJECTED
        elif request.order_type.needs_trigger:
            status = _TRIGGER_PENDING
        else:
            status = _OPEN
        with self._lock:
            row = self._store.add_order(
                now,
                tag=request.tag,
                instrument=instrument,
                quote_key=quote_key,
                symbol=request.symbol,
                exchange=request.exchange,
                side=request.side.value,
                product=request.product.value,
                order_type=request.order_type.value,
                validity=request.validity.value,
                quantity=request.quantity,
                price=float(request.price or 0.0) if request.order_type.needs_price else 0.0,
                trigger_price=(
                    float(request.trigger_price or 0.0) if request.order_type.needs_trigger else 0.0
                ),
                status=status,
                status_message=reason,
                placed_at=now,
                updated_at=now,
            )
            order_id = str(row.order_id)
            changed = [_order(row)]
            if status != _REJECTED:
                self._live.setdefault(instrument, set()).add(order_id)
                if price is not None:
                    changed.extend(self._match(row, price, arriving=True))
        log.info(
            "paper order %s: %s %s %s x%d tag=%s -> %s",
            order_id,
            request.order_type.value,
            request.side.value,
            quote_key,
            request.quantity,
            request.tag,
            changed[-1].raw_status,
        )
        self._notify(changed)
        return order_id

    def modify_order(
        self,
        order_id: str,
        *,
        quantity: int | None = None,
        price: float | None = None,
        trigger_price: float | None = None,
        order_type: OrderType | None = None,
        urgent: bool = False,
    ) -> str:
        new_type = None if order_type is None else _parse_type(order_type)
        for name, value in (("quantity", quantity), ("price", price), ("trigger price", trigger_price)):
            if value is not None and _positive(value) is None:
                raise BrokerInputError(f"paper: {name} must be greater than 0, got {value!r}")
        if quantity is not None and int(quantity) != quantity:
            raise BrokerInputError(f"paper: quantity must be a whole number, got {quantity!r}")
        with self._lock:
            row = self._row(order_id, order_call=True)
            status = str(row.status)
            if status not in _LIVE:
                raise RejectedError(f"paper: order {order_id} cannot be modified as it is {status.lower()}")
            kind = new_type or OrderType(str(row.order_type))
            new_price = float(price if price is not None else row.price)
            new_trigger = float(trigger_price if trigger_price is not None else row.trigger_price)
            if kind.needs_price and new_price <= 0:
                raise BrokerInputError(f"paper: a {kind.value} order needs a price")
            if kind.needs_trigger and new_trigger <= 0:
                raise BrokerInputError(f"paper: a {kind.value} order needs a trigger price")
            was_stop = OrderType(str(row.order_type)).needs_trigger
            row.order_type = kind.value
            row.price = new_price if kind.needs_price else 0.0
            row.trigger_price = new_trigger if kind.needs_trigger else 0.0
            if quantity is not None:
                row.quantity = int(quantity)
            if not kind.needs_trigger:
                row.status = _OPEN
            elif not was_stop:
                row.status = _TRIGGER_PENDING
            now = self._clock()
            row.updated_at = now
            self._store.save(row, now)
            instrument = str(row.instrument)
            quote_key = str(row.quote_key)
        # The modified order may now cross: look at the market as a new order would.
        current = self._current_price(instrument, quote_key)
        with self._lock:
            row = self._row(order_id, order_call=True)
            changed = [_order(row)]
            if current is not None and str(row.status) in _LIVE:
                changed.extend(self._match(row, current, arriving=True))
        self._notify(changed)
        return order_id

    def cancel_order(self, order_id: str, *, urgent: bool = False) -> str:
        with self._lock:
            row = self._row(order_id, order_call=True)
            status = str(row.status)
            if status not in _LIVE:
                raise RejectedError(f"paper: order {order_id} cannot be cancelled as it is {status.lower()}")
            now = self._clock()
            row.status = _CANCELLED
            row.updated_at = now
            self._store.save(row, now)
            self._forget(row)
            changed = [_order(row)]
        self._notify(changed)
        return order_id

    def order(self, order_id: str) -> Order:
        with self._lock:
            return _order(self._row(order_id, order_call=False))

    def order_history(self, order_id: str) -> list[Order]:
        with self._lock:
            row = self._row(order_id, order_call=False)
        return [_order(row, state) for state in self._store.states(row)]

    def orders(self) -> list[Order]:
        """Every order of this paper account, oldest first."""
        return [_order(row) for row in self._store.orders()]

    def find_order_by_tag(self, tag: str) -> Order | None:
        row = self._store.latest_by_tag(tag)
        return None if row is None else _order(row)

    # ------------------------------------------------------------------------- portfolio and market

    def positions(self) -> list[Position]:
        """Net positions from every fill of this account, flat ones included (quantity 0)."""
        trades = self._store.trades()
        books: dict[tuple[str, str], _Book] = {}
        for trade in trades:
            key = (str(trade.instrument), str(trade.product))
            book = books.get(key)
            if book is None:
                book = books[key] = _Book(str(trade.symbol), str(trade.exchange), str(trade.quote_key))
            book.add(Side(str(trade.side)), int(trade.quantity), float(trade.price))
        result = []
        for (instrument, product), book in books.items():
            price = self._local_price(instrument)
            last = price.ltp if price is not None else None
            unrealised = (last - book.average) * book.quantity if last is not None else 0.0
            result.append(
                Position(
                    symbol=book.symbol,
                    exchange=book.exchange,
                    instrument=_instrument_id(instrument),
                    quote_key=book.quote_key,
                    quantity=book.quantity,
                    average_price=round(book.average, 6),
                    product=Product(product),
                    raw_product=product,
                    last_price=last,
                    pnl=round(book.realised + unrealised, 6),
                )
            )
        return result

    def holdings(self) -> list[Holding]:
        """Paper trading keeps no delivery holdings: CNC buys stay in the positions."""
        return []

    def ltp(self, keys: Sequence[str]) -> dict[str, float]:
        """Last prices by quote key: from the feed for instruments this account has traded, else the
        account's broker."""
        result: dict[str, float] = {}
        missing = []
        for key in keys:
            instrument = self._instrument_for_key(key)
            price = self._local_price(instrument) if instrument is not None else None
            if price is not None:
                result[key] = price.ltp
            else:
                missing.append(key)
        if missing and self._price_broker is not None:
            result.update(self._price_broker.ltp(missing))
        return result

    def instruments(self) -> list[Instrument]:
        """The instruments of the account whose feed supplies the prices (none without one)."""
        return self._price_broker.instruments() if self._price_broker is not None else []

    def profile(self) -> Profile:
        return Profile(
            user_id=f"PAPER-{self._account}",
            user_name=self._user_name,
            email=None,
            broker="PAPER",
            exchanges=(),
            products=tuple(p.value for p in Product),
            order_types=tuple(t.value for t in OrderType),
        )

    # ------------------------------------------------------------------------- plumbing

    def _row(self, order_id: str, *, order_call: bool) -> Any:
        row = self._store.order(order_id)
        if row is None:
            error = RejectedError if order_call else BrokerInputError
            raise error(f"paper: no order {order_id}")
        return row

    def _instrument_for_key(self, key: str) -> str | None:
        if "|" in key:
            return key
        return self._store.instrument_for_quote_key(key)

    def _match_instrument(self, instrument: str, price: _Price) -> list[Order]:
        """Match the instrument's waiting orders, oldest first. Called with the lock held."""
        ids = sorted(self._live.get(instrument, ()))
        changed: list[Order] = []
        for row in self._store.orders_by_id(ids):
            changed.extend(self._match(row, price, arriving=False))
        return changed

    def _match(self, row: Any, price: _Price, *, arriving: bool) -> list[Order]:
        """Trigger or fill one waiting order at ``price``. Called with the lock held.

        ``arriving``: the order meets the market now (placed or modified), so a crossing LIMIT takes
        the better price; a resting one fills at its limit.
        """
        side = Side(str(row.side))
        kind = OrderType(str(row.order_type))
        changed: list[Order] = []
        now = self._clock()
        if str(row.status) == _TRIGGER_PENDING:
            trigger = float(row.trigger_price)
            if not (price.ltp >= trigger if side is Side.BUY else price.ltp <= trigger):
                return changed
            row.status = _OPEN
            row.updated_at = now
            self._store.save(row, now)
            changed.append(_order(row))
            arriving = True
        if str(row.status) != _OPEN:
            return changed
        fill = price.to_fill(side)
        if kind in (OrderType.MARKET, OrderType.SL_M):
            changed.append(self._fill(row, fill, now))
        else:
            limit = float(row.price)
            if fill <= limit if side is Side.BUY else fill >= limit:
                changed.append(self._fill(row, fill if arriving else limit, now))
        return changed

    def _fill(self, row: Any, price: float, now: float) -> Order:
        quantity = int(row.quantity) - int(row.filled_quantity)
        with self._store.transaction():
            self._store.add_trade(row, quantity, price, now)
            filled = int(row.filled_quantity)
            row.average_price = (float(row.average_price) * filled + price * quantity) / (filled + quantity)
            row.filled_quantity = filled + quantity
            row.status = _COMPLETE
            row.updated_at = now
            self._store.save(row, now)
        self._forget(row)
        return _order(row)

    def _forget(self, row: Any) -> None:
        ids = self._live.get(str(row.instrument))
        if ids is not None:
            ids.discard(str(row.order_id))
            if not ids:
                del self._live[str(row.instrument)]

    def _notify(self, changed: Iterable[Order]) -> None:
        if self._listener is None:
            return
        for order in changed:
            try:
                self._listener(order)
            except Exception:
                log.exception("paper: an order listener failed")


# ----------------------------------------------------------------------------- helpers


def _parse_type(value: object) -> OrderType:
    try:
        return OrderType.parse(value)
    except ValueError as exc:
        raise BrokerInputError(f"paper: {exc}") from None


def _rejection(request: OrderRequest, price: _Price | None) -> str | None:
    """The reasons a broker rejects an order after accepting it that paper trading mirrors."""
    kind = request.order_type
    if not kind.needs_trigger:
        return None
    trigger = float(request.trigger_price or 0.0)
    buy = request.side is Side.BUY
    if kind is OrderType.SL:
        limit = float(request.price or 0.0)
        if (buy and limit < trigger) or (not buy and limit > trigger):
            side, relation = ("buy", "higher") if buy else ("sell", "lower")
            return f"Price for stoploss {side} orders should be {relation} than or equal to the trigger."
    if price is not None:
        if buy and trigger <= price.ltp:
            return "Trigger price for stoploss buy orders should be higher than the last traded price."
        if not buy and trigger >= price.ltp:
            return "Trigger price for stoploss sell orders should be lower than the last traded price."
    return None


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), IST)


def _order(row: Any, state: dict[str, Any] | None = None) -> Order:
    """A stored order (or one state of its history) as an ``Order``."""
    raw_status = str(state["status"] if state else row.status)
    status = normalize_order_status(raw_status)
    quantity = int(state["quantity"] if state else row.quantity)
    filled = int(state["filled_quantity"] if state else row.filled_quantity)
    return Order(
        order_id=str(row.order_id),
        status=status,
        raw_status=raw_status,
        side=Side(str(row.side)),
        order_type=OrderType(str(state["order_type"] if state else row.order_type)),
        product=Product(str(row.product)),
        raw_product=str(row.product),
        symbol=str(row.symbol),
        exchange=str(row.exchange),
        instrument=_instrument_id(str(row.instrument)),
        quantity=quantity,
        filled_quantity=filled,
        pending_quantity=0 if status.is_final else quantity - filled,
        average_price=float(state["average_price"] if state else row.average_price),
        price=float(state["price"] if state else row.price),
        trigger_price=float(state["trigger_price"] if state else row.trigger_price),
        tag=None if row.tag is None else str(row.tag),
        status_message=None if row.status_message is None else str(row.status_message),
        placed_at=_time(row.placed_at),
        updated_at=_time(state["ts"] if state else row.updated_at),
    )


@dataclass(slots=True)
class _Book:
    """The net position of one instrument and product, built fill by fill (average-cost method)."""

    symbol: str
    exchange: str
    quote_key: str
    quantity: int = 0
    average: float = 0.0
    realised: float = 0.0

    def add(self, side: Side, quantity: int, price: float) -> None:
        signed = quantity if side is Side.BUY else -quantity
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            total = abs(self.quantity) + quantity
            self.average = (self.average * abs(self.quantity) + price * quantity) / total
            self.quantity += signed
            return
        closing = min(quantity, abs(self.quantity))
        direction = 1 if self.quantity > 0 else -1
        self.realised += closing * (price - self.average) * direction
        self.quantity += signed
        if self.quantity == 0:
            self.average = 0.0
        elif closing < quantity:
            self.average = price  # the position flipped: what is left was opened at this price
