"""The broker-neutral face of a broker: the ``Broker`` protocol, its inputs and outputs, and capabilities.

Services talk to ``Broker`` only; ``kite.py`` and ``upstox.py`` translate. Everything here is plain
immutable data so that it can cross threads. Products are the app's MIS/CNC/NRML everywhere; order
statuses are normalised to ``OrderStatus`` with the broker's own spelling kept in ``raw_status``.
The error classes live in ``errors.py`` and are re-exported here; so are
``OrderType`` and ``Position``, domain types in models/domain.py (the window shows them too).
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar, runtime_checkable

from trailstop_gui.models.domain import (
    InstrumentId,
    OrderType,
    Position,
    Product,
    SafetyKind,
    Side,
    require_positive,
    require_positive_int,
)
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    AuthError,
    BrokerError,
    BrokerInputError,
    MalformedReplyError,
    RateLimitedError,
    RejectedError,
    TemporaryError,
)
from trailstop_gui.services.brokers.rate_limit import (
    KITE_ORDER_WINDOWS,
    UPSTOX_ORDER_WINDOWS,
    RateLimiter,
    RateWindow,
)

__all__ = [
    "IST",
    "KITE_CAPABILITIES",
    "UPSTOX_CAPABILITIES",
    "AmbiguousError",
    "AuthError",
    "Broker",
    "BrokerError",
    "BrokerInputError",
    "Capabilities",
    "Gtt",
    "GttBroker",
    "GttNotFound",
    "GttRequest",
    "GttStatus",
    "Holding",
    "Instrument",
    "MalformedReplyError",
    "Order",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "Position",
    "Profile",
    "RateLimitedError",
    "RejectedError",
    "SessionInfo",
    "TemporaryError",
    "Validity",
    "as_float",
    "as_gtt_broker",
    "as_int",
    "convert_all",
    "latest_with_tag",
    "list_reply",
    "normalize_order_status",
    "opt_float",
    "opt_str",
    "order_type_or_none",
    "parse_ist",
    "product_or_none",
    "required_int",
    "required_text",
    "rows",
]

log = logging.getLogger("trailstop.broker")

IST = timezone(timedelta(hours=5, minutes=30), "IST")
"""Both brokers report times in Indian Standard Time, without a zone."""


class Validity(enum.StrEnum):
    DAY = "DAY"
    IOC = "IOC"


class OrderStatus(enum.StrEnum):
    """An order's state, the same for every broker. Only COMPLETE, CANCELLED and REJECTED are final."""

    PENDING = "PENDING"  # on its way: received, validation pending, open pending, modify/cancel pending
    OPEN = "OPEN"  # resting at the exchange (possibly partly filled)
    TRIGGER_PENDING = "TRIGGER_PENDING"  # a stop order waiting for its trigger
    COMPLETE = "COMPLETE"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"  # a status this code has never seen: treat as live

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.COMPLETE, OrderStatus.CANCELLED, OrderStatus.REJECTED)


_STATUS_WORDS = {
    "COMPLETE": OrderStatus.COMPLETE,
    "COMPLETED": OrderStatus.COMPLETE,
    "FILLED": OrderStatus.COMPLETE,
    "CANCELLED": OrderStatus.CANCELLED,
    "CANCELED": OrderStatus.CANCELLED,
    "CANCELLED AMO": OrderStatus.CANCELLED,
    "CANCELLED AFTER MARKET ORDER": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
    "OPEN": OrderStatus.OPEN,
    "TRIGGER PENDING": OrderStatus.TRIGGER_PENDING,
    "MODIFIED": OrderStatus.PENDING,  # a step in Kite's history between MODIFY PENDING and OPEN
}
_PENDING_WORDS = ("PENDING", "RECEIVED", "VALIDATION")


def normalize_order_status(raw: str | None) -> OrderStatus:
    """Kite's "TRIGGER PENDING", Upstox's "trigger pending" -> TRIGGER_PENDING, and so on."""
    text = " ".join(str(raw or "").replace("_", " ").upper().split())
    if text in _STATUS_WORDS:
        return _STATUS_WORDS[text]
    if any(word in text for word in _PENDING_WORDS):
        return OrderStatus.PENDING
    return OrderStatus.UNKNOWN


