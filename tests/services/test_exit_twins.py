"""Two protections on one position ("twins") against a simulator whose positions lag the fills (issue 13
item 2), on both brokers: the second exit is never sized on a read that does not show the first one's fill.

Found by `make chaos` (c80044e): two protections on one 8-share Upstox MIS short; the second exit waited
while the first was in flight, was sent a second after the first filled, sized on a positions read that
still showed the short, and bought 8 more: the short became a long.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.services.conftest import control
from tests.services.test_protection_flow import Rig, enter, protect_whole_again, wait_until
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.exit_executor import RetryPolicy
from trailstop_gui.services.reconciler import FLAT_CONFIRM_SECONDS

BOOK_LAG = 2.5  # the simulator's positions trail the fills by this much
POLICY = RetryPolicy(
    attempts=6,
    initial_delay=0.05,
    max_delay=0.2,
    poll_interval=0.05,
    lookup_window=1.0,
    flat_confirm=1.0,
    positions_lag=BOOK_LAG + 0.5,  # the app's bound on that lag (5 s in the app: POSITIONS_LAG)
)


@pytest.fixture
def rig_policy() -> RetryPolicy:
    """The shared ``rig`` (tests/services/conftest.py) with this module's retry policy."""
    return POLICY


@pytest.fixture
def rig_flat_confirm() -> float:
    """The reconciler keeps the app's 2 s: only the exits' own second read comes sooner here."""
    return FLAT_CONFIRM_SECONDS


def price(rig: Rig, ltp: float) -> None:
    rig.sim.set_price("NSE:INFY", ltp, bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2))


def short_protected_twice(rig: Rig, second_percent: float) -> tuple[int, int]:
    """A 3-share INFY MIS short with two protections of all of it, positions lagging the fills."""
    price(rig, 1500.0)
    first = enter(rig, Side.SELL, Product.MIS, TrailRule.percent(2.0))
    position = next(
        x for x in rig.session.broker.positions() if x.symbol == "INFY" and x.product is Product.MIS
    )
    assert position.quantity == -3
    second = protect_whole_again(rig, position, TrailRule.percent(second_percent))
    wait_until(lambda: rig.store.get(second).stop is not None, what="the twin armed", qtbot=rig.qtbot)
    # Positions trail the fills; the order book does not (its exits read COMPLETE at once).
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": BOOK_LAG, "orders": 0})
    # The short is older than the lag: a lagging read shows it too (a flat read is item 3's business).
    wait_until(
        lambda: any(x.quantity == -3 for x in rig.session.broker.positions() if x.symbol == "INFY"),
        what="the lagging read to show the short",
    )
    # The feed reconnects (as in the chaos run): the position book has no read since its order stream came
    # back, so it can neither size the exits nor bound a lagging read by the fills it saw.
    book = rig.service.books[rig.account_id]
    before = book.state().stream_up_since
    control(rig.sim, "fault", {"fault": "drop_ws", "broker": rig.broker})
    wait_until(
        lambda: book.state().stream_up_since not in (None, before),
        what="the order stream back",
        qtbot=rig.qtbot,
    )
    return first, second


def buys(rig: Rig) -> list[dict[str, Any]]:
    """Every BUY the simulator took on INFY: the exits of the short (the entry was a SELL)."""
    return [
        o
        for o in rig.sim_orders()
        if o["tradingsymbol"] == "INFY"
        and o["transaction_type"] == "BUY"
        and o["status"] not in ("CANCELLED", "REJECTED")
    ]


def kinds(rig: Rig, pid: int) -> list[str]:
    return [e.kind for e in rig.store.events(protection_id=pid)]


def test_a_twin_firing_just_after_the_other_filled_waits_for_a_read_that_shows_it(rig: Rig) -> None:
    first, second = short_protected_twice(rig, second_percent=4.0)  # stops 1530 and 1560
    price(rig, 1540.0)  # the first one's stop only: it buys the 3 back
    rig.wait_status(first, Status.CLOSED)
    price(rig, 1570.0)  # a moment later the second one's: the positions read still shows the short of 3
    rig.wait_status(second, Status.CLOSED, timeout=15)
    # It used to buy 3 more on that read: the short became a long of 3.
    assert [(o["quantity"], o["tag"]) for o in buys(rig)] == [(3, rig.store.get(first).exit_tag)]
    done = rig.store.get(second)
    assert (done.reason, done.exit_order_id) == ("external", None)
    assert "exit_waiting" in kinds(rig, second)
    control(rig.sim, "fault", {"fault": "clear", "kind": "book_lag"})
    assert [x.quantity for x in rig.session.broker.positions() if x.symbol == "INFY"] == [0]


def test_twins_firing_on_one_tick_exit_once_and_the_waiting_one_ends_by_itself(rig: Rig) -> None:
    first, second = short_protected_twice(rig, second_percent=2.0)  # one stop for both
    price(rig, 1540.0)  # one tick fires both
    wait_until(
        lambda: Status.CLOSED in (rig.status(first), rig.status(second)), what="one exit", qtbot=rig.qtbot
    )
    # The reconciler resumes the waiting one at once (as the chaos run's did, a second after the fill).
    rig.service.reconcile(rig.account_id)
    for pid in (first, second):
        rig.wait_status(pid, Status.CLOSED, timeout=15)
    assert [o["quantity"] for o in buys(rig)] == [3]
    control(rig.sim, "fault", {"fault": "clear", "kind": "book_lag"})
    assert [x.quantity for x in rig.session.broker.positions() if x.symbol == "INFY"] == [0]
