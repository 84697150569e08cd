"""Domain vocabulary: sides, products, order types, ticks, positions, trailing rules and protections.

Pure Python: no Qt, no broker SDK, no I/O. Everything here is immutable so it can cross threads freely.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

InstrumentId = int | str
"""Kite uses the integer instrument_token, Upstox the instrument_key string."""


class Side(enum.StrEnum):
    """The entry side: BUY is a long position (exits with SELL), SELL is a short one (exits with BUY)."""

    BUY = "BUY"
    SELL = "SELL"

    @classmethod
    def parse(cls, value: object, field_name: str = "side") -> Side:
        return _parse_enum(cls, value, field_name)

    @property
    def is_long(self) -> bool:
        return self is Side.BUY

    @property
    def exit_side(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class Product(enum.StrEnum):
    """MIS is intraday, CNC delivery, NRML F&O carry-forward."""

    MIS = "MIS"
    CNC = "CNC"
    NRML = "NRML"

    @classmethod
    def parse(cls, value: object, field_name: str = "product") -> Product:
        return _parse_enum(cls, value, field_name)

    @property
    def trails_on_quote(self) -> bool:
        """Intraday positions trail on the price they can actually be closed at (best bid / best ask)."""
        return self is Product.MIS


class OrderType(enum.StrEnum):
    """How an order is priced: at the market, at a limit, or on a trigger (SL: a limit, SL-M: market)."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"
    SL_M = "SL-M"

    @classmethod
    def parse(cls, value: object) -> OrderType:
        """Accepts the usual spellings: "SL-M", "SL_M", "SLM", any case."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().upper().replace("_", "-")
        if text == "SLM":
            text = "SL-M"
        try:
            return cls(text)
        except ValueError:
            raise ValueError(
                f"order type: unknown value {value!r} (expected MARKET, LIMIT, SL or SL-M)"
            ) from None

    @property
    def needs_price(self) -> bool:
        return self in (OrderType.LIMIT, OrderType.SL)

    @property
    def needs_trigger(self) -> bool:
        return self in (OrderType.SL, OrderType.SL_M)

    @property
    def is_market(self) -> bool:
        """Fills at whatever price is there: the kind that takes ``market_protection``."""
        return self in (OrderType.MARKET, OrderType.SL_M)


class RuleKind(enum.StrEnum):
    PERCENT = "percent"
    POINTS = "points"


E = TypeVar("E", bound=enum.Enum)


def _parse_enum(cls: type[E], value: object, field_name: str) -> E:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        for member in cls:
            if member.value.lower() == value.strip().lower():
                return member
    allowed = ", ".join(str(m.value) for m in cls)
    raise ValueError(f"{field_name}: unknown value {value!r} (expected one of {allowed})")


def require_positive(value: object, field_name: str) -> float:
    """Return value as a finite float > 0, or raise ValueError naming the field."""
    if isinstance(value, bool):
        raise ValueError(f"{field_name}: must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{field_name}: must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{field_name}: must be greater than 0, got {value!r}")
    return number


def require_positive_int(value: object, field_name: str) -> int:
    """Return value as an int > 0, or raise ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{field_name}: must be a whole number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{field_name}: must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{field_name}: must be a whole number, got {value!r}")
    if number <= 0:
        raise ValueError(f"{field_name}: must be greater than 0, got {value!r}")
    return int(number)


@dataclass(frozen=True, slots=True)
class Tick:
    """One market update. bid/ask are the best depth prices when the feed mode carries depth."""

    instrument: InstrumentId
    ltp: float
    bid: float | None = None
    ask: float | None = None
    volume: int | None = None
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """A net position. ``quantity`` is signed (negative = short); ``instrument`` is what ticks carry."""

    symbol: str
    exchange: str
    instrument: InstrumentId
    quote_key: str
    quantity: int
    average_price: float
    product: Product | None
    raw_product: str
    last_price: float | None = None
    pnl: float | None = None

    @property
    def side(self) -> Side | None:
        """The entry side of the open quantity: BUY for a long, SELL for a short, None when flat."""
        if self.quantity > 0:
            return Side.BUY
        if self.quantity < 0:
            return Side.SELL
        return None