def parse_ist(value: object) -> datetime | None:
    """A broker timestamp ("2021-05-31 09:18:57", ISO, or a naive datetime in IST) as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=IST)
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=IST)


# ----------------------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order to send. ``symbol``/``exchange`` name it for Kite, ``instrument`` (the key) for Upstox.

    ``urgent`` orders (exits) go ahead of waiting ordinary calls in the client-side rate limiter.
    """

    symbol: str
    exchange: str
    side: Side
    quantity: int
    product: Product
    order_type: OrderType = OrderType.MARKET
    price: float | None = None
    trigger_price: float | None = None
    instrument: InstrumentId | None = None
    tag: str | None = None
    validity: Validity = Validity.DAY
    urgent: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", Side.parse(self.side))
        object.__setattr__(self, "product", Product.parse(self.product))
        object.__setattr__(self, "order_type", OrderType.parse(self.order_type))
        object.__setattr__(self, "validity", Validity(str(self.validity).upper()))
        object.__setattr__(self, "quantity", require_positive_int(self.quantity, "quantity"))
        if self.order_type.needs_price:
            object.__setattr__(self, "price", require_positive(self.price, "price"))
        if self.order_type.needs_trigger:
            object.__setattr__(self, "trigger_price", require_positive(self.trigger_price, "trigger price"))
        if not self.symbol and self.instrument is None:
            raise ValueError("order: give a symbol or an instrument")


@dataclass(frozen=True, slots=True)
class Order:
    """One order as the broker reports it (the latest state, or one state of its history)."""

    order_id: str
    status: OrderStatus
    raw_status: str
    side: Side
    order_type: OrderType | None
    product: Product | None
    raw_product: str
    symbol: str
    exchange: str
    instrument: InstrumentId | None
    quantity: int
    filled_quantity: int
    pending_quantity: int
    average_price: float
    price: float
    trigger_price: float
    tag: str | None
    status_message: str | None
    placed_at: datetime | None
    updated_at: datetime | None
    exchange_order_id: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status.is_final


@dataclass(frozen=True, slots=True)
class Holding:
    """Delivery holdings (CNC; Upstox product D), one row per listing; one ISIN may be listed twice.

    ``quantity`` is the broker's own field: on Kite it already includes ``t1_quantity`` ("Net quantity
    (T+1 + realised)", Kite Connect docs, Portfolio > Holdings). ``used_quantity`` is what was sold out of it
    today (Kite ``used_quantity``, Upstox ``cnc_used_quantity``: "blocked towards open or completed order").
    ``authorised_quantity`` is what the depository authorised for sale today (Kite, CDSL TPIN).
    What may be sold is worked out in ``services/holdings.py``, per broker.
    """

    symbol: str
    exchange: str
    instrument: InstrumentId
    quote_key: str
    isin: str | None
    quantity: int
    t1_quantity: int
    average_price: float
    last_price: float | None = None
    used_quantity: int = 0
    authorised_quantity: int = 0


@dataclass(frozen=True, slots=True)
class Profile:
    """The user's profile. ``demat_consent`` is Kite's ``meta.demat_consent`` ("empty", "consent" or
    "physical"; None when the broker does not say, as Upstox does not): see ``services/holdings.py``.
    """

    user_id: str
    user_name: str
    email: str | None
    broker: str
    exchanges: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    order_types: tuple[str, ...] = ()
    demat_consent: str | None = None


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable (or index) instrument. ``tick_size`` is in rupees; 0 when the broker gives none."""

    instrument: InstrumentId
    symbol: str
    exchange: str
    segment: str
    instrument_type: str
    name: str
    tick_size: float
    lot_size: int
    quote_key: str
    expiry: date | None = None
    strike: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What a login gives back. The token is kept out of repr so that it cannot leak into a log line."""

    access_token: str = field(repr=False)
    user_id: str
    user_name: str
    broker: str
    email: str | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------- capabilities


