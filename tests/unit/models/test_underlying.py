"""A stop on the underlying: the engine watches its price in its terms; the view sets the side."""

from __future__ import annotations

import pytest

from tests.factories import unsaved_protection
from trailstop_gui.models.domain import Product, Protection, Side, Tick, TrailRule
from trailstop_gui.models.engine import StopTriggered, TrailingEngine
from trailstop_gui.models.underlying import UnderlyingRule, engine_view, initial_stop

NIFTY = 256265
CALL = 9001


POINTS_50 = TrailRule.points(50)


def option(side: Side = Side.BUY, rule: TrailRule = POINTS_50) -> Protection:
    return unsaved_protection(
        75,
        instrument=str(CALL),
        symbol="NIFTY24300CE",
        exchange="NFO",
        side=side,
        product=Product.NRML,
        entry_price=200.0,
        rule=rule,
        stop=None,
        peak=None,
        exit_tag="T1",
    )


def test_a_bought_call_trails_on_the_index_and_fires_on_its_fall() -> None:
    p = option()
    rule = UnderlyingRule(NIFTY, "NIFTY 50", "NSE", Side.BUY, 0.05, 24350.0)
    stop = initial_stop(p, rule)
    assert stop == 24300.0
    seen = engine_view(p.with_changes(stop=stop, peak=24350.0), rule)
    assert (seen.engine_instrument, seen.side, seen.entry_price) == (NIFTY, Side.BUY, 24350.0)
    engine = TrailingEngine()
    engine.arm_protection(seen)
    assert engine.on_tick(Tick(CALL, 10.0)) == []  # the option's own price does nothing
    engine.on_tick(Tick(NIFTY, 24450.0))
    assert engine.stop("1") == 24400.0
    events = engine.on_tick(Tick(NIFTY, 24399.0))
    assert [type(e) for e in events] == [StopTriggered]


def test_a_bought_put_is_protected_against_the_index_rising() -> None:
    p = option(rule=TrailRule.percent(0.5))
    rule = UnderlyingRule(NIFTY, "NIFTY 50", "NSE", Side.SELL, 0.05, 24000.0)
    stop = initial_stop(p, rule)
    assert stop == 24120.0
    engine = TrailingEngine()
    engine.arm_protection(engine_view(p.with_changes(stop=stop, peak=24000.0), rule))
    engine.on_tick(Tick(NIFTY, 23800.0))
    assert engine.stop("1") == pytest.approx(23919.0)  # trails down with the index
    assert engine.on_tick(Tick(NIFTY, 23900.0)) == []
    assert [type(e) for e in engine.on_tick(Tick(NIFTY, 23919.0))] == [StopTriggered]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"view": "sideways"}, "view"),
        ({"tick_size": 0}, "underlying tick size"),
        ({"reference": -1}, "underlying price"),
        ({"instrument": " "}, "underlying"),
    ],
)
def test_bad_rules_name_the_field(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "instrument": NIFTY,
        "symbol": "NIFTY 50",
        "exchange": "NSE",
        "view": "BUY",
        "tick_size": 0.05,
        "reference": 24000.0,
    }
    with pytest.raises(ValueError, match=message):
        UnderlyingRule(**{**base, **fields})  # type: ignore[arg-type]
