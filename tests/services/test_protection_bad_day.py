"""ProtectionService against a simulator having a bad day (issue 13, items 2-6), on both brokers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.services.conftest import control
from tests.services.test_protection_flow import Rig, enter, wait_until
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.brokers.base import OrderRequest, OrderType
from trailstop_gui.services.protection_service import EntryRequest

POSITIONS_PATH = {"kite": "/portfolio/positions", "upstox": "/v2/portfolio/short-term-positions"}


def reconcile_now(rig: Rig) -> None:
    rig.service.reconcile(rig.account_id)
    assert rig.service.reconciles.waitForDone(15_000)


def outside_order(rig: Rig, side: Side, quantity: int) -> None:
    """The trader trades INFY MIS on the broker's own site; wait for the fill."""
    instrument, symbol = rig.instrument("NSE:INFY")
    broker = rig.session.broker
    order_id = broker.place_order(
        OrderRequest(
            symbol=symbol,
            exchange="NSE",
            instrument=instrument,
            side=side,
            quantity=quantity,
            product=Product.MIS,
            order_type=OrderType.MARKET,
        )
    )
    wait_until(lambda: broker.order(order_id).is_final, what="the outside order to fill")


@pytest.mark.parametrize(
    "spoilt",
    [
        {"mode": "null_list"},
        {"mode": "missing_field", "field": "quantity"},
        {"mode": "string_number", "field": "quantity", "value": "three"},
    ],
    ids=["null-list", "missing-quantity", "text-quantity"],
)
def test_an_unreadable_positions_reply_never_closes_a_live_protection(
    rig: Rig,
    spoilt: dict[str, Any],
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    reconcile_now(rig)
    fault = {"fault": "malformed", "path": POSITIONS_PATH[rig.broker], "method": "GET", "count": 5}
    control(rig.sim, "fault", {**fault, **spoilt})
    reconcile_now(rig)
    p = rig.store.get(pid)
    # It used to read as "flat": CLOSED, reason external, with the position still held.
    assert (p.status, p.reason) == (Status.OPEN, "entry filled")
    control(rig.sim, "fault", {"fault": "clear"})
    reconcile_now(rig)
    assert rig.status(pid) is Status.OPEN
    # And it still protects: the stop fires and sells the 3 held.
    rig.sim.set_price("NSE:INFY", 1400.0)
    rig.wait_status(pid, Status.CLOSED)
    assert [o["quantity"] for o in rig.sim_orders(p.exit_tag)] == [3]


def test_two_protections_on_one_position_never_sell_more_than_it_holds(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    first = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    second = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))  # the same position: 6 held
    outside_order(rig, Side.SELL, 4)  # 2 left, both protections still believe they hold 3
    rig.sim.set_price("NSE:INFY", 1400.0)  # one tick fires both stops
    rig.wait_status(first, Status.CLOSED)
    rig.wait_status(second, Status.CLOSED)
    assert rig.service.executor.wait_idle(10)
    sold = [
        o["quantity"]
        for pid in (first, second)
        for o in rig.sim_orders(rig.store.get(pid).exit_tag)
        if o["status"] == "COMPLETE"
    ]
    # Each used to sell min(3, 2): 4 sold out of 2, a short of 2.
    assert sum(sold) == 2
    positions = [p for p in rig.session.broker.positions() if p.symbol == "INFY" and p.product is Product.MIS]
    assert [p.quantity for p in positions] == [0]


