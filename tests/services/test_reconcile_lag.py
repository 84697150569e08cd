"""The reconciler against positions that trail fills (issue 13 item 3), end to end on both brokers.

A protection's quantity follows its position only when two reads some seconds apart agree: one read that
trails a fill never shrinks it, and an exit meanwhile is sized from the live quantity at send time.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from tests.services.conftest import control
from tests.services.test_exit_bad_day import net_position
from tests.services.test_protection_flow import RIG_POLICY, Rig, enter, wait_until
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.brokers.base import OrderRequest, OrderType
from trailstop_gui.services.exit_executor import RetryPolicy
from trailstop_gui.services.position_book import POSITIONS_LAG
from trailstop_gui.services.protection_service import EntryRequest
from trailstop_gui.services.reconciler import FLAT_CONFIRM_SECONDS
from trailstop_gui.services.resize_confirmation import Change

# The app's reconcile waits at half scale: two reads FLAT_CONFIRM apart (2 s in the app:
# FLAT_CONFIRM_SECONDS), a positions read trusted POSITIONS_LAG after a fill (5 s: position_book).
SCALE = 0.5
FLAT_CONFIRM = FLAT_CONFIRM_SECONDS * SCALE
POLICY = replace(RIG_POLICY, flat_confirm=FLAT_CONFIRM, positions_lag=POSITIONS_LAG * SCALE)
LAG = 1.5 * SCALE  # how far the positions (and order book) trail the fills: within FLAT_CONFIRM


@pytest.fixture
def rig_policy() -> RetryPolicy:
    return POLICY


def fault(rig: Rig, **spec: Any) -> None:
    control(rig.sim, "fault", spec)


def held(rig: Rig) -> int:
    """INFY MIS as the app's own (lagging) positions read shows it."""
    return sum(p.quantity for p in rig.session.broker.positions() if p.symbol == "INFY")


def sell_outside(rig: Rig, quantity: int) -> float:
    """The trader sells INFY MIS on the broker's own site; returns when the fill was seen."""
    instrument, symbol = rig.instrument("NSE:INFY")
    broker = rig.session.broker
    order_id = broker.place_order(
        OrderRequest(
            symbol=symbol,
            exchange="NSE",
            instrument=instrument,
            side=Side.SELL,
            quantity=quantity,
            product=Product.MIS,
            order_type=OrderType.MARKET,
        )
    )
    wait_until(lambda: broker.order(order_id).is_final, what="the outside sale to fill")
    return time.monotonic()


def book_settled(rig: Rig) -> None:
    """Wait until the position book vouches for the account (the stream up long enough before a read) and
    its own rechecks, which read positions again (every 2 s in the app) until then, have stopped."""
    book = rig.service.books[rig.account_id]

    def settled() -> bool:
        rig.service.reconcile(rig.account_id)
        rig.service.reconciles.waitForDone(10_000)
        return book.state().corrected_at is not None and rig.account_id not in rig.service._book_rechecks

    wait_until(settled, timeout=15, what="the position book to settle", qtbot=rig.qtbot)


def test_a_read_trailing_the_rest_of_a_partly_filled_entry_does_not_shrink_it(rig: Rig) -> None:
    """Found by the chaos run: an entry for 30 filled 10, then the rest; a positions read that trailed the
    second fill shrank the protection 30 -> 10, and its exit sold 10 and left 20 open and unprotected."""
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    fault(rig, fault="book_lag", seconds=LAG)
    fault(rig, fault="partial_fill", ratio=1 / 3, count=1, rest_after=LAG + 1.0 * SCALE)
    instrument, symbol = rig.instrument("NSE:INFY")
    pid = rig.service.place_entry(
        EntryRequest(
            account_id=rig.account_id,
            instrument=instrument,
            symbol=symbol,
            exchange="NSE",
            side=Side.BUY,
            quantity=30,
            product=Product.MIS,
            tick_size=0.05,
            rule=TrailRule.percent(2.0),
        )
    ).id
    # The order-update stream is not late: the protection covers the 30 as soon as the rest fills.
    wait_until(
        lambda: rig.store.get(pid).filled_quantity == 30, what="the rest of the entry", qtbot=rig.qtbot
    )
    report = rig.service.reconciler.reconcile(rig.account_id, rig.session.broker)
    assert report.resized == [] and rig.store.get(pid).filled_quantity == 30
    assert report.unconfirmed == [pid]  # the read did trail the second fill: 10 of 30, seen once
    # Once the positions show the fill, the sighting is forgotten: nothing was ever resized.
    wait_until(lambda: held(rig) == 30, what="the positions to show the fill")
    report = rig.service.reconciler.reconcile(rig.account_id, rig.session.broker)
    assert report.unconfirmed == [] and rig.service.reconciler.resizes.pending(pid) == []
    assert [e.kind for e in rig.store.events(protection_id=pid, kinds=["quantity_changed"])] == []
    fault(rig, fault="clear", kind="book_lag")
    rig.sim.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    exits = rig.sim_orders(rig.store.get(pid).exit_tag)
    assert sum(o["filled_quantity"] for o in exits if o["transaction_type"] == "SELL") == 30
    assert net_position(rig) == 0


def test_an_exit_before_a_shrink_is_confirmed_sells_only_what_is_held(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))  # 3 held
    sell_outside(rig, 2)
    # The service's reconcile (on the outside fill) has seen 1 of 3 once: not applied yet.
    wait_until(
        lambda: rig.service.reconciler.resizes.pending(pid) == [Change.SHRINK],
        what="the shrink to be seen once",
        qtbot=rig.qtbot,
    )
    assert rig.store.get(pid).filled_quantity == 3
    rig.sim.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    exits = rig.sim_orders(rig.store.get(pid).exit_tag)
    assert [(o["transaction_type"], o["quantity"]) for o in exits] == [("SELL", 1)]
    assert net_position(rig) == 0  # never short


def test_a_sale_outside_is_followed_by_a_second_read_seconds_later(rig: Rig) -> None:
    """No reconcile is asked for here: the service's own (on the outside fill) sees the sale once and
    reconciles again FLAT_CONFIRM later, not at the 30 s timer."""
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    book_settled(rig)
    sold_at = sell_outside(rig, 2)
    wait_until(
        lambda: rig.store.get(pid).filled_quantity == 1,
        timeout=FLAT_CONFIRM + 8,
        what="the protection to follow the sale",
        qtbot=rig.qtbot,
    )
    assert time.monotonic() - sold_at >= FLAT_CONFIRM * 0.75  # two reads apart, not one
    (change,) = rig.store.events(protection_id=pid, kinds=["quantity_changed"])
    assert change.message == "position is 1, was 3"
    assert rig.status(pid) is Status.OPEN