ORDER_WINDOW_MARGIN = 0.1
"""Seconds added to each of a broker's order windows in the default limiter.

Our limiter counts a call when it is granted, the broker when the request arrives, a little later and
not always by the same amount (the first call of a burst may open a connection). Without a margin,
call 11 of a burst of Kite exits can arrive within the second of call 1 and get HTTP 429.
"""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a broker can do and its limits, as data: services read this instead of asking "which broker?"."""

    broker: str
    supports_gtt: bool
    max_tag_length: int
    tag_pattern: str  # a regular expression a whole tag must match
    order_rate_limits: tuple[RateWindow, ...]
    needs_market_protection: bool  # MARKET/SL-M orders are refused without it
    supports_market_protection: bool
    max_market_protection: float  # custom percentages go up to this; -1 asks for the broker's automatic value
    depth_modes: tuple[str, ...]  # feed modes that carry best bid/ask, preferred first
    ltp_mode: str  # the lightest feed mode that still carries the LTP
    product_names: tuple[tuple[Product, str], ...]  # the app's product -> the broker's spelling
    order_types: tuple[OrderType, ...] = tuple(OrderType)
    max_modifications_per_order: int | None = None
    # Which broker object holds a protection's safety stop, per product (none listed: not offered).
    safety_orders: tuple[tuple[Product, SafetyKind], ...] = ()
    max_gtt_modifications: int | None = None  # None: the broker documents no cap
    gtt_limit_orders: bool = False  # a fired GTT places a LIMIT order at the price we give (Kite)

    def safety_kind(self, product: Product) -> SafetyKind:
        """The kind of broker-held safety stop this broker offers for ``product`` (NONE: not offered)."""
        for app_product, kind in self.safety_orders:
            if app_product is product:
                return kind
        return SafetyKind.NONE

    def modification_cap(self, kind: SafetyKind) -> int | None:
        """How many times one safety order (or GTT) of ``kind`` may be modified; None when unlimited."""
        if kind.is_order:
            return self.max_modifications_per_order
        if kind is SafetyKind.GTT:
            return self.max_gtt_modifications
        return None

    def is_valid_tag(self, tag: str) -> bool:
        return 0 < len(tag) <= self.max_tag_length and re.fullmatch(self.tag_pattern, tag) is not None

    def broker_product(self, product: Product) -> str:
        for app_product, name in self.product_names:
            if app_product is product:
                return name
        raise ValueError(f"{self.broker}: product {product} is not supported")

    def make_limiter(self, *, reserved: int = 1, margin: float = 0.0) -> RateLimiter:
        """A limiter for this broker's order calls, keeping ``reserved`` slots per window for exits.

        Each window is ``margin`` seconds longer than the broker's: the adapters' default limiters use
        :data:`ORDER_WINDOW_MARGIN`.
        """
        windows = [RateWindow(w.limit, w.period + margin) for w in self.order_rate_limits]
        return RateLimiter(windows, reserved=reserved)


KITE_CAPABILITIES = Capabilities(
    broker="kite",
    supports_gtt=True,
    max_tag_length=20,
    tag_pattern=r"[A-Za-z0-9]+",
    order_rate_limits=KITE_ORDER_WINDOWS,
    needs_market_protection=True,
    supports_market_protection=True,
    max_market_protection=100.0,
    depth_modes=("full",),
    ltp_mode="ltp",
    product_names=((Product.MIS, "MIS"), (Product.CNC, "CNC"), (Product.NRML, "NRML")),
    max_modifications_per_order=25,
    # MIS: a plain SL-M order; it lives only for the day, as an MIS position does, and TrailStop's own
    # exit can become it (modified to MARKET), so there is only ever one exit order. CNC/NRML: an SL-M
    # would lapse at the end of the day while the position stays, so the stop is a GTT (good for a year).
    gtt_limit_orders=True,
    safety_orders=(
        (Product.MIS, SafetyKind.SL_M),
        (Product.CNC, SafetyKind.GTT),
        (Product.NRML, SafetyKind.GTT),
    ),
)

UPSTOX_CAPABILITIES = Capabilities(
    broker="upstox",
    supports_gtt=True,
    # Upstox documents no tag limit; the project's tags are built for Kite's 20 anyway.
    max_tag_length=20,
    tag_pattern=r"[A-Za-z0-9]+",
    order_rate_limits=UPSTOX_ORDER_WINDOWS,
    needs_market_protection=False,
    supports_market_protection=True,
    max_market_protection=25.0,
    depth_modes=("full", "full_d30"),
    ltp_mode="ltpc",
    # Upstox has one "delivery" product for equity delivery and F&O carry-forward alike.
    product_names=((Product.MIS, "I"), (Product.CNC, "D"), (Product.NRML, "D")),
    # A GTT for every product (see UpstoxBroker.place_gtt for why a single ENTRY rule, not STOPLOSS).
    safety_orders=(
        (Product.MIS, SafetyKind.GTT),
        (Product.CNC, SafetyKind.GTT),
        (Product.NRML, SafetyKind.GTT),
    ),
)


# ----------------------------------------------------------------------------- the protocol


@runtime_checkable
class Broker(Protocol):
    """The calls services make on a broker account. Every failure raises a ``BrokerError`` subclass."""

    @property
    def capabilities(self) -> Capabilities: ...

    def place_order(self, request: OrderRequest) -> str:
        """Send an order; returns the broker's order id."""
        ...

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
        """Change an open order; only the given fields change. Returns the order id."""
        ...

    def cancel_order(self, order_id: str, *, urgent: bool = False) -> str: ...

    def order(self, order_id: str) -> Order:
        """The latest state of one order."""
        ...

    def order_history(self, order_id: str) -> list[Order]:
        """Every state one order went through, oldest first."""
        ...

    def orders(self) -> list[Order]:
        """Today's order book, the latest state of each order."""
        ...

    def find_order_by_tag(self, tag: str) -> Order | None:
        """The most recent order carrying ``tag``, or None."""
        ...

    def positions(self) -> list[Position]:
        """Net positions, including flat ones closed today (quantity 0)."""
        ...

    def holdings(self) -> list[Holding]: ...

    def ltp(self, keys: Sequence[str]) -> dict[str, float]:
        """Last prices by quote key (``Position.quote_key``, ``Instrument.quote_key``)."""
        ...

    def instruments(self) -> list[Instrument]: ...

    def profile(self) -> Profile: ...


