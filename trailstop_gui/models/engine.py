"""The trailing engine: armed protections in memory, ticks in, stop events out. No I/O.

One engine per account lives in that account's feed thread, so it needs no locks. Ticks are routed through
a dict from instrument to the protections armed on it: the cost of a tick is the number of protections on
that instrument, never the number of protections in the engine.

Resuming from the store needs only the persisted stop: every candidate stop is a non-decreasing function of
the trail price (for a long; mirrored for a short), and the stop is the running maximum of the candidates, so
the stop already reached dominates every candidate a lower price could produce later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trailstop_gui.models.domain import (
    GRID_TOLERANCE,
    InstrumentId,
    Product,
    Protection,
    RuleKind,
    Side,
    Tick,
    TrailRule,
    require_positive,
    round_down,
    round_up,
    tick_decimals,
)


@dataclass(frozen=True, slots=True)
class StopMoved:
    """The stop of ``key`` moved in the trader's favour from ``old`` to ``new``."""

    key: str
    old: float
    new: float
    price: float | None = field(default=None, compare=False)  # the trail price that moved it


@dataclass(frozen=True, slots=True)
class StopTriggered:
    """The LTP crossed the stop (or reached the target) of ``key``; the protection left the engine."""

    key: str
    ltp: float
    stop: float
    reason: str = "stop"


EngineEvent = StopMoved | StopTriggered


class _Armed:
    """Mutable per-protection state, with everything the tick path needs precomputed."""

    __slots__ = (
        "activation_price",
        "breakeven_price",
        "decimals",
        "factor",
        "offset",
        "simple",
        "entry",
        "initial",
        "instrument",
        "is_long",
        "key",
        "ladder_raise",
        "ladder_step",
        "peak",
        "rule",
        "stop",
        "target_price",
        "tick_size",
        "trails_on_quote",
    )

    def __init__(
        self,
        key: str,
        instrument: InstrumentId,
        side: Side,
        product: Product,
        entry: float,
        tick_size: float,
        rule: TrailRule,
    ) -> None:
        self.key = key
        self.instrument = instrument
        self.is_long = side is Side.BUY
        self.trails_on_quote = product.trails_on_quote
        self.entry = entry
        self.tick_size = tick_size
        self.decimals = tick_decimals(tick_size)
        self.rule = rule
        sign = 1.0 if self.is_long else -1.0
        # The continuous trail is price * factor - offset: percent rules scale, points rules shift.
        if rule.kind is RuleKind.PERCENT:
            self.factor, self.offset = 1.0 - sign * rule.value / 100.0, 0.0
        else:
            self.factor, self.offset = 1.0, sign * rule.value
        self.simple = rule.activation is None and rule.ladder_step is None and rule.breakeven is None
        self.initial = self._on_grid(entry - sign * rule.distance(entry))
        self.stop = self.initial
        self.peak = entry
        # Thresholds in the rule's unit become price levels once, here, so the tick path only compares.
        self.activation_price = (
            entry + sign * rule.amount(rule.activation, entry) if rule.activation is not None else None
        )
        self.breakeven_price = (
            entry + sign * rule.amount(rule.breakeven, entry) if rule.breakeven is not None else None
        )
        self.ladder_step = rule.amount(rule.ladder_step, entry) if rule.ladder_step is not None else None
        self.ladder_raise = rule.amount(rule.ladder_raise, entry) if rule.ladder_raise is not None else None
        if rule.target is not None:
            raw_target = entry + sign * rule.amount(rule.target, entry)
            # A target rounds away from the entry: the trader never gets less than asked for.
            self.target_price: float | None = (
                round_up(raw_target, tick_size) if self.is_long else round_down(raw_target, tick_size)
            )
        else:
            self.target_price = None

    def _on_grid(self, price: float) -> float:
        """Onto the tick grid, towards the trader's risk: down for a long stop, up for a short one."""
        tick = self.tick_size
        if self.is_long:
            return round(math.floor(price / tick + GRID_TOLERANCE) * tick, self.decimals)
        return round(math.ceil(price / tick - GRID_TOLERANCE) * tick, self.decimals)

    def candidate(self, price: float) -> float | None:
        """The stop that trail price ``price`` justifies, or None when it justifies none."""
        if self.simple:
            return self._on_grid(price * self.factor - self.offset)
        if self.is_long:
            move = price - self.entry
            activated = self.activation_price is None or price >= self.activation_price
            breakeven = self.breakeven_price is not None and price >= self.breakeven_price
        else:
            move = self.entry - price
            activated = self.activation_price is None or price <= self.activation_price
            breakeven = self.breakeven_price is not None and price <= self.breakeven_price
        trail: float | None = None
        if activated:
            if self.ladder_step is not None and self.ladder_raise is not None:
                steps = math.floor(move / self.ladder_step + 1e-9)
                if steps > 0:
                    offset = steps * self.ladder_raise
                    trail = self._on_grid(self.initial + offset if self.is_long else self.initial - offset)
            else:
                trail = self._on_grid(price * self.factor - self.offset)
        if breakeven:
            # "At least the entry price": the breakeven level rounds towards profit, unlike a trailed stop.
            level = (
                round_up(self.entry, self.tick_size)
                if self.is_long
                else round_down(self.entry, self.tick_size)
            )
            if trail is None:
                trail = level
            else:
                trail = max(trail, level) if self.is_long else min(trail, level)
        return trail


def initial_stop(side: Side, entry_price: float, tick_size: float, rule: TrailRule) -> float:
    """The stop a protection starts with: entry minus the rule's distance (plus, for a short), on the grid."""
    return _Armed("", 0, Side.parse(side), Product.CNC, entry_price, tick_size, rule).initial