def test_an_entry_whose_reply_is_lost_stays_pending_and_is_found_by_its_tag(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    # The broker takes the entry, then the answer is a 504: a timeout, not a refusal.
    control(
        rig.sim,
        "fault",
        {"fault": "http_error", "status": 504, "phase": "after", "path": rig.order_path, "method": "POST"},
    )
    instrument, symbol = rig.instrument("NSE:INFY")
    p = rig.service.place_entry(
        EntryRequest(
            account_id=rig.account_id,
            instrument=instrument,
            symbol=symbol,
            exchange="NSE",
            side=Side.BUY,
            quantity=3,
            product=Product.MIS,
            tick_size=0.05,
            rule=TrailRule.percent(2.0),
        )
    )
    # It used to be marked REJECTED, and the filled position was left without a stop.
    rig.wait_status(p.id, Status.OPEN)
    found = rig.store.get(p.id)
    (order,) = rig.sim_orders(found.entry_tag)
    assert found.entry_order_id == order["order_id"] and found.filled_quantity == 3
    # (a pushed order update may arm it before the lost reply is even reported: wait for the journal line)
    wait_until(
        lambda: bool(rig.store.events(protection_id=p.id, kinds=["entry_unconfirmed"])),
        what="the lost reply journalled",
        qtbot=rig.qtbot,
    )
    assert rig.status(p.id) is Status.OPEN


def test_exit_now_whose_commit_fails_leaves_the_protection_armed(
    rig: Rig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    feed = rig.session.feed
    assert feed is not None
    wait_until(lambda: feed.engine.is_armed(str(pid)), what="armed", qtbot=rig.qtbot)
    real = rig.store.transition

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk I/O error")

    monkeypatch.setattr(rig.store, "transition", failing)
    with pytest.raises(OSError):
        rig.service.exit_now(pid)
    monkeypatch.setattr(rig.store, "transition", real)
    # A disarm would have been queued to the feed thread; a marker queued behind it runs only after it did.
    handled = threading.Event()
    feed._call(handled.set)
    assert handled.wait(5)
    assert rig.status(pid) is Status.OPEN and feed.engine.is_armed(str(pid))
    rig.sim.set_price("NSE:INFY", 1400.0)  # still watched: the stop fires
    rig.wait_status(pid, Status.CLOSED)


def test_a_limit_entry_whose_stop_would_be_below_zero_is_refused_before_anything_is_stored(
    rig: Rig,
) -> None:
    instrument, symbol = rig.instrument("NSE:INFY")
    with pytest.raises(ValueError, match="rule: a 200 pts distance from the entry price 150"):
        rig.service.place_entry(
            EntryRequest(
                account_id=rig.account_id,
                instrument=instrument,
                symbol=symbol,
                exchange="NSE",
                side=Side.BUY,
                quantity=3,
                product=Product.MIS,
                tick_size=0.05,
                rule=TrailRule.points(200.0),
                order_type=OrderType.LIMIT,
                price=150.0,
            )
        )
    assert rig.store.live(rig.account_id) == [] and rig.sim_orders() == []


def test_a_fill_whose_stop_would_be_below_zero_is_open_paused_and_alerted(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    instrument, symbol = rig.instrument("NSE:INFY")
    # A MARKET entry: its price is known only at the fill, where a 2000-point trail puts the stop at -500.
    p = rig.service.place_entry(
        EntryRequest(
            account_id=rig.account_id,
            instrument=instrument,
            symbol=symbol,
            exchange="NSE",
            side=Side.BUY,
            quantity=3,
            product=Product.MIS,
            tick_size=0.05,
            rule=TrailRule.points(2000.0),
        )
    )
    rig.wait_status(p.id, Status.OPEN)
    rig.qtbot.waitUntil(lambda: any(a.title == "Stop not armed" for a in rig.alerts), timeout=3000)
    opened = rig.store.get(p.id)
    assert (opened.paused, opened.stop, opened.filled_quantity) == (True, None, 3)
    assert "a stop must be above 0" in opened.reason
    feed = rig.session.feed
    assert feed is not None and not feed.engine.is_armed(str(p.id))
    with pytest.raises(ValueError, match="rule: a 2000 pts distance"):
        rig.service.resume(p.id)  # not until the rule changes
    rig.service.modify_rule(p.id, TrailRule.percent(2.0))
    assert rig.service.resume(p.id).stop == 1470.0
    wait_until(lambda: feed.engine.is_armed(str(p.id)), what="armed with the new rule", qtbot=rig.qtbot)


def test_exit_all_goes_on_past_one_that_cannot_be_committed(
    rig: Rig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    rig.sim.set_price("NSE:TCS", 3500.0)
    stuck = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    other = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0), symbol="NSE:TCS")
    real = rig.store.transition

    def failing_for_the_first(pid: int, *args: Any, **kwargs: Any) -> Any:
        if pid == stuck:
            raise OSError("disk I/O error")
        return real(pid, *args, **kwargs)

    monkeypatch.setattr(rig.store, "transition", failing_for_the_first)
    assert rig.service.exit_all() == [other]
    monkeypatch.setattr(rig.store, "transition", real)
    rig.wait_status(other, Status.CLOSED)
    assert rig.status(stuck) is Status.OPEN