# ----------------------------------------------------------------------------- GTT (optional capability)


class GttStatus(enum.StrEnum):
    """A GTT's state, the same for every broker."""

    ACTIVE = "ACTIVE"  # waiting for its trigger
    TRIGGERED = "TRIGGERED"  # fired: its order was placed (``Gtt.order_id``)
    CANCELLED = "CANCELLED"  # deleted, cancelled or disabled: it will never fire
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"  # fired, but the order it placed failed
    UNKNOWN = "UNKNOWN"  # a state this code has never seen: treat as live

    @property
    def is_live(self) -> bool:
        return self in (GttStatus.ACTIVE, GttStatus.UNKNOWN)


class GttNotFound(BrokerInputError):
    """The broker has no such GTT (deleted, never placed, or, Upstox, completed and no longer listed)."""


@dataclass(frozen=True, slots=True)
class GttRequest:
    """A single-trigger GTT placing one order on ``side`` once the price crosses ``trigger_price``.

    ``last_price`` tells the broker which way the trigger is crossed (Kite requires it): a SELL's trigger
    must be below it, a BUY's above. ``limit_price`` is the LIMIT price of the order Kite places; Upstox
    prices a GTT's order itself (``market_protection`` percent through the trigger).
    """

    symbol: str
    exchange: str
    side: Side
    quantity: int
    product: Product
    trigger_price: float
    last_price: float
    instrument: InstrumentId | None = None
    limit_price: float | None = None
    market_protection: float | None = None
    urgent: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", Side.parse(self.side))
        object.__setattr__(self, "product", Product.parse(self.product))
        object.__setattr__(self, "quantity", require_positive_int(self.quantity, "quantity"))
        object.__setattr__(self, "trigger_price", require_positive(self.trigger_price, "trigger price"))
        object.__setattr__(self, "last_price", require_positive(self.last_price, "last price"))
        if self.limit_price is not None:
            object.__setattr__(self, "limit_price", require_positive(self.limit_price, "limit price"))
        selling = self.side is Side.SELL
        if (self.trigger_price >= self.last_price) if selling else (self.trigger_price <= self.last_price):
            where = "below" if selling else "above"
            raise ValueError(
                f"trigger price: a {self.side.value} trigger must be {where} the last price "
                f"({self.trigger_price:g} vs {self.last_price:g})"
            )


