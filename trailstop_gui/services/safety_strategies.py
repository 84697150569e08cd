"""One strategy per broker object that holds a safety stop: a stop order (SL-M or SL) or a GTT.

Each says how to place, move and take away its object, how to read it back, what it looks like once it
fired, and how to find one that was placed but never recorded (a crash, a lost reply). They talk to the
broker only; the manager (safety_stop.py) decides when, and records what happened.

- ``SLOrderStrategy``: a regular stop order tagged with the exit tag plus "S". It fires into itself (the
  order turns OPEN, then COMPLETE); an unrecorded one is found by its tag.
- ``GTTStrategy``: a single-leg GTT. It fires into a new, untagged order that the GTT names; Kite forgets a
  GTT once it is deleted, so the order a just-deleted GTT placed is looked for in the order book. An
  unrecorded one is found by scanning the GTTs for ours (side, quantity, instrument, our LIMIT pricing).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from trailstop_gui.models.domain import Protection, SafetyKind, Side, round_down, round_up
from trailstop_gui.services.brokers.base import (
    Broker,
    GttBroker,
    GttNotFound,
    GttRequest,
    GttStatus,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    as_gtt_broker,
)
from trailstop_gui.services.brokers.errors import BrokerInputError, TemporaryError


class NotInBookYet(TemporaryError):
    """An order id the broker gave us that its (lagging) order book does not list yet: look again later
    (a temporary error: the exit path retries it and stays TRIGGERED, as for any other)."""


class FiredNotInBookYet(NotInBookYet):
    """A GTT read as triggered, into an order the (lagging) book does not list yet: it fired, whatever
    its order says later."""

    def __init__(self, message: str, order_id: str) -> None:
        super().__init__(message)
        self.order_id = order_id


def gtt_limit_price(exit_side: Side, trigger: float, percent: float, tick_size: float) -> float:
    """A GTT's LIMIT price, ``percent`` through its trigger (lower for a sell), on the tick grid."""
    if exit_side is Side.SELL:
        return max(round_down(trigger * (1 - percent / 100.0), tick_size), round_up(tick_size, tick_size))
    return round_up(trigger * (1 + percent / 100.0), tick_size)


@dataclass(frozen=True)
class Reading:
    """What the broker says of a recorded safety stop.

    ``live``: still waiting for its trigger, at ``level`` for ``quantity``. ``fired``: the order it fired
    into (working, filled, or failed: the caller looks at its status). Neither: it is gone unfired
    (``status`` says how). ``order`` is the stop order itself (stop orders only); ``rejected`` is the
    exchange's refusal of a stop order it had accepted.
    """

    live: bool
    status: str
    fired: Order | None = None
    order: Order | None = None
    level: float | None = None
    quantity: int | None = None
    rejected: str | None = None


@dataclass(frozen=True)
class Found:
    """A broker stop placed for the protection but never recorded, found at the broker."""

    order_id: str
    level: float | None
    price: float | None
    quantity: int
    modifications: int
    message: str
    fired: Order | None  # the order it fired into (its own order, for a stop order), if it fired


@dataclass(frozen=True)
class Search:
    """What a look for an unrecorded stop is told. ``owned``: stop ids other protections hold or held;
    ``read_order`` reads an order a fired stop placed; ``quantities``: the sizes ours could have;
    ``others_exits``: orders that are other protections' exits, never what ours fired into."""

    owned: Collection[str]
    read_order: Callable[[str], Order]
    quantities: Collection[int | None]
    others_exits: Collection[str] = ()


