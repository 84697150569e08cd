"""The live position book end to end against the simulator (issue 17): exits sized from the order-update
stream when the book vouches for the position, and the hard cases (positions lagging, a sale outside the
app with its updates repeated and out of order, a lost reply) still ending with exactly one exit."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.services.conftest import control
from tests.services.test_exit_bad_day import POLICY, SCALE, kinds, net_position
from tests.services.test_protection_flow import Rig, enter, wait_until
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.brokers.base import OrderRequest, OrderType
from trailstop_gui.services.exit_executor import RetryPolicy

# test_exit_bad_day's policy: the app's waits at half scale (SCALE), the book's positions lag too (the app's
# POSITIONS_LAG, 5 s: the book vouches once the stream was up that long before a read, read again every
# 2 s until then), and the simulator's lags here with them.
POSITIONS_LAG = POLICY.positions_lag


@pytest.fixture
def rig_policy() -> RetryPolicy:
    return POLICY


def fault(rig: Rig, **spec: Any) -> None:
    control(rig.sim, "fault", spec)


def vouched(rig: Rig, pid: int, quantity: int) -> None:
    """Wait until the account's book vouches for the protection's position (reads settle it within ~2
    POSITIONS_LAG)."""
    book = rig.service.books[rig.account_id]
    wait_until(lambda: book.quantity(rig.store.get(pid)) == quantity, 25.0, "the book to vouch", rig.qtbot)


def sell_outside(rig: Rig, quantity: int) -> None:
    """The trader sells part of the intraday long on the broker's own site (no tag: not the app's)."""
    instrument, tradingsymbol = rig.instrument("NSE:INFY")
    rig.session.broker.place_order(
        OrderRequest(
            symbol=tradingsymbol,
            exchange="NSE",
            instrument=instrument,
            side=Side.SELL,
            quantity=quantity,
            product=Product.MIS,
            order_type=OrderType.MARKET,
        )
    )
    wait_until(
        lambda: any(o["tag"] in (None, "") and o["status"] == "COMPLETE" for o in rig.sim_orders()),
        what="the outside sale to fill",
    )


def test_an_exit_is_sized_from_the_book_while_positions_still_show_it_flat(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    entered = time.monotonic()
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    vouched(rig, pid, 3)
    # Positions answer as they were before the entry filled: sized by a read, the exit saw a flat position
    # and sent nothing. The book has the fill from the stream: the exit sells the 3.
    fault(rig, fault="book_lag", seconds=time.monotonic() - entered + POSITIONS_LAG)
    assert all(p.quantity == 0 for p in rig.session.broker.positions() if p.symbol == "INFY")
    rig.sim.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
    tag = rig.store.get(pid).exit_tag
    wait_until(lambda: rig.sim_orders(tag), 10.0, "the exit", rig.qtbot)
    fault(rig, fault="clear", kind="book_lag")
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    exits = rig.sim_orders(tag)
    assert [(o["transaction_type"], o["quantity"], o["status"]) for o in exits] == [("SELL", 3, "COMPLETE")]
    assert net_position(rig) == 0


def test_a_sale_outside_repeated_and_out_of_order_and_lagging_positions_never_flip(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    filled_by = time.monotonic()
    vouched(rig, pid, 3)
    # The trader sells 1 of the 3 on the broker's site; its updates come final first, then the older ones,
    # then the final again, and positions keep showing 3 (as they were once the entry filled). Sized by the
    # read, the exit sold 3 and the long became a short of 1.
    fault(rig, fault="book_lag", seconds=time.monotonic() - filled_by)
    fault(rig, fault="update_disorder")
    sell_outside(rig, 1)
    book = rig.service.books[rig.account_id]
    wait_until(lambda: book.state().rows.get(("NSE", "INFY", Product.MIS)) == 2, what="the book to count it")
    rig.sim.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
    tag = rig.store.get(pid).exit_tag
    wait_until(lambda: rig.sim_orders(tag), 10.0, "the exit", rig.qtbot)
    fault(rig, fault="clear")
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    exits = rig.sim_orders(tag)
    assert [(o["transaction_type"], o["quantity"], o["status"]) for o in exits] == [("SELL", 2, "COMPLETE")]
    assert net_position(rig) == 0
    assert book.state().rows[("NSE", "INFY", Product.MIS)] == 0  # each fill counted once


def test_a_lost_reply_with_the_book_vouching_sells_exactly_once(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    vouched(rig, pid, 3)
    fault(rig, fault="book_lag", seconds=1.5 * SCALE)
    fault(rig, fault="lost_reply", path=rig.order_path, method="POST")
    rig.sim.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    exits = rig.sim_orders(rig.store.get(pid).exit_tag)
    assert [(o["transaction_type"], o["quantity"], o["status"]) for o in exits] == [("SELL", 3, "COMPLETE")]
    assert net_position(rig) == 0
    assert "exit_resent" not in kinds(rig, pid)


def test_an_exit_sized_on_a_read_that_trailed_a_buy_exits_the_rest_too(rig: Rig) -> None:
    """Found by make chaos-safety: a short grew to 30 (auto-protect followed it), the stop was crossed while
    positions still showed 10, and the exit bought back 10: 20 stayed open and unwatched for a minute. With
    no book to vouch (the REST path), the exit still sizes on the read, and then exits the rest."""
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    vouched(rig, pid, 3)
    rig.service.books.pop(rig.account_id)  # sized by REST reads, as when the stream is down
    bought_at = time.monotonic()
    # Reads answer as the app's whole bound ago: before the buy below.
    fault(rig, fault="book_lag", seconds=POSITIONS_LAG)
    instrument, tradingsymbol = rig.instrument("NSE:INFY")
    rig.session.broker.place_order(
        OrderRequest(
            symbol=tradingsymbol,
            exchange="NSE",
            instrument=instrument,
            side=Side.BUY,
            quantity=7,
            product=Product.MIS,
            order_type=OrderType.MARKET,
        )
    )
    wait_until(lambda: net_position(rig) == 10, what="the buy outside to fill")
    rig.store.update(pid, kind="quantity_changed", quantity=10, filled_quantity=10)  # as auto-protect does
    assert time.monotonic() - bought_at < 0.8 * POSITIONS_LAG
    rig.sim.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
    tag = rig.store.get(pid).exit_tag
    wait_until(lambda: rig.sim_orders(tag), 10.0, "the exit", rig.qtbot)
    fault(rig, fault="clear")
    rig.wait_status(pid, Status.CLOSED, timeout=20)
    exits = rig.sim_orders(tag)
    assert [(o["transaction_type"], o["quantity"], o["status"]) for o in exits] == [
        ("SELL", 3, "COMPLETE"),
        ("SELL", 7, "COMPLETE"),
    ]
    assert net_position(rig) == 0
    assert rig.store.get(pid).exit_quantity == 10 and "exit_topped_up" in kinds(rig, pid)