@dataclass(frozen=True, slots=True)
class Gtt:
    """One GTT as the broker reports it (its first, for our GTTs only, leg)."""

    gtt_id: str
    status: GttStatus
    raw_status: str
    side: Side | None
    quantity: int
    trigger_price: float
    limit_price: float | None
    instrument: InstrumentId | None
    symbol: str
    exchange: str
    order_id: str | None = None  # the order it placed when it fired
    message: str | None = None

    @property
    def is_live(self) -> bool:
        return self.status.is_live


@runtime_checkable
class GttBroker(Protocol):
    """The GTT calls of a broker that has them (Kite, Upstox); the paper broker has none.

    Write calls take ``urgent`` through the same client-side limiter as orders: a safety stop's moves
    share the order budget with the exits, and exits go first.
    """

    def place_gtt(self, request: GttRequest) -> str:
        """Place a GTT; returns its id."""
        ...

    def modify_gtt(self, gtt_id: str, request: GttRequest) -> str:
        """Replace an active GTT's trigger and order; returns its id."""
        ...

    def delete_gtt(self, gtt_id: str, *, urgent: bool = False) -> None:
        """Delete (cancel) a GTT; raises RejectedError when the broker refuses (for example: it fired)."""
        ...

    def gtt(self, gtt_id: str) -> Gtt:
        """One GTT; raises GttNotFound when the broker has no such GTT."""
        ...

    def gtts(self) -> list[Gtt]:
        """The account's GTTs that the broker still lists."""
        ...


def as_gtt_broker(broker: object) -> GttBroker | None:
    """``broker`` as a GttBroker when it has the GTT calls, else None."""
    return broker if isinstance(broker, GttBroker) else None


@runtime_checkable
class SlicingBroker(Protocol):
    """A broker that splits an order above the exchange's freeze quantity itself (Kite, Upstox)."""

    def place_sliced_order(self, request: OrderRequest) -> list[str]:
        """Send ``request`` for the broker to slice; returns every child order's id (at least one).

        Raises like ``place_order``; a reply that names no child at all is an ``AmbiguousError``.
        """
        ...


def as_slicing_broker(broker: object) -> SlicingBroker | None:
    """``broker`` as a SlicingBroker when it can slice orders, else None."""
    return broker if isinstance(broker, SlicingBroker) else None


@runtime_checkable
class PreparingBroker(Protocol):
    """A broker that can work an order out down to its request bytes before it is sent (Kite)."""

    def prepare_order(self, request: OrderRequest) -> None:
        """Prepare ``request`` now for this thread's next ``place_order`` of an equal request: that call
        then only sends it. Never raises (what fails here fails again, as usual, in ``place_order``)."""
        ...


def as_preparing_broker(broker: object) -> PreparingBroker | None:
    """``broker`` as a PreparingBroker when it can prepare orders ahead, else None."""
    return broker if isinstance(broker, PreparingBroker) else None


def profile_from_reply(data: object, default_broker: str, what: str) -> Profile:
    """A user-profile reply (Kite and Upstox send the same field names) as a Profile."""
    if not isinstance(data, Mapping):
        raise BrokerError(f"{what}: unexpected reply")
    return Profile(
        user_id=str(data.get("user_id") or ""),
        user_name=str(data.get("user_name") or ""),
        email=opt_str(data.get("email")),
        broker=str(data.get("broker") or default_broker),
        exchanges=tuple(str(x) for x in data.get("exchanges") or ()),
        products=tuple(str(x) for x in data.get("products") or ()),
        order_types=tuple(str(x) for x in data.get("order_types") or ()),
        demat_consent=_demat_consent(data),
    )


