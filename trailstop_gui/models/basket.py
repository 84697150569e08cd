"""Basket protection: a group of positions exited together on its live MTM in rupees. Pure: no I/O, no Qt.

MTM = realised today (the members' exits already filled) + unrealised from ticks, summed over the members:
a long leg gains ``(ltp - average) x units``, a short leg ``(average - ltp) x units``. ``units`` is what the
brokers' positions and orders count (for F&O: lots x lot size, see ``units``); ``multiplier`` is the price
multiplier of contracts quoted per unit of something else (MCX), 1 elsewhere.

Rules, in rupees (all optional, at least one):
- ``max_loss``: exit everything once MTM <= -max_loss.
- ``lock_at`` / ``lock_profit``: once MTM reaches ``lock_at``, at least ``lock_profit`` is locked: exit
  everything when MTM falls back to the lock.
- ``trail_every`` / ``trail_by``: for every ``trail_every`` that the best MTM rises above ``lock_at``, the
  lock rises by ``trail_by``. The lock follows the best MTM seen, so it never goes down.

A basket breaches once; after that it only reports its MTM (the exits are the services' work).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trailstop_gui.models.domain import InstrumentId, Side, Tick, require_positive, require_positive_int

BREACH_LOCK = "lock"
BREACH_MAX_LOSS = "max loss"


def units(lots: int, lot_size: int) -> int:
    """The units of ``lots`` lots (what positions and orders count for F&O)."""
    return require_positive_int(lots, "lots") * require_positive_int(lot_size, "lot size")


def _optional_amount(value: object, name: str) -> float | None:
    return None if value is None else require_positive(value, name)


@dataclass(frozen=True, slots=True)
class BasketRules:
    """A basket's rules in rupees; every field is optional, but a basket needs at least one rule."""

    max_loss: float | None = None
    lock_at: float | None = None
    lock_profit: float | None = None
    trail_every: float | None = None
    trail_by: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_loss", "lock_at", "lock_profit", "trail_every", "trail_by"):
            object.__setattr__(self, name, _optional_amount(getattr(self, name), name.replace("_", " ")))
        if (self.lock_at is None) != (self.lock_profit is None):
            raise ValueError("lock profit: give both the MTM that locks (lock at) and the profit locked")
        if self.lock_at is not None and self.lock_profit is not None and self.lock_profit > self.lock_at:
            raise ValueError(
                f"lock profit: the profit locked ({self.lock_profit:g}) cannot exceed the MTM that locks it "
                f"({self.lock_at:g}): the basket would exit the moment it locks"
            )
        if (self.trail_every is None) != (self.trail_by is None):
            raise ValueError("trail: give both the step (trail every) and the raise (trail by), or neither")
        if self.trail_every is not None and self.lock_at is None:
            raise ValueError("trail every: trailing raises a lock; set lock at and lock profit first")
        if all(getattr(self, n) is None for n in ("max_loss", "lock_at")):
            raise ValueError("rules: a basket needs a max loss or a lock (lock at and lock profit)")

    def lock_for(self, best_mtm: float) -> float | None:
        """The lock for the best MTM seen so far (None before ``lock_at`` was reached)."""
        if self.lock_at is None or self.lock_profit is None or best_mtm < self.lock_at:
            return None
        lock = self.lock_profit
        if self.trail_every is not None and self.trail_by is not None:
            # A tolerance, so that an MTM exactly on a step counts as reaching it (as the stop grid does).
            steps = math.floor((best_mtm - self.lock_at) / self.trail_every + 1e-9)
            lock += steps * self.trail_by
        return lock

    def to_dict(self) -> dict[str, float]:
        return {
            name: value
            for name in ("max_loss", "lock_at", "lock_profit", "trail_every", "trail_by")
            if (value := getattr(self, name)) is not None
        }

    @classmethod
    def from_dict(cls, data: object) -> BasketRules:
        if not isinstance(data, dict):
            raise ValueError(f"rules: expected a mapping, got {data!r}")
        known = {"max_loss", "lock_at", "lock_profit", "trail_every", "trail_by"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"rules: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)

    def describe(self) -> str:
        parts = []
        if self.max_loss is not None:
            parts.append(f"max loss ₹{self.max_loss:,.0f}")
        if self.lock_at is not None and self.lock_profit is not None:
            parts.append(f"at ₹{self.lock_at:,.0f} lock ₹{self.lock_profit:,.0f}")
        if self.trail_every is not None and self.trail_by is not None:
            parts.append(f"every ₹{self.trail_every:,.0f} more +₹{self.trail_by:,.0f}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Leg:
    """One member position of a basket: ``key`` is its protection id."""

    key: int
    instrument: InstrumentId
    side: Side
    quantity: int  # open units
    average_price: float
    multiplier: float = 1.0

    def unrealised(self, ltp: float) -> float:
        move = ltp - self.average_price if Side.parse(self.side).is_long else self.average_price - ltp
        return move * self.quantity * self.multiplier


def mtm(legs: Iterable[Leg], prices: dict[InstrumentId, float], realised: float = 0.0) -> float:
    """Realised plus every leg's unrealised at ``prices`` (a leg with no price yet counts 0)."""
    return realised + sum(leg.unrealised(prices[leg.instrument]) for leg in legs if leg.instrument in prices)


@dataclass(frozen=True, slots=True)
class LockRaised:
    basket: int
    old: float | None
    new: float


@dataclass(frozen=True, slots=True)
class BasketBreached:
    basket: int
    mtm: float
    level: float  # the lock, or -max_loss
    reason: str  # BREACH_LOCK or BREACH_MAX_LOSS


BasketEvent = LockRaised | BasketBreached


@dataclass
class BasketState:
    """One basket's rules, legs and running figures (mutable: the engine's own record)."""

    id: int
    rules: BasketRules
    legs: dict[int, Leg]
    realised: float = 0.0
    best: float | None = None
    lock: float | None = None
    breached: bool = False
    unrealised: dict[int, float] = field(default_factory=dict)

    @property
    def mtm(self) -> float:
        return self.realised + sum(self.unrealised.values())

    @property
    def priced(self) -> bool:
        """Every leg has a price: before that the MTM is partial, and judging it could misfire."""
        return len(self.unrealised) == len(self.legs)

    def evaluate(self) -> list[BasketEvent]:
        """Raise the lock for the MTM now, then check the breach (once). Needs every leg priced."""
        if self.breached or not self.priced:
            return []
        value = self.mtm
        events: list[BasketEvent] = []
        self.best = value if self.best is None else max(self.best, value)
        candidate = self.rules.lock_for(self.best)
        if candidate is not None and (self.lock is None or candidate > self.lock):
            events.append(LockRaised(self.id, self.lock, candidate))
            self.lock = candidate
        if self.lock is not None and value <= self.lock:
            self.breached = True
            events.append(BasketBreached(self.id, value, self.lock, BREACH_LOCK))
        elif self.rules.max_loss is not None and value <= -self.rules.max_loss:
            self.breached = True
            events.append(BasketBreached(self.id, value, -self.rules.max_loss, BREACH_MAX_LOSS))
        return events


class BasketEngine:
    """Every basket of an account: ticks in, lock raises and breaches out. No I/O.

    Per tick the cost is the legs on that instrument and the baskets they belong to (an index from
    instrument to legs), not every basket.
    """

    def __init__(self) -> None:
        self._baskets: dict[int, BasketState] = {}
        self._by_instrument: dict[InstrumentId, list[tuple[BasketState, Leg]]] = {}
        self._prices: dict[InstrumentId, float] = {}

    def arm(
        self,
        basket_id: int,
        rules: BasketRules,
        legs: Iterable[Leg],
        *,
        realised: float = 0.0,
        best: float | None = None,
        lock: float | None = None,
    ) -> BasketState:
        """Watch a basket (again): ``best`` and ``lock`` carry a stored lock over a restart."""
        self.disarm(basket_id)
        state = BasketState(basket_id, rules, {leg.key: leg for leg in legs}, realised, best, lock)
        self._baskets[basket_id] = state
        for leg in state.legs.values():
            self._by_instrument.setdefault(leg.instrument, []).append((state, leg))
            if leg.instrument in self._prices:
                state.unrealised[leg.key] = leg.unrealised(self._prices[leg.instrument])
        return state

    def disarm(self, basket_id: int) -> None:
        state = self._baskets.pop(basket_id, None)
        if state is None:
            return
        for leg in state.legs.values():
            pairs = [pair for pair in self._by_instrument.get(leg.instrument, []) if pair[0] is not state]
            if pairs:
                self._by_instrument[leg.instrument] = pairs
            else:
                self._by_instrument.pop(leg.instrument, None)

    def state(self, basket_id: int) -> BasketState | None:
        return self._baskets.get(basket_id)

    def baskets(self) -> list[BasketState]:
        return list(self._baskets.values())

    def on_tick(self, tick: Tick) -> list[BasketEvent]:
        ltp = tick.ltp
        if not isinstance(ltp, int | float) or not math.isfinite(ltp) or ltp <= 0:
            return []
        self._prices[tick.instrument] = float(ltp)
        touched: dict[int, BasketState] = {}
        for state, leg in self._by_instrument.get(tick.instrument, ()):
            state.unrealised[leg.key] = leg.unrealised(ltp)
            touched[state.id] = state
        events: list[BasketEvent] = []
        for state in touched.values():
            events.extend(state.evaluate())
        return events

    def snapshot(self, basket_id: int) -> dict[str, Any] | None:
        state = self._baskets.get(basket_id)
        if state is None:
            return None
        return {"mtm": state.mtm, "lock": state.lock, "best": state.best, "breached": state.breached}


def exit_order(legs: Iterable[Leg]) -> list[int]:
    """The order a breached basket's members are exited in: every short first, then the longs.

    A short (a written option above all) carries the margin; the long beside it is often its hedge. Buying
    the short back first releases margin and never leaves a naked short: selling the hedge first would,
    and the broker's margin check can then refuse the short's own exit. Within each side, the larger
    exposure (units x average price) goes first.
    """
    ordered = sorted(
        legs,
        key=lambda leg: (
            Side.parse(leg.side).is_long,
            -leg.quantity * leg.average_price * leg.multiplier,
            leg.key,
        ),
    )
    return [leg.key for leg in ordered]
