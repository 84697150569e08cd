"""Domain vocabulary: sides, products, ticks, trailing rules and protections.

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

    @property
    def engine_instrument(self) -> InstrumentId:
        """The key ticks carry for this instrument: an int for Kite tokens, the key string for Upstox."""
        return int(self.instrument) if self.instrument.isdigit() else self.instrument

    def with_changes(self, **changes: Any) -> Protection:
        return replace(self, **changes)