def _demat_consent(data: Mapping[str, Any]) -> str | None:
    # Kite: "meta": {"demat_consent": "physical"} (kite-mocks profile.json; values "empty", "consent" or
    # "physical"); an empty string means no consent at all. Upstox: "poa": true/false (SDK ProfileData).
    meta = data.get("meta")
    if not isinstance(meta, Mapping) or "demat_consent" not in meta:
        poa = data.get("poa")
        return ("poa" if poa else "empty") if isinstance(poa, bool) else None
    return str(meta.get("demat_consent") or "").strip().lower() or "empty"


def latest_with_tag(orders: Iterable[Order], tag: str) -> Order | None:
    """The most recently placed order with this tag (the later one in the book on a tie or no time)."""
    best: Order | None = None
    for order in orders:
        if order.tag == tag and (best is None or not _placed_before(order, best)):
            best = order
    return best


def _placed_before(a: Order, b: Order) -> bool:
    return a.placed_at is not None and b.placed_at is not None and a.placed_at < b.placed_at


# ----------------------------------------------------------------------------- reading broker replies
# Replies are JSON-ish dicts whose numbers may come as numbers, strings or null: read them leniently,
# so that one odd field cannot make a whole order book unreadable.


T = TypeVar("T")


def convert_all(
    convert: Callable[[Mapping[str, Any]], T], items: Iterable[Mapping[str, Any]], what: str
) -> list[T]:
    """Every row converted, or a MalformedReplyError (temporary: ask again) for the whole reply.

    Never drop an unreadable row instead: a missing exit order in the book would look like "not placed".
    """
    try:
        return [convert(item) for item in items]
    except (ValueError, TypeError, KeyError) as exc:
        raise malformed_reply(what, str(exc)) from exc


def malformed_reply(what: str, why: str) -> MalformedReplyError:
    """The error for a reply that cannot be read, logged once here so that every such reply leaves a line."""
    error = MalformedReplyError(f"{what}: unreadable reply ({why}); asking again later")
    log.warning("%s", error)
    return error


def list_reply(value: object, what: str) -> list[Mapping[str, Any]]:
    """The rows of a reply that must be a list of objects (positions, holdings, orders, GTTs).

    ``null`` or a row that is not an object is a MalformedReplyError, never "nothing there": an empty
    positions list reads as "flat", which would close live protections as "closed outside".
    """
    if not isinstance(value, list):
        raise malformed_reply(what, f"expected a list, got {_json_kind(value)}")
    for row in value:
        if not isinstance(row, Mapping):
            raise malformed_reply(what, f"a row is {_json_kind(row)}, not an object")
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def rows(value: object) -> list[Mapping[str, Any]]:
    """The dict rows of an optional list inside a row (anything else gives [])."""
    if not isinstance(value, list):
        return []
    return [row for row in value if isinstance(row, Mapping)]


def required_int(row: Mapping[str, Any], name: str) -> int:
    """A whole number the row must carry (a quantity); numbers sent as text ("10") are read.

    Missing, null, text that is no number, or a fraction raise ValueError (convert_all makes it a
    MalformedReplyError): read as 0, a missing quantity would mean "flat".
    """
    value = row.get(name)
    if value is None or isinstance(value, bool) or value == "":
        raise ValueError(f"{name} is missing")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} is not a number ({str(value)[:20]!r})") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{name} is not a whole number ({str(value)[:20]!r})")
    return int(number)


def required_text(row: Mapping[str, Any], name: str) -> str:
    """A text field the row must carry (an order's status)."""
    value = row.get(name)
    if value is None or not str(value).strip():
        raise ValueError(f"{name} is missing")
    return str(value)


def as_int(value: object) -> int:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError, OverflowError):
        return 0


def as_float(value: object) -> float:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return 0.0


def opt_float(value: object) -> float | None:
    return None if value is None or value == "" else as_float(value)


def opt_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def product_or_none(raw: object) -> Product | None:
    """The app's product for MIS/CNC/NRML; None for CO, BO, MTF and other products the app does not trade."""
    try:
        return Product.parse(raw)
    except ValueError:
        return None


def order_type_or_none(raw: object) -> OrderType | None:
    try:
        return OrderType.parse(raw)
    except ValueError:
        return None
