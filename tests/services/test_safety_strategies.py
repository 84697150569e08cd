"""Each safety stop strategy against the simulator: place, read back, find when unrecorded, move, take
away, and what it looks like once it fired (a stop order fires into itself, a GTT into a new order)."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from tests.services.conftest import control
from tests.services.test_protection_flow import Rig, enter, wait_until
from trailstop_gui.models.domain import Product, Protection, SafetyKind, SafetyState, Side, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import OrderStatus, OrderType
from trailstop_gui.services.safety_strategies import (
    GTTStrategy,
    Reading,
    SafetyStrategy,
    Search,
    SLOrderStrategy,
    gtt_limit_price,
    strategy_for,
)
from trailstop_gui.simulator.runner import SimulatorHandle

CASES = [
    ("kite", Product.MIS, SafetyKind.SL_M),
    ("kite", Product.MIS, SafetyKind.SL),
    ("kite", Product.CNC, SafetyKind.GTT),
    ("upstox", Product.MIS, SafetyKind.GTT),
]
IDS = ["kite-SLM", "kite-SL", "kite-GTT", "upstox-GTT"]


def price(rig: Rig, ltp: float) -> None:
    rig.sim.set_price("NSE:INFY", ltp, bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2))


def record(
    store: ProtectionStore, p: Protection, kind: SafetyKind, order_id: str, level: float, price: float | None
) -> Protection:
    """What the manager writes once the broker took it."""
    return store.update_safety(
        p.id,
        safety_state=SafetyState.PLACED,
        safety_kind=kind,
        safety_order_id=order_id,
        safety_level=level,
        safety_price=price,
        safety_quantity=3,
    )


@pytest.mark.parametrize(("broker", "product", "kind"), CASES, ids=IDS)
def test_a_strategy_places_reads_finds_moves_takes_away_and_fires(
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    broker: str,
    product: Product,
    kind: SafetyKind,
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig = Rig(simulator, store, broker, qtbot)
    try:
        # TrailStop's own stop far below (10 %): only the strategy's object can fire here.
        pid = enter(rig, Side.BUY, product, TrailRule.percent(10.0))
        p = store.get(pid)
        assert not p.safety_enabled
        # The strategy alone moves this protection's broker stop here. The app's own safety manager,
        # asked by a reconcile to verify a protection whose stop the test records (safety off, a stop at
        # the broker), takes that stop away: in CI a reconcile landed mid-test and the SL-M read back as
        # cancelled. Shut down, it wakes no worker.
        rig.service.safety.shutdown()
        strategy = strategy_for(kind, rig.session.broker, 2.0, None)
        assert isinstance(strategy, SLOrderStrategy if kind.is_order else GTTStrategy)
        assert strategy.kind is kind and strategy.needs_last_price is (kind is SafetyKind.GTT)

        def read(q: Protection, order_id: str) -> Reading:
            return strategy.read(q, order_id, set)

        # Placed, then taken away: read back as gone, never as fired.
        first, _ = strategy.place(p, 1450.0, 3, 1500.0)
        strategy.cancel(first)
        gone = read(record(store, p, kind, first, 1450.0, None), first)
        assert not gone.live and gone.fired is None and gone.rejected is None

        # Placed and held: read back at its level and quantity; found again as if never recorded.
        order_id, limit = strategy.place(p, 1450.0, 3, 1500.0)
        if kind is SafetyKind.SL_M or (broker == "upstox" and kind is SafetyKind.GTT):
            assert limit is None  # an SL-M has no price; an Upstox GTT rule is a market order
        else:
            assert limit == gtt_limit_price(Side.SELL, 1450.0, 2.0, 0.05)
        unrecorded = store.update_safety(
            pid, safety_state=SafetyState.PLACING, safety_kind=kind, safety_order_id=None, safety_quantity=3
        )
        found = strategy.find_unrecorded(unrecorded, Search(set(), strategy.own_order, (3,)))
        assert found is not None and (found.order_id, found.level, found.quantity) == (order_id, 1450.0, 3)
        assert found.fired is None
        if not kind.is_order:  # a GTT another protection holds is not this one's (a stop order has our tag)
            assert strategy.find_unrecorded(unrecorded, Search({order_id}, strategy.own_order, (3,))) is None
        p = record(store, p, kind, order_id, 1450.0, limit)
        held = read(p, order_id)
        assert held.live and (held.level, held.quantity) == (1450.0, 3)

        # Moved up: the broker holds the new level.
        moved_limit = strategy.modify(p, order_id, 1460.0, 3, 1500.0)
        assert moved_limit == (None if limit is None else gtt_limit_price(Side.SELL, 1460.0, 2.0, 0.05))
        p = record(store, p, kind, order_id, 1460.0, moved_limit)
        assert read(p, order_id).level == 1460.0

        # The price falls through it: it fires, and its order fills for the whole quantity.
        price(rig, 1455.0)

        def filled() -> bool:
            fired = read(p, order_id).fired
            return fired is not None and fired.status is OrderStatus.COMPLETE

        wait_until(filled, 10, "the safety stop to fire and fill", qtbot)
        fired = read(p, order_id).fired
        assert fired is not None and fired.filled_quantity == 3 and fired.side is Side.SELL
        if kind.is_order:
            assert fired.order_id == order_id and fired.tag == p.safety_tag  # it fired into itself
        else:
            assert fired.order_id != order_id and not fired.tag  # a new, untagged order
            if broker == "kite":
                assert fired.order_type is OrderType.LIMIT
                # Kite forgets a deleted GTT: its order is found in the book (unless another's exit).
                assert isinstance(strategy, GTTStrategy)
                in_book = strategy.fired_in_book(p, set())
                assert in_book is not None and in_book.order_id == fired.order_id
                assert strategy.fired_in_book(p, {fired.order_id}) is None
    finally:
        rig.close()


def test_a_stop_order_the_exchange_rejects_reads_as_rejected(
    simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot
) -> None:
    """An SL-M on an option: accepted with an id, then REJECTED by the exchange (16052)."""
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig = Rig(simulator, store, "kite", qtbot)
    try:
        pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(10.0))
        p = store.get(pid)
        strategy: SafetyStrategy | None = strategy_for(SafetyKind.SL_M, rig.session.broker, 2.0, None)
        assert strategy is not None
        control(
            simulator,
            "fault",
            {"fault": "reject_orders", "count": 1, "reason": "16052: Function not available"},
        )
        order_id, _ = strategy.place(p, 1450.0, 3, 1500.0)
        p = record(store, p, SafetyKind.SL_M, order_id, 1450.0, None)
        wait_until(lambda: strategy.read(p, order_id, set).rejected is not None, 10, "the rejection", qtbot)
        reading = strategy.read(p, order_id, set)
        assert not reading.live and reading.fired is None and "16052" in (reading.rejected or "")
    finally:
        rig.close()