def checked_initial_stop(side: Side, entry_price: float, tick_size: float, rule: TrailRule) -> float:
    """``initial_stop``, or a ValueError naming the rule when that stop would be at or below zero.

    A long's distance of 5 points from an entry of 3.00 puts the stop at -2.00: no price can reach it, and a
    stored stop <= 0 made the engine refuse to arm the whole account's protections.
    """
    stop = initial_stop(side, entry_price, tick_size, rule)
    if not stop > 0:
        raise ValueError(
            f"rule: a {rule.describe()} distance from the entry price {entry_price:g} puts the stop at "
            f"{stop:g}; a stop must be above 0 (choose a smaller distance)"
        )
    return stop


def _valid_price(value: float | None) -> bool:
    # NaN fails every comparison, so `value > 0` also rejects it; inf is not a price either.
    return value is not None and value > 0 and value != math.inf


class TrailingEngine:
    """In-memory trailing stops for one account. Not thread-safe: one engine per feed thread."""

    def __init__(self) -> None:
        self._by_key: dict[str, _Armed] = {}
        self._by_instrument: dict[InstrumentId, dict[str, _Armed]] = {}

    def arm(
        self,
        key: str,
        *,
        instrument: InstrumentId,
        side: Side,
        product: Product,
        entry_price: float,
        tick_size: float,
        rule: TrailRule,
        stop: float | None = None,
        peak: float | None = None,
    ) -> float:
        """Arm (or re-arm) protection ``key`` and return its stop.

        ``stop`` and ``peak`` resume a protection from the store; a resumed stop never moves against the
        trader, even if the rule now computes a looser one.
        """
        side = Side.parse(side)
        product = Product.parse(product)
        entry = require_positive(entry_price, "entry price")
        tick = require_positive(tick_size, "tick size")
        if not isinstance(rule, TrailRule):
            raise ValueError(f"rule: expected a TrailRule, got {rule!r}")
        armed = _Armed(key, instrument, side, product, entry, tick, rule)
        if stop is not None:
            resumed = armed._on_grid(require_positive(stop, "stop"))
            armed.stop = max(armed.stop, resumed) if armed.is_long else min(armed.stop, resumed)
        if peak is not None:
            armed.peak = require_positive(peak, "peak")
        self.disarm(key)
        self._by_key[key] = armed
        self._by_instrument.setdefault(instrument, {})[key] = armed
        return armed.stop

    def arm_protection(self, protection: Protection) -> float:
        """Arm a stored protection under the key ``str(protection.id)``, resuming its stop."""
        if protection.entry_price is None:
            raise ValueError(f"entry price: protection {protection.id} has no fill to trail from yet")
        return self.arm(
            str(protection.id),
            instrument=protection.engine_instrument,
            side=protection.side,
            product=protection.product,
            entry_price=protection.entry_price,
            tick_size=protection.tick_size,
            rule=protection.rule,
            stop=protection.stop,
            peak=protection.peak,
        )

    def disarm(self, key: str) -> bool:
        """Stop watching ``key``. Returns whether it was armed."""
        armed = self._by_key.pop(key, None)
        if armed is None:
            return False
        on_instrument = self._by_instrument[armed.instrument]
        del on_instrument[key]
        if not on_instrument:
            del self._by_instrument[armed.instrument]
        return True

    def stop(self, key: str) -> float:
        """The current stop of ``key`` (KeyError when not armed)."""
        return self._by_key[key].stop

    def peak(self, key: str) -> float:
        """The most favourable trail price seen for ``key`` (the entry price until the price moves)."""
        return self._by_key[key].peak

    def target(self, key: str) -> float | None:
        return self._by_key[key].target_price

    def is_armed(self, key: str) -> bool:
        return key in self._by_key

    def keys(self) -> list[str]:
        return list(self._by_key)

    def instruments(self) -> set[InstrumentId]:
        """Instruments with at least one armed protection: what the feed must subscribe to."""
        return set(self._by_instrument)

    def __len__(self) -> int:
        return len(self._by_key)

    def on_tick(self, tick: Tick) -> list[EngineEvent]:
        """Check every protection on the tick's instrument: trigger first, then trail."""
        armed_here = self._by_instrument.get(tick.instrument)
        if not armed_here:
            return []
        ltp = tick.ltp
        if not _valid_price(ltp):
            return []
        events: list[EngineEvent] = []
        fired: list[str] = []
        for armed in armed_here.values():
            is_long = armed.is_long
            stop = armed.stop
            if (ltp <= stop) if is_long else (ltp >= stop):
                fired.append(armed.key)
                events.append(StopTriggered(armed.key, ltp, stop))
                continue
            target = armed.target_price
            if target is not None and ((ltp >= target) if is_long else (ltp <= target)):
                fired.append(armed.key)
                events.append(StopTriggered(armed.key, ltp, stop, reason="target"))
                continue
            price = ltp
            if armed.trails_on_quote:
                # The quote only ever holds a stop back, never pushes it: a long trails on min(bid, LTP),
                # a short on max(ask, LTP). A bogus bid of 1e12 (or an ask of 0.01) is then harmless
                # instead of moving a long's stop to 9.8e11, which would fire at once.
                quote = tick.bid if is_long else tick.ask
                if quote is not None and _valid_price(quote):
                    price = min(quote, ltp) if is_long else max(quote, ltp)
            if (price <= armed.peak) if is_long else (price >= armed.peak):
                continue  # no new extreme: no candidate can beat the stop already reached
            armed.peak = price
            candidate = armed.candidate(price)
            if candidate is not None and ((candidate > stop) if is_long else (candidate < stop)):
                armed.stop = candidate
                events.append(StopMoved(armed.key, stop, candidate, price))
        for key in fired:
            self.disarm(key)
        return events
