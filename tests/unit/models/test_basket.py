"""Basket MTM arithmetic (realised + unrealised, lot sizes, shorts); lock-and-trail (the lock never falls)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trailstop_gui.models.basket import (
    BREACH_LOCK,
    BREACH_MAX_LOSS,
    BasketBreached,
    BasketEngine,
    BasketRules,
    Leg,
    LockRaised,
    exit_order,
    mtm,
    units,
)
from trailstop_gui.models.domain import Side, Tick

NIFTY_CE = 12345
NIFTY_PE = 12346
INFY = 408065


def test_mtm_of_longs_and_shorts_with_lot_sizes_and_realised() -> None:
    legs = [
        Leg(1, NIFTY_CE, Side.SELL, units(2, 75), 120.0),  # 2 lots of 75 written at 120
        Leg(2, NIFTY_PE, Side.BUY, units(1, 75), 80.0),
        Leg(3, INFY, Side.BUY, 10, 1500.0),
    ]
    prices = {NIFTY_CE: 100.0, NIFTY_PE: 70.0, INFY: 1510.0}
    # short: (120 - 100) x 150 = 3000; long put: (70 - 80) x 75 = -750; INFY: 10 x 10 = 100; realised 250
    assert mtm(legs, prices, realised=250.0) == pytest.approx(3000 - 750 + 100 + 250)
    assert mtm(legs, {INFY: 1490.0}) == pytest.approx(-100)  # legs without a price yet count 0
    assert Leg(4, 1, Side.BUY, 1, 5000.0, multiplier=100).unrealised(5010.0) == pytest.approx(1000)


def test_units_and_bad_lots() -> None:
    assert units(3, 75) == 225
    with pytest.raises(ValueError, match="lots"):
        units(0, 75)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "rules: a basket needs"),
        ({"lock_at": 1000}, "lock profit"),
        ({"lock_at": 1000, "lock_profit": 1500}, "lock profit"),
        ({"max_loss": 500, "trail_every": 100, "trail_by": 50}, "trail every"),
        ({"lock_at": 1000, "lock_profit": 500, "trail_every": 100}, "trail"),
        ({"max_loss": -5}, "max loss"),
        ({"max_loss": "lots"}, "max loss"),
    ],
)
def test_bad_rules_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BasketRules(**fields)  # type: ignore[arg-type]


def test_rules_round_trip() -> None:
    rules = BasketRules(max_loss=2000, lock_at=3000, lock_profit=1000, trail_every=500, trail_by=250)
    assert BasketRules.from_dict(rules.to_dict()) == rules
    with pytest.raises(ValueError, match="unknown"):
        BasketRules.from_dict({"max_loss": 1, "stop": 2})


def test_lock_then_trail_then_breach() -> None:
    engine = BasketEngine()
    rules = BasketRules(max_loss=2000, lock_at=3000, lock_profit=1000, trail_every=500, trail_by=250)
    engine.arm(7, rules, [Leg(1, INFY, Side.BUY, 100, 1000.0)])
    assert engine.on_tick(Tick(INFY, 1025.0)) == []  # MTM 2500: below the lock
    assert engine.on_tick(Tick(INFY, 1030.0)) == [LockRaised(7, None, 1000.0)]  # 3000 locks 1000
    # 4500 is three steps of 500 above 3000: the lock rises 3 x 250
    assert engine.on_tick(Tick(INFY, 1045.0)) == [LockRaised(7, 1000.0, 1750.0)]
    assert engine.on_tick(Tick(INFY, 1040.0)) == []  # falling back does not lower it
    assert engine.on_tick(Tick(INFY, 1018.0)) == []  # 1800, above the lock
    assert engine.on_tick(Tick(INFY, 1017.0)) == [
        BasketBreached(7, pytest.approx(1700.0), 1750.0, BREACH_LOCK)
    ]
    assert engine.on_tick(Tick(INFY, 900.0)) == []  # a basket breaches once


def test_max_loss_of_a_short_basket() -> None:
    engine = BasketEngine()
    engine.arm(1, BasketRules(max_loss=1500), [Leg(1, NIFTY_CE, Side.SELL, units(1, 75), 100.0)])
    assert engine.on_tick(Tick(NIFTY_CE, 119.0)) == []  # -1425
    events = engine.on_tick(Tick(NIFTY_CE, 120.0))  # -1500
    assert events == [BasketBreached(1, pytest.approx(-1500.0), -1500.0, BREACH_MAX_LOSS)]


def test_realised_counts_and_bad_ticks_are_ignored() -> None:
    engine = BasketEngine()
    engine.arm(1, BasketRules(max_loss=1000), [Leg(1, INFY, Side.BUY, 10, 100.0)], realised=-950.0)
    assert engine.on_tick(Tick(INFY, float("nan"))) == []
    assert engine.on_tick(Tick(INFY, 0.0)) == []
    assert engine.on_tick(Tick(INFY, 96.0)) == []  # -950 - 40
    assert engine.on_tick(Tick(INFY, 94.0))[0].reason == BREACH_MAX_LOSS  # type: ignore[union-attr]


def test_a_stored_lock_survives_a_restart_and_disarm_forgets() -> None:
    engine = BasketEngine()
    rules = BasketRules(lock_at=3000, lock_profit=1000, trail_every=500, trail_by=250)
    engine.arm(1, rules, [Leg(1, INFY, Side.BUY, 100, 1000.0)], best=4100.0, lock=1500.0)
    assert engine.on_tick(Tick(INFY, 1030.0)) == []  # 3000 is above the stored lock of 1500
    assert engine.on_tick(Tick(INFY, 1014.0))[0] == BasketBreached(
        1, pytest.approx(1400.0), 1500.0, BREACH_LOCK
    )
    engine.disarm(1)
    assert engine.state(1) is None and engine.on_tick(Tick(INFY, 1.0)) == []


def test_one_tick_reaches_only_its_baskets() -> None:
    engine = BasketEngine()
    engine.arm(1, BasketRules(max_loss=10), [Leg(1, INFY, Side.BUY, 1, 100.0)])
    engine.arm(2, BasketRules(max_loss=10), [Leg(2, NIFTY_CE, Side.BUY, 1, 100.0)])
    assert [e.basket for e in engine.on_tick(Tick(INFY, 80.0))] == [1]  # type: ignore[union-attr]


def test_exit_order_is_shorts_first() -> None:
    legs = [
        Leg(1, NIFTY_PE, Side.BUY, 75, 50.0),
        Leg(2, NIFTY_CE, Side.SELL, 75, 120.0),
        Leg(3, INFY, Side.BUY, 10, 1500.0),
        Leg(4, NIFTY_PE, Side.SELL, 150, 90.0),
    ]
    assert exit_order(legs) == [4, 2, 3, 1]


RULES = st.builds(
    lambda lock_at, share, every, by: BasketRules(
        lock_at=lock_at, lock_profit=lock_at * share, trail_every=every, trail_by=by
    ),
    st.floats(100, 10_000),
    st.floats(0.01, 1.0),
    st.floats(10, 5_000),
    st.floats(1, 5_000),
)


@given(RULES, st.lists(st.floats(1, 5_000), min_size=1, max_size=60))
def test_the_lock_never_decreases(rules: BasketRules, path: list[float]) -> None:
    engine = BasketEngine()
    state = engine.arm(1, rules, [Leg(1, INFY, Side.BUY, 10, 1000.0)])
    locks: list[float] = []
    for price in path:
        for event in engine.on_tick(Tick(INFY, price)):
            if isinstance(event, LockRaised):
                assert event.old is None or event.new > event.old
        if state.lock is not None:
            locks.append(state.lock)
        if state.breached:
            break
    assert locks == sorted(locks)
    assert all(lock >= rules.lock_profit for lock in locks)  # type: ignore[operator]


def test_a_basket_is_judged_only_once_every_leg_has_a_price() -> None:
    engine = BasketEngine()
    legs = [Leg(1, INFY, Side.BUY, 10, 100.0), Leg(2, NIFTY_CE, Side.SELL, 75, 50.0)]
    engine.arm(1, BasketRules(max_loss=100), legs)
    assert engine.on_tick(Tick(INFY, 80.0)) == []  # -200 on one leg, the other not priced yet
    events = engine.on_tick(Tick(NIFTY_CE, 48.0))  # +150 on the short: -50 in all
    assert events == []
    assert engine.on_tick(Tick(NIFTY_CE, 49.5))[0].reason == BREACH_MAX_LOSS  # type: ignore[union-attr]