class SafetyStrategy(abc.ABC):
    """How one kind of broker object holds a safety stop. Stateless apart from the broker it talks to."""

    kind: SafetyKind

    def __init__(self, broker: Broker, limit_percent: float, market_protection: float | None) -> None:
        self.broker = broker
        self.limit_percent = limit_percent
        self.market_protection = market_protection

    @property
    def needs_last_price(self) -> bool:
        """A placement or move needs the last price (a GTT request carries it)."""
        return False

    def limit_price(self, p: Protection, level: float) -> float:
        """A LIMIT price ``limit_percent`` through the trigger: inside the exchange's band in all but a
        circuit-breaking move, so that it fills as a market order would."""
        return gtt_limit_price(p.side.exit_side, level, self.limit_percent, p.tick_size)

    def own_order(self, order_id: str) -> Order:
        """An order the broker gave us the id of: a lagging book's "no such order" raises NotInBookYet
        (look again later) instead of failing."""
        try:
            return self.broker.order(order_id)
        except GttNotFound:
            raise
        except BrokerInputError as exc:
            raise NotInBookYet(f"order {order_id} not in the order book yet ({exc})") from exc

    @abc.abstractmethod
    def place(
        self, p: Protection, level: float, quantity: int, last: float | None
    ) -> tuple[str, float | None]:
        """Place it; returns its id and the LIMIT price it carries (None: none, or not recorded)."""

    @abc.abstractmethod
    def modify(
        self, p: Protection, order_id: str, level: float, quantity: int, last: float | None
    ) -> float | None:
        """Move it to ``level`` (and ``quantity``); returns the LIMIT price it now carries (None: none)."""

    @abc.abstractmethod
    def cancel(self, order_id: str, *, urgent: bool = False) -> None:
        """Take it away (cancel the order, delete the GTT)."""

    @abc.abstractmethod
    def read(self, p: Protection, order_id: str, others: Callable[[], Collection[str]]) -> Reading:
        """Read the recorded stop back. ``others``: the orders that are other protections' exits (asked
        for only when a GTT is no longer listed and its order is looked for in the book)."""

    @abc.abstractmethod
    def find_unrecorded(self, p: Protection, search: Search) -> Found | None:
        """One of ours at the broker that nobody recorded, told apart from others' by ``search``."""


class SLOrderStrategy(SafetyStrategy):
    """An SL-M, or an SL where the exchange offers no SL-M (its LIMIT ``limit_percent`` through)."""

    def __init__(
        self, broker: Broker, kind: SafetyKind, limit_percent: float, market_protection: float | None
    ) -> None:
        super().__init__(broker, limit_percent, market_protection)
        assert kind.is_order
        self.kind = kind

    def request(self, p: Protection, level: float, quantity: int) -> OrderRequest:
        limited = self.kind is SafetyKind.SL
        return OrderRequest(
            symbol=p.symbol,
            exchange=p.exchange,
            instrument=p.engine_instrument,
            side=p.side.exit_side,
            quantity=quantity,
            product=p.product,
            order_type=OrderType.SL if limited else OrderType.SL_M,
            trigger_price=level,
            price=self.limit_price(p, level) if limited else None,
            tag=p.safety_tag,
        )

    def place(
        self, p: Protection, level: float, quantity: int, last: float | None
    ) -> tuple[str, float | None]:
        request = self.request(p, level, quantity)
        return self.broker.place_order(request), request.price

    def modify(
        self, p: Protection, order_id: str, level: float, quantity: int, last: float | None
    ) -> float | None:
        price = self.limit_price(p, level) if self.kind is SafetyKind.SL else None
        self.broker.modify_order(
            order_id,
            trigger_price=level,
            price=price,
            quantity=quantity if quantity != p.safety_quantity else None,
        )
        return price

    def cancel(self, order_id: str, *, urgent: bool = False) -> None:
        self.broker.cancel_order(order_id, urgent=urgent)

    def read(self, p: Protection, order_id: str, others: Callable[[], Collection[str]]) -> Reading:
        order = self.own_order(order_id)
        status = f"the SL-M is {order.raw_status.lower()}"
        if order.status in (OrderStatus.TRIGGER_PENDING, OrderStatus.PENDING, OrderStatus.UNKNOWN):
            return Reading(
                True, status, order=order, level=order.trigger_price or None, quantity=order.quantity
            )
        if order.status in (OrderStatus.OPEN, OrderStatus.COMPLETE):
            return Reading(False, status, fired=order, order=order)  # it triggered: it is its own exit
        rejected = order.status_message or order.raw_status if order.status is OrderStatus.REJECTED else None
        return Reading(False, status, order=order, rejected=rejected)

    def find_unrecorded(self, p: Protection, search: Search) -> Found | None:
        found = self.broker.find_order_by_tag(p.safety_tag)
        if found is None or found.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            return None
        fired = found.status in (OrderStatus.OPEN, OrderStatus.COMPLETE)
        history = [] if fired else self.broker.order_history(found.order_id)
        return Found(
            order_id=found.order_id,
            level=found.trigger_price or None,
            price=found.price if self.kind is SafetyKind.SL and found.price else None,
            quantity=found.quantity,
            modifications=sum(1 for o in history if o.raw_status.upper() == "MODIFIED"),
            message=f"{self.kind.value} {found.order_id} found by its tag" + (" (it fired)" if fired else ""),
            fired=found if fired else None,
        )


