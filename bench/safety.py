"""How closely the broker-held safety stop follows the trail, and at what cost in broker modifications.

A synthetic random-walk day (6 h 15 min, one tick a second per instrument) drives the real TrailingEngine
and the safety manager's real decision function (``services.safety_stop.decide``) on a synthetic clock:
no sleeping, no broker. A decision to move takes effect ``LATENCY`` seconds later (a broker round trip);
a WAIT is honoured by looking again at its due time. A protection whose stop fires is re-armed at the
price of the moment, so that the day keeps its protections. Every second the lag is sampled: the
distance between the trailed stop and the broker-held stop, in percent of the stop.

The baseline, in the same run: a broker stop moved on every stop change (no threshold, no interval).
The buffer is 1 % (the default), so a lag of 1 % is the floor: the aim is a p95 within twice the buffer
with modifications well under Kite's 25 per order (the manager re-places an order near its cap).
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, replace

from trailstop_gui.models.domain import Product, Side, Tick, TrailRule, round_down, safety_level
from trailstop_gui.models.engine import StopMoved, StopTriggered, TrailingEngine
from trailstop_gui.services.safety_stop import Move, SafetyPolicy, decide, threshold_for

SECONDS = 6 * 3600 + 15 * 60
INSTRUMENTS = 40
TICK = 0.05
LATENCY = 0.3  # seconds from a decision to the broker holding the new level
BUFFER_PERCENT, BUFFER_TICKS = 1.0, 5
CAP = 25  # Kite's modifications per order


@dataclass
class Held:
    level: float | None = None
    pending: tuple[float, float] | None = None  # (takes effect at, level)
    last_move: float | None = None
    modifications: int = 0  # of the current order
    due: float | None = None  # a WAIT's time


@dataclass
class Result:
    lags: list[float]
    modifications: int
    replaces: int
    protection_hours: float


def run(policy: SafetyPolicy, seed: int = 7) -> Result:
    """One day under ``policy``; the baseline is a policy with no threshold and no interval."""
    rng = random.Random(seed)
    engine = TrailingEngine()
    prices = [rng.uniform(100, 4000) for _ in range(INSTRUMENTS)]
    sides = [Side.BUY if rng.random() < 0.6 else Side.SELL for _ in range(INSTRUMENTS)]
    rules = [TrailRule.percent(rng.choice([1.5, 2.0, 3.0])) for _ in range(INSTRUMENTS)]
    held = [Held() for _ in range(INSTRUMENTS)]
    armed_at = [0.0] * INSTRUMENTS
    lags: list[float] = []
    modifications = replaces = 0
    armed_seconds = 0.0

    def arm(i: int, now: float) -> None:
        p = round_down(prices[i], TICK)
        engine.arm(
            str(i),
            instrument=i,
            side=sides[i],
            product=Product.CNC,
            entry_price=p,
            tick_size=TICK,
            rule=rules[i],
        )
        held[i] = Held()
        armed_at[i] = now

    for i in range(INSTRUMENTS):
        arm(i, 0.0)
    sigma = 0.015 / math.sqrt(SECONDS)  # about 1.5 % a day
    for second in range(1, SECONDS + 1):
        now = float(second)
        for i in range(INSTRUMENTS):
            prices[i] *= math.exp(rng.gauss(0.0, sigma))
            ltp = round_down(prices[i], TICK)
            for event in engine.on_tick(Tick(i, ltp, ltp - TICK, ltp + TICK)):
                if isinstance(event, StopTriggered):
                    armed_seconds += now - armed_at[i]
                    arm(i, now)
                elif isinstance(event, StopMoved):
                    held[i].due = now  # a stop move wakes the manager
        for i in range(INSTRUMENTS):
            h = held[i]
            if h.pending is not None and h.pending[0] <= now:
                h.level, h.pending = h.pending[1], None
            stop = engine.stop(str(i))
            wanted = safety_level(sides[i], stop, TICK, BUFFER_PERCENT, BUFFER_TICKS)
            if h.pending is None and (h.level is None or (h.due is not None and h.due <= now)):
                h.due = None
                decision = decide(
                    side=sides[i],
                    wanted=wanted,
                    held=h.level,
                    held_quantity=1,
                    quantity=1,
                    modifications=h.modifications,
                    cap=CAP,
                    last_move=h.last_move,
                    now=now,
                    threshold=threshold_for(
                        stop, TICK, BUFFER_PERCENT, BUFFER_TICKS, policy.threshold_fraction
                    ),
                    policy=policy,
                )
                move, at = decision.move, decision.at
                if move is Move.WAIT:
                    h.due = at
                elif move is not Move.NONE:
                    if move is Move.MODIFY:
                        modifications += 1
                        h.modifications += 1
                    elif move is Move.REPLACE:
                        replaces += 1
                        h.modifications = 0
                    h.pending = (now + LATENCY, wanted)
                    h.last_move = now
            if h.level is not None:
                lags.append(abs(stop - h.level) / stop * 100.0)
    for i in range(INSTRUMENTS):
        armed_seconds += SECONDS - armed_at[i]
    return Result(lags, modifications, replaces, armed_seconds / 3600.0)


def describe(result: Result) -> tuple[float, float, float]:
    lags = sorted(result.lags)
    p95 = lags[min(len(lags) - 1, int(0.95 * len(lags)))]
    return statistics.median(lags), p95, result.modifications / result.protection_hours


def main() -> None:
    policy = SafetyPolicy()
    median, p95, per_hour = describe(run(policy))
    figures = f"median {median:.2f} %, p95 {p95:.2f} %, {per_hour:.1f} modifications per protection-hour"
    print(f"safety lag: {figures}")
    # The baseline: no interval, and a threshold of one tick (the floor of threshold_for).
    fast = run(replace(policy, min_interval=0.0, threshold_fraction=0.0))
    b_median, b_p95, b_per_hour = describe(fast)
    print(
        f"safety lag baseline (moved on every stop change): median {b_median:.2f} %, p95 {b_p95:.2f} %, "
        f"{b_per_hour:.1f} modifications per protection-hour"
    )


if __name__ == "__main__":
    main()
