"""Basket evaluation cost per tick (50 baskets of 10 positions) beside the single-stop engine, same ticks.

Both run on one thread over the same tick stream: the engine with 500 protections over 200 instruments
(as bench.engine), the basket engine with those 500 positions grouped into 50 baskets of 10 (each basket's
MTM recomputed, its lock rule and loss limit checked on every tick of one of its instruments). The rules
are wide enough that no basket breaches, so every basket is evaluated for the whole run.
"""

from __future__ import annotations

import random
import time

from bench.engine import engine_seconds, entry_prices, make_ticks, protections
from trailstop_gui.models.basket import BasketEngine, BasketRules, Leg
from trailstop_gui.models.domain import Tick

BASKETS = 50
PER_BASKET = 10
TICKS = 200_000


def run_engine(ticks: list[Tick]) -> float:
    """Seconds the single-stop engine takes over ``ticks`` (bench.engine's set-up)."""
    return engine_seconds(ticks)


def run_baskets(ticks: list[Tick]) -> tuple[float, int]:
    engine = BasketEngine()
    entries = entry_prices(ticks)
    positions = protections()
    rng = random.Random(5)
    order = list(range(len(positions)))
    rng.shuffle(order)  # each basket mixes instruments, longs and shorts
    rules = BasketRules(max_loss=1e12, lock_at=1e12, lock_profit=1e11, trail_every=1e9, trail_by=1e8)
    for b in range(BASKETS):
        legs = []
        for k in order[b * PER_BASKET : (b + 1) * PER_BASKET]:
            instrument, side, _product, _pct = positions[k]
            quantity = rng.choice((1, 25, 75, 500))
            legs.append(Leg(k, instrument, side, quantity, entries[instrument]))
        engine.arm(b, rules, legs)
    on_tick = engine.on_tick
    events = 0
    start = time.perf_counter()
    for tick in ticks:
        events += len(on_tick(tick))
    return time.perf_counter() - start, events


def main() -> None:
    ticks = make_ticks(TICKS)
    run_baskets(ticks[:5000])  # warm up both
    run_engine(ticks[:5000])
    basket_seconds = min(run_baskets(ticks)[0] for _ in range(3))
    engine_seconds = min(run_engine(ticks) for _ in range(3))
    per_tick_baskets = basket_seconds / len(ticks) * 1e6
    per_tick_engine = engine_seconds / len(ticks) * 1e6
    print(
        f"baskets: {per_tick_baskets:.2f} µs per tick for {BASKETS} baskets of {PER_BASKET} positions "
        f"({len(ticks) / basket_seconds:,.0f} ticks/s), {per_tick_baskets / per_tick_engine:.2f} x "
        f"the single-stop engine's {per_tick_engine:.2f} µs per tick "
        f"({len(ticks) / engine_seconds:,.0f} ticks/s; "
        f"{BASKETS * PER_BASKET} protections over 200 instruments, the same ticks)"
    )


if __name__ == "__main__":
    main()