class GTTStrategy(SafetyStrategy):
    """A single-leg GTT on the exit side (Kite: LIMIT ``limit_percent`` through; Upstox: an ENTRY rule)."""

    kind = SafetyKind.GTT

    def __init__(
        self, broker: Broker, gtt: GttBroker, limit_percent: float, market_protection: float | None
    ) -> None:
        super().__init__(broker, limit_percent, market_protection)
        self.gtt = gtt

    @property
    def needs_last_price(self) -> bool:
        return True

    @property
    def _priced(self) -> bool:
        return self.broker.capabilities.gtt_limit_orders

    def request(
        self, p: Protection, level: float, quantity: int, last: float, urgent: bool = False
    ) -> GttRequest:
        return GttRequest(
            symbol=p.symbol,
            exchange=p.exchange,
            instrument=p.engine_instrument,
            side=p.side.exit_side,
            quantity=quantity,
            product=p.product,
            trigger_price=level,
            last_price=last,
            limit_price=self.limit_price(p, level),
            market_protection=self.market_protection,
            urgent=urgent,
        )

    def place(
        self, p: Protection, level: float, quantity: int, last: float | None
    ) -> tuple[str, float | None]:
        assert last is not None
        request = self.request(p, level, quantity, last)
        return self.gtt.place_gtt(request), request.limit_price if self._priced else None

    def modify(
        self, p: Protection, order_id: str, level: float, quantity: int, last: float | None
    ) -> float | None:
        assert last is not None
        self.gtt.modify_gtt(order_id, self.request(p, level, quantity, last))
        return self.limit_price(p, level) if self._priced else None

    def cancel(self, order_id: str, *, urgent: bool = False) -> None:
        self.gtt.delete_gtt(order_id, urgent=urgent)

    def read(self, p: Protection, order_id: str, others: Callable[[], Collection[str]]) -> Reading:
        try:
            g = self.gtt.gtt(order_id)
        except GttNotFound:
            fired = self.fired_in_book(p, others())
            return Reading(False, "the GTT is gone", fired=fired)
        status = f"the GTT is {g.raw_status}"
        if g.is_live:
            return Reading(True, status, level=g.trigger_price, quantity=g.quantity)
        if g.status is GttStatus.TRIGGERED and g.order_id:
            try:
                return Reading(False, status, fired=self.own_order(g.order_id))
            except NotInBookYet as exc:
                raise FiredNotInBookYet(str(exc), g.order_id) from exc
        return Reading(False, status)

    def fired_in_book(self, p: Protection, others: Collection[str]) -> Order | None:
        """The order a just-deleted (or no longer listed) GTT placed, if it fired in the meantime.

        A GTT's order carries no tag of ours; it is the untagged LIMIT order on our exit side, of our
        instrument and quantity, at the GTT's LIMIT price where we set one (Kite). One that is already
        another protection's exit (``others``) is not ours: two protections on one position hold twin
        GTTs (same level, price and quantity), and the chaos run saw the second one claim the first one's
        fired order as its own exit, which would leave its share of the position unsold.
        """
        for order in reversed(self.broker.orders()):
            if order.tag or order.side is not p.side.exit_side or order.order_type is not OrderType.LIMIT:
                continue
            if order.order_id in others:
                continue
            if order.quantity != p.safety_quantity or order.status in (
                OrderStatus.CANCELLED,
                OrderStatus.REJECTED,
            ):
                continue
            same = str(order.instrument) == p.instrument or (
                order.symbol == p.symbol and order.exchange == p.exchange
            )
            if not same:
                continue
            if p.safety_price is not None and abs(order.price - p.safety_price) > p.tick_size / 2:
                continue
            if placed_before(order, p):
                continue
            return order
        return None

    def find_unrecorded(self, p: Protection, search: Search) -> Found | None:
        for g in self.gtt.gtts():
            fired = g.status is GttStatus.TRIGGERED and bool(g.order_id)
            if not (g.is_live or fired) or g.gtt_id in search.owned:
                continue
            if g.side is not p.side.exit_side or g.quantity not in search.quantities:
                continue
            if str(g.instrument) != p.instrument and not (g.symbol == p.symbol and g.exchange == p.exchange):
                continue
            priced = g.limit_price is not None and g.trigger_price > 0
            if (
                priced
                and abs(self.limit_price(p, g.trigger_price) - (g.limit_price or 0.0)) > p.tick_size / 2
            ):
                continue  # not priced as we price ours: the trader's own GTT
            order: Order | None = None
            if fired:
                # It fired while nobody knew it was ours. The order book may not list its order yet (it
                # lags fills by seconds): read_order waits or raises a temporary error, never "not ours".
                assert g.order_id is not None
                if g.order_id in search.others_exits:
                    continue  # it fired into another protection's exit: that protection's GTT
                order = search.read_order(g.order_id)
                if placed_before(order, p):
                    continue  # an earlier protection's stop, fired before this one existed
            return Found(
                order_id=g.gtt_id,
                level=g.trigger_price,
                price=g.limit_price,
                quantity=g.quantity,
                modifications=0,
                message=f"GTT {g.gtt_id} found at the broker" + (" (it fired)" if fired else ""),
                fired=order,
            )
        return None