@dataclass(frozen=True, slots=True)
class TrailRule:
    """How far the stop trails the price, and the optional refinements.

    ``value`` and every optional threshold are in the rule's unit: percent of the reference price for a
    percent rule, rupees (points) for a points rule. Optional features, all off by default:

    - ``activation``: trailing starts only once the favourable move from entry reaches this much;
      until then the stop stays at its initial level.
    - ``ladder_step`` / ``ladder_raise``: a stepped trail instead of a continuous one; every
      ``ladder_step`` of favourable move moves the stop ``ladder_raise`` towards the price.
    - ``breakeven``: once the favourable move reaches this much, the stop is at least the entry price.
    - ``target``: exit in profit once the price has moved this much in the trader's favour.
    """

    kind: RuleKind
    value: float
    activation: float | None = None
    ladder_step: float | None = None
    ladder_raise: float | None = None
    breakeven: float | None = None
    target: float | None = None

    def __post_init__(self) -> None:
        kind = _parse_enum(RuleKind, self.kind, "rule kind")
        object.__setattr__(self, "kind", kind)
        value = require_positive(self.value, "rule value")
        if kind is RuleKind.PERCENT and value >= 100:
            raise ValueError(f"rule value: a percent must be below 100, got {self.value!r}")
        object.__setattr__(self, "value", value)
        for name in ("activation", "ladder_step", "ladder_raise", "breakeven", "target"):
            raw = getattr(self, name)
            if raw is not None:
                object.__setattr__(self, name, require_positive(raw, name.replace("_", " ")))
        if (self.ladder_step is None) != (self.ladder_raise is None):
            raise ValueError("ladder: give both the step and the raise, or neither")
        if kind is RuleKind.PERCENT and self.target is not None and self.target >= 1000:
            raise ValueError(f"target: a percent must be below 1000, got {self.target!r}")
        if kind is RuleKind.PERCENT and self.ladder_raise is not None and self.ladder_raise >= 100:
            raise ValueError(f"ladder raise: a percent must be below 100, got {self.ladder_raise!r}")

    @classmethod
    def percent(cls, value: float, **options: float | None) -> TrailRule:
        return cls(RuleKind.PERCENT, value, **options)

    @classmethod
    def points(cls, value: float, **options: float | None) -> TrailRule:
        return cls(RuleKind.POINTS, value, **options)

    def distance(self, price: float) -> float:
        """The trailing distance at ``price``."""
        return self.amount(self.value, price)

    def amount(self, value: float, reference: float) -> float:
        """A quantity in the rule's unit, in rupees, measured against ``reference``."""
        return reference * value / 100.0 if self.kind is RuleKind.PERCENT else value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "value": self.value}
        for name in ("activation", "ladder_step", "ladder_raise", "breakeven", "target"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrailRule:
        if not isinstance(data, dict) or "kind" not in data or "value" not in data:
            raise ValueError(f"rule: expected a mapping with kind and value, got {data!r}")
        known = {"kind", "value", "activation", "ladder_step", "ladder_raise", "breakeven", "target"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"rule: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> TrailRule:
        """Parse the command-line form ``percent:2`` or ``points:5``."""
        kind, sep, value = text.partition(":")
        if not sep:
            raise ValueError(f"rule: expected KIND:VALUE such as percent:2 or points:5, got {text!r}")
        return cls(_parse_enum(RuleKind, kind, "rule kind"), require_positive(value, "rule value"))

    def describe(self) -> str:
        unit = "%" if self.kind is RuleKind.PERCENT else " pts"
        return f"{self.value:g}{unit}"


@functools.lru_cache(maxsize=64)
def tick_decimals(tick_size: float) -> int:
    """Decimal places needed to print prices on the grid of ``tick_size`` exactly."""
    exponent = Decimal(repr(tick_size)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


# A value within this many ticks of a grid line is on that line: 100 x 0.98 is 98.00, not 97.95.
GRID_TOLERANCE = 1e-6


def round_down(price: float, tick_size: float) -> float:
    """The highest grid price at or below ``price`` (a long stop)."""
    steps = math.floor(price / tick_size + GRID_TOLERANCE)
    return round(steps * tick_size, tick_decimals(tick_size))


def round_up(price: float, tick_size: float) -> float:
    """The lowest grid price at or above ``price`` (a short stop)."""
    steps = math.ceil(price / tick_size - GRID_TOLERANCE)
    return round(steps * tick_size, tick_decimals(tick_size))


def on_grid(price: float, tick_size: float) -> bool:
    steps = price / tick_size
    return abs(steps - round(steps)) < GRID_TOLERANCE * 10


# ----------------------------------------------------------------------------- the broker-held safety stop

SAFETY_BUFFER_PERCENT = 1.0
"""Default distance of the safety stop behind the trailed stop, in percent of the stop."""
SAFETY_BUFFER_TICKS = 5
"""... or this many ticks, whichever is larger (1 % of a cheap share can be a single tick)."""


class SafetyState(enum.StrEnum):
    """Where a protection's broker-held safety stop stands; the positions view shows it beside the stop."""

    OFF = "off"  # not enabled for this protection
    PLACING = "placing"  # wanted, not confirmed at the broker yet
    PLACED = "placed"  # at the broker, at ``safety_level``
    MOVING = "moving"  # a move (modify, or cancel and re-place) is in flight
    MISSING = "missing"  # should be at the broker and is not (refused, cancelled outside): re-created soon
    FIRED = "fired"  # the broker's stop triggered and closed (or is closing) the position
    EXIT = "exit"  # turned into TrailStop's own exit (an SL-M modified to MARKET, a fired GTT's order)
    REMOVED = "removed"  # taken away: the protection ended, or TrailStop's own exit took over

    @classmethod
    def parse(cls, value: object, field_name: str = "safety state") -> SafetyState:
        return _parse_enum(cls, value, field_name)

    @property
    def held(self) -> bool:
        """The broker holds (or should hold) a live stop for this protection."""
        return self in (SafetyState.PLACED, SafetyState.MOVING)


class SafetyKind(enum.StrEnum):
    """Which broker object holds the safety stop (see services/safety_stop.py for why)."""

    NONE = ""
    SL_M = "SL-M"  # a regular stop-loss market order (Kite MIS)
    SL = "SL"  # a stop-loss limit order, where the exchange has no SL-M (options, BSE)
    GTT = "GTT"  # a good-till-triggered trigger (Kite CNC/NRML, Upstox)

    @property
    def is_order(self) -> bool:
        """Held as a regular stop order (SL-M or SL) rather than a GTT."""
        return self in (SafetyKind.SL_M, SafetyKind.SL)

    @classmethod
    def parse(cls, value: object, field_name: str = "safety kind") -> SafetyKind:
        if value in (None, ""):
            return cls.NONE
        return _parse_enum(cls, value, field_name)


def safety_buffer(stop: float, tick_size: float, percent: float, ticks: int) -> float:
    """The distance between the trailed stop and the safety stop: percent of the stop or ticks, the larger."""
    return max(stop * percent / 100.0, ticks * tick_size)


def safety_level(side: Side, stop: float, tick_size: float, percent: float, ticks: int) -> float:
    """Where the broker-held stop goes for a trailed ``stop``: behind it by the buffer, on the tick grid.

    Long: ``stop - buffer`` rounded down; short: ``stop + buffer`` rounded up (never tighter than the buffer).
    """
    buffer = safety_buffer(stop, tick_size, percent, ticks)
    if Side.parse(side).is_long:
        return max(round_down(stop - buffer, tick_size), round_up(tick_size, tick_size))
    return round_up(stop + buffer, tick_size)


def check_safety_buffer(percent: object, ticks: object) -> tuple[float, int]:
    """Validate a safety buffer; returns it as (percent, ticks) or raises ValueError naming the field."""
    pct = require_positive(percent, "safety buffer percent")
    if pct >= 50:
        raise ValueError(f"safety buffer percent: must be below 50, got {percent!r}")
    if isinstance(ticks, bool) or not isinstance(ticks, int) or ticks < 0:
        raise ValueError(f"safety buffer ticks: must be a whole number of 0 or more, got {ticks!r}")
    return pct, ticks


class Status(enum.StrEnum):
    """The protection lifecycle (see lifecycle.py for the legal transitions)."""

    PENDING = "PENDING"
    OPEN = "OPEN"
    TRIGGERED = "TRIGGERED"
    EXITING = "EXITING"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    REMOVED = "REMOVED"
    EXIT_FAILED = "EXIT_FAILED"


@dataclass(frozen=True, slots=True)
class Protection:
    """A stored protection: everything needed to resume it after a restart."""

    id: int
    account_id: int
    broker: str
    instrument: str
    symbol: str
    exchange: str
    side: Side
    product: Product
    quantity: int
    filled_quantity: int
    entry_price: float | None
    tick_size: float
    rule: TrailRule
    stop: float | None
    peak: float | None
    status: Status
    exit_tag: str
    reason: str = ""
    paused: bool = False
    entry_order_id: str | None = None
    exit_order_id: str | None = None
    exit_price: float | None = None
    exit_quantity: int | None = None
    created_at: datetime = field(default_factory=datetime.now)
    updated_at: datetime = field(default_factory=datetime.now)
    closed_at: datetime | None = None
    # The broker-held safety stop (off by default). The positions view and the chart read
    # ``safety_level`` (the trigger the broker holds now, None when there is none) and ``safety_state``.
    safety_enabled: bool = False
    safety_buffer_percent: float = SAFETY_BUFFER_PERCENT
    safety_buffer_ticks: int = SAFETY_BUFFER_TICKS
    safety_state: SafetyState = SafetyState.OFF
    safety_kind: SafetyKind = SafetyKind.NONE
    safety_order_id: str | None = None  # the order id (SL-M) or the GTT id at the broker
    safety_level: float | None = None  # the trigger price the broker holds
    safety_price: float | None = None  # a GTT's LIMIT price (Kite), as sent
    safety_quantity: int | None = None
    safety_modifications: int = 0  # modifications of the current broker order (Kite caps them per order)

    @property
    def safety_target(self) -> float | None:
        """Where the safety stop belongs for the current stop (None when off or there is no stop yet)."""
        if not self.safety_enabled or self.stop is None:
            return None
        return safety_level(
            self.side, self.stop, self.tick_size, self.safety_buffer_percent, self.safety_buffer_ticks
        )

    @property
    def entry_tag(self) -> str:
        """The tag of the entry order TrailStop places for this protection: the exit tag plus "E"."""
        return self.exit_tag + "E"

    @property
    def safety_tag(self) -> str:
        """The tag of a safety SL-M order: the exit tag plus "S".

        Exit tags have one length (``ProtectionStore.exit_tag_for``), so an entry or safety tag is never
        another protection's exit tag.
        """
        return self.exit_tag + "S"

    @property
    def engine_instrument(self) -> InstrumentId:
        """The key ticks carry for this instrument: an int for Kite tokens, the key string for Upstox."""
        return int(self.instrument) if self.instrument.isdigit() else self.instrument

    def with_changes(self, **changes: Any) -> Protection:
        return replace(self, **changes)
