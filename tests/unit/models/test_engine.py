"""TrailingEngine: hand-worked cases and Hypothesis properties over random price paths."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailstop_gui.models.domain import Product, Side, Tick, TrailRule, on_grid
from trailstop_gui.models.engine import StopMoved, StopTriggered, TrailingEngine

INFY = 408065


def arm(engine: TrailingEngine, key: str = "p1", **overrides: object) -> float:
    params: dict[str, object] = dict(
        instrument=INFY,
        side=Side.BUY,
        product=Product.MIS,
        entry_price=100.0,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
    )
    params.update(overrides)
    return engine.arm(key, **params)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- hand-worked cases


def test_long_percent_initial_stop_and_trail_on_bid() -> None:
    engine = TrailingEngine()
    assert arm(engine) == 98.00
    events = engine.on_tick(Tick(INFY, ltp=101.0, bid=100.90, ask=101.05))
    # 100.90 - 2% = 98.882, rounded down onto the 0.05 grid.
    assert events == [StopMoved("p1", 98.00, 98.85)]
    assert engine.stop("p1") == 98.85


def test_value_already_on_grid_stays_there() -> None:
    engine = TrailingEngine()
    assert arm(engine, entry_price=100.0, rule=TrailRule.percent(2.0)) == 98.0  # not 97.95
    assert arm(engine, "s", side=Side.SELL, entry_price=100.0, rule=TrailRule.percent(2.0)) == 102.0


def test_short_points_rounds_up_and_trails_on_ask() -> None:
    engine = TrailingEngine()
    assert arm(engine, side=Side.SELL, rule=TrailRule.points(1.23)) == 101.25
    events = engine.on_tick(Tick(INFY, ltp=99.0, bid=98.95, ask=99.10))
    assert events == [StopMoved("p1", 101.25, 100.35)]  # 99.10 + 1.23 = 100.33 -> 100.35


def test_mis_ignores_a_spike_in_ltp_alone() -> None:
    engine = TrailingEngine()
    arm(engine)
    assert engine.on_tick(Tick(INFY, ltp=110.0, bid=100.0, ask=100.1)) == []
    assert engine.stop("p1") == 98.0


def test_mis_long_ignores_a_bogus_bid_above_ltp() -> None:
    # A bid of 1e12 once moved a long's stop to 9.8e11 (issue 13 item 10): a long trails on min(bid, LTP).
    engine = TrailingEngine()
    arm(engine)
    assert engine.on_tick(Tick(INFY, ltp=101.0, bid=1e12, ask=101.05)) == [StopMoved("p1", 98.0, 98.95)]
    assert engine.stop("p1") == 98.95


def test_mis_short_ignores_a_bogus_ask_below_ltp() -> None:
    engine = TrailingEngine()
    arm(engine, side=Side.SELL)  # stop 102.00
    assert engine.on_tick(Tick(INFY, ltp=99.0, bid=98.95, ask=0.05)) == [StopMoved("p1", 102.0, 101.0)]
    assert engine.stop("p1") == 101.0


def test_cnc_trails_on_ltp() -> None:
    engine = TrailingEngine()
    arm(engine, product=Product.CNC)
    assert engine.on_tick(Tick(INFY, ltp=110.0, bid=100.0, ask=100.1)) == [StopMoved("p1", 98.0, 107.8)]


def test_missing_or_bad_bid_falls_back_to_ltp() -> None:
    engine = TrailingEngine()
    arm(engine)
    assert engine.on_tick(Tick(INFY, ltp=105.0, bid=0.0)) == [StopMoved("p1", 98.0, 102.9)]
    assert engine.on_tick(Tick(INFY, ltp=106.0, bid=None)) == [StopMoved("p1", 102.9, 103.85)]


def test_trigger_fires_once_and_leaves_engine() -> None:
    engine = TrailingEngine()
    arm(engine)
    assert engine.on_tick(Tick(INFY, ltp=98.0, bid=97.95, ask=98.05)) == [StopTriggered("p1", 98.0, 98.0)]
    assert not engine.is_armed("p1")
    assert engine.on_tick(Tick(INFY, ltp=97.0)) == []


def test_gap_through_stop_triggers_at_once() -> None:
    engine = TrailingEngine()
    arm(engine)
    engine.on_tick(Tick(INFY, ltp=101.0, bid=100.9))
    events = engine.on_tick(Tick(INFY, ltp=90.0, bid=89.9, ask=90.1))
    assert events == [StopTriggered("p1", 90.0, 98.85)]


def test_trigger_checked_before_trail_on_same_tick() -> None:
    engine = TrailingEngine()
    arm(engine, side=Side.SELL, product=Product.MIS)  # stop 102.00
    # LTP through the stop while the ask would have lowered it: the trigger wins.
    assert engine.on_tick(Tick(INFY, ltp=102.0, bid=90.0, ask=90.05)) == [StopTriggered("p1", 102.0, 102.0)]


@pytest.mark.parametrize("ltp", [0.0, -1.0, math.nan, math.inf])
def test_bad_ticks_are_ignored(ltp: float) -> None:
    engine = TrailingEngine()
    arm(engine)
    assert engine.on_tick(Tick(INFY, ltp=ltp, bid=200.0, ask=200.0)) == []
    assert engine.is_armed("p1") and engine.stop("p1") == 98.0


def test_other_instruments_are_not_touched() -> None:
    engine = TrailingEngine()
    arm(engine)
    assert engine.on_tick(Tick(1234, ltp=1.0)) == []
    assert engine.instruments() == {INFY}


def test_activation_holds_stop_until_move_reached() -> None:
    engine = TrailingEngine()
    arm(engine, product=Product.CNC, rule=TrailRule.percent(2.0, activation=3.0))
    assert engine.on_tick(Tick(INFY, ltp=102.9)) == []  # 2.9% move: not yet
    assert engine.on_tick(Tick(INFY, ltp=103.0)) == [StopMoved("p1", 98.0, 100.90)]  # 103 - 2.06 = 100.94


def test_ladder_moves_in_steps() -> None:
    engine = TrailingEngine()
    arm(engine, product=Product.CNC, rule=TrailRule.points(2.0, ladder_step=1.0, ladder_raise=0.5))
    assert engine.stop("p1") == 98.0
    assert engine.on_tick(Tick(INFY, ltp=100.95)) == []
    assert engine.on_tick(Tick(INFY, ltp=101.0)) == [StopMoved("p1", 98.0, 98.5)]
    assert engine.on_tick(Tick(INFY, ltp=103.4)) == [StopMoved("p1", 98.5, 99.5)]


def test_breakeven_lifts_stop_to_entry() -> None:
    engine = TrailingEngine()
    arm(engine, product=Product.CNC, rule=TrailRule.percent(5.0, breakeven=1.0))  # stop 95.00
    assert engine.on_tick(Tick(INFY, ltp=100.5)) == [StopMoved("p1", 95.0, 95.45)]
    assert engine.on_tick(Tick(INFY, ltp=101.0)) == [StopMoved("p1", 95.45, 100.0)]


def test_breakeven_rounds_towards_profit() -> None:
    engine = TrailingEngine()
    arm(engine, product=Product.CNC, entry_price=100.03, rule=TrailRule.percent(5.0, breakeven=1.0))
    events = engine.on_tick(Tick(INFY, ltp=101.1))
    assert events[-1].new == 100.05  # type: ignore[union-attr]


def test_target_exits_in_profit_on_the_same_path() -> None:
    engine = TrailingEngine()
    arm(engine, side=Side.SELL, product=Product.CNC, rule=TrailRule.points(2.0, target=3.0))
    assert engine.target("p1") == 97.0
    events = engine.on_tick(Tick(INFY, ltp=96.9))
    assert events == [StopTriggered("p1", 96.9, 102.0, reason="target")]
    assert not engine.is_armed("p1")


def test_resume_never_loosens_a_stored_stop() -> None:
    engine = TrailingEngine()
    assert arm(engine, stop=99.5) == 99.5
    assert arm(engine, stop=90.0) == 98.0  # a stored stop looser than the rule's is ignored


def test_rearm_replaces_previous() -> None:
    engine = TrailingEngine()
    arm(engine)
    arm(engine, instrument=5)
    assert engine.instruments() == {5} and len(engine) == 1
    assert engine.disarm("p1") and not engine.disarm("p1")


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("entry price", {"entry_price": 0}),
        ("tick size", {"tick_size": 0}),
        ("tick size", {"tick_size": -0.05}),
        ("side", {"side": "HOLD"}),
        ("product", {"product": "BO"}),
    ],
)
def test_bad_input_names_the_field(field: str, overrides: dict[str, object]) -> None:
    engine = TrailingEngine()
    with pytest.raises(ValueError, match=field):
        arm(engine, **overrides)
    assert len(engine) == 0


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: TrailRule.percent(0), "rule value"),
        (lambda: TrailRule.points(-1), "rule value"),
        (lambda: TrailRule.percent(100), "rule value"),
        (lambda: TrailRule.percent(2, activation=0), "activation"),
        (lambda: TrailRule.points(2, ladder_step=1), "ladder"),
        (lambda: TrailRule.parse("percent"), "rule"),
        (lambda: TrailRule.parse("bogus:2"), "rule kind"),
    ],
)
def test_bad_rules_name_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()  # type: ignore[operator]


# ----------------------------------------------------------------------------- properties

TICK_SIZES = st.sampled_from([0.05, 0.01, 0.1, 0.25, 1.0, 0.0025])


@st.composite
def rules(draw: st.DrawFn) -> TrailRule:
    kind = draw(st.sampled_from(["percent", "points"]))
    value = draw(st.floats(0.1, 20.0)) if kind == "percent" else draw(st.floats(0.05, 20.0))
    options: dict[str, float] = {}
    if draw(st.booleans()):
        options["activation"] = draw(st.floats(0.1, 10.0))
    if draw(st.booleans()):
        options["ladder_step"] = draw(st.floats(0.1, 5.0))
        options["ladder_raise"] = draw(st.floats(0.05, 5.0))
    if draw(st.booleans()):
        options["breakeven"] = draw(st.floats(0.1, 10.0))
    if draw(st.booleans()):
        options["target"] = draw(st.floats(0.5, 30.0))
    return TrailRule(kind, value, **options)  # type: ignore[arg-type]


@st.composite
def paths(draw: st.DrawFn) -> list[Tick]:
    start = draw(st.floats(10.0, 5000.0))
    steps = draw(st.lists(st.floats(-0.03, 0.03), min_size=1, max_size=120))
    spread = draw(st.floats(0.0, 0.004))
    ticks = []
    price = start
    for step in steps:
        price = max(0.5, price * (1 + step))
        bid = price * (1 - spread) if draw(st.booleans()) else None
        ask = price * (1 + spread) if bid is not None else None
        ticks.append(Tick(INFY, ltp=price, bid=bid, ask=ask))
    return ticks


scenarios = st.tuples(
    st.sampled_from(list(Side)), st.sampled_from(list(Product)), TICK_SIZES, rules(), paths()
)


def run_path(side: Side, product: Product, tick: float, rule: TrailRule, ticks: list[Tick]):  # type: ignore[no-untyped-def]
    engine = TrailingEngine()
    entry = ticks[0].ltp
    stops = [
        engine.arm(
            "p", instrument=INFY, side=side, product=product, entry_price=entry, tick_size=tick, rule=rule
        )
    ]
    history = []
    for t in ticks:
        before = engine.stop("p") if engine.is_armed("p") else None
        events = engine.on_tick(t)
        history.append((t, before, events))
        if engine.is_armed("p"):
            stops.append(engine.stop("p"))
    return engine, entry, stops, history


@settings(max_examples=300, deadline=None)
@given(scenarios)
def test_stop_only_moves_in_traders_favour(scenario) -> None:  # type: ignore[no-untyped-def]
    side, product, tick, rule, ticks = scenario
    _, _, stops, _ = run_path(side, product, tick, rule, ticks)
    pairs = list(zip(stops, stops[1:], strict=False))
    if side is Side.BUY:
        assert all(b >= a for a, b in pairs)
    else:
        assert all(b <= a for a, b in pairs)


@settings(max_examples=300, deadline=None)
@given(scenarios)
def test_every_stop_is_on_the_tick_grid(scenario) -> None:  # type: ignore[no-untyped-def]
    side, product, tick, rule, ticks = scenario
    _, _, stops, history = run_path(side, product, tick, rule, ticks)
    assert all(on_grid(s, tick) for s in stops)
    moved = [e.new for _, _, events in history for e in events if isinstance(e, StopMoved)]
    assert all(on_grid(s, tick) for s in moved)


@settings(max_examples=300, deadline=None)
@given(scenarios)
def test_fires_exactly_once_and_only_when_ltp_crosses(scenario) -> None:  # type: ignore[no-untyped-def]
    side, product, tick, rule, ticks = scenario
    engine, _, _, history = run_path(side, product, tick, rule, ticks)
    fired = [
        (i, e) for i, (_, _, events) in enumerate(history) for e in events if isinstance(e, StopTriggered)
    ]
    assert len(fired) <= 1
    first_cross = next(
        (
            i
            for i, (t, before, _) in enumerate(history)
            if before is not None and (t.ltp <= before if side is Side.BUY else t.ltp >= before)
        ),
        None,
    )
    stop_fires = [(i, e) for i, e in fired if e.reason == "stop"]
    if stop_fires:
        index, event = stop_fires[0]
        t, before, _ = history[index]
        assert index == first_cross, "fired on a tick that did not cross the stop, or late"
        assert event.stop == before and event.ltp == t.ltp
    elif first_cross is not None:
        # Only an earlier target exit may pre-empt a stop that the LTP crossed.
        assert fired and fired[0][1].reason == "target" and fired[0][0] < first_cross
    if fired:
        assert not engine.is_armed("p")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Side)), TICK_SIZES, rules(), paths())
def test_mis_trails_on_quote_cnc_on_ltp(side: Side, tick: float, rule: TrailRule, ticks: list[Tick]) -> None:
    # An MIS position must trail exactly as a CNC one would if the CNC's LTP were MIS's bid (long) or
    # ask (short): LTP moves alone never move an MIS stop.
    mis_engine, cnc_engine = TrailingEngine(), TrailingEngine()
    entry = ticks[0].ltp
    for engine, product in ((mis_engine, Product.MIS), (cnc_engine, Product.CNC)):
        engine.arm(
            "p", instrument=INFY, side=side, product=product, entry_price=entry, tick_size=tick, rule=rule
        )
    for t in ticks:
        trail_price = (t.bid if side is Side.BUY else t.ask) or t.ltp
        mis_engine.on_tick(t)
        cnc_engine.on_tick(Tick(INFY, ltp=trail_price))
        # Triggers use each one's own LTP, so the comparison ends when either fires.
        if not (mis_engine.is_armed("p") and cnc_engine.is_armed("p")):
            break
        assert mis_engine.stop("p") == cnc_engine.stop("p")