def strategy_for(
    kind: SafetyKind, broker: Broker, limit_percent: float, market_protection: float | None
) -> SafetyStrategy | None:
    """The strategy for ``kind`` through ``broker`` (None: no such object, or none reachable here)."""
    if kind.is_order:
        return SLOrderStrategy(broker, kind, limit_percent, market_protection)
    if kind is SafetyKind.GTT:
        gtt = as_gtt_broker(broker)
        return GTTStrategy(broker, gtt, limit_percent, market_protection) if gtt is not None else None
    return None


def _local(moment: datetime) -> datetime:
    """As naive local time, as the store keeps its timestamps (a broker's are aware, in IST)."""
    return moment.astimezone().replace(tzinfo=None) if moment.tzinfo is not None else moment


def placed_before(order: Order, p: Protection) -> bool:
    """The order reached the broker before the protection existed: it is not the protection's.

    Brokers give whole seconds, the store microseconds: an order of the same second is not "before".
    """
    if order.placed_at is None:
        return False
    return _local(order.placed_at) + timedelta(seconds=1) <= _local(p.created_at)


__all__ = [
    "FiredNotInBookYet",
    "Found",
    "GTTStrategy",
    "NotInBookYet",
    "Reading",
    "SLOrderStrategy",
    "SafetyStrategy",
    "Search",
    "gtt_limit_price",
    "placed_before",
    "strategy_for",
]
