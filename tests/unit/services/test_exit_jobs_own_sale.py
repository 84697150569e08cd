"""A refused delivery exit whose shares the protection's own orders sold: closed by them, never "outside".

Found by make chaos-safety (c80044e, protection 44, Kite CNC with a GTT): the GTT fired unseen just before
TrailStop deleted it; TrailStop's own exit was then refused ("Insufficient holdings ...: available 0"), the
fresh read found no shares left, and the protection was recorded as closed outside TrailStop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.services.test_exit_jobs import Events
from trailstop_gui.models.domain import Product, Protection, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Order, OrderRequest, OrderStatus, Position
from trailstop_gui.services.brokers.errors import RejectedError
from trailstop_gui.services.exit_jobs import ExitJobs, RetryPolicy, ThreadRunner
from trailstop_gui.services.safety_stop import PROCEED, SAFETY_STOP_REASON, ExitPlan

REFUSAL = "Insufficient holdings for INFY: available 0."


def order(order_id: str, status: OrderStatus, *, tag: str | None, filled: int, price: float = 0.0) -> Order:
    return Order(
        order_id=order_id,
        status=status,
        raw_status=status.value,
        side=Side.SELL,
        order_type=None,
        product=Product.CNC,
        raw_product="CNC",
        symbol="INFY",
        exchange="NSE",
        instrument=408065,
        quantity=3,
        filled_quantity=filled,
        pending_quantity=3 - filled if not status.is_final else 0,
        average_price=price,
        price=0.0,
        trigger_price=0.0,
        tag=tag,
        status_message=REFUSAL if status is OrderStatus.REJECTED else None,
        placed_at=None,
        updated_at=None,
    )


class Broker:
    """3 INFY bought today (CNC) and sold by ``sale`` before the exit reached the broker: the first
    positions read still shows them (it trailed the sale), every later one shows them gone; the exit is
    refused (``refuse_at_door``: at placement, else REJECTED after it was taken)."""

    capabilities = KITE_CAPABILITIES

    def __init__(self, sale: Order, refuse_at_door: bool = False) -> None:
        self.sale = sale
        self.refuse_at_door = refuse_at_door
        self.reads = 0
        self.placed: list[OrderRequest] = []

    def positions(self) -> list[Position]:
        self.reads += 1
        net = 3 if self.reads == 1 else 0
        return [Position("INFY", "NSE", 408065, "NSE:INFY", net, 1500.0, Product.CNC, "CNC")]

    def holdings(self) -> list[Any]:
        return []

    def orders(self) -> list[Order]:
        exits = [self.order(f"X{i + 1}") for i in range(len(self.placed))]
        return [self.sale, *exits]

    def place_order(self, request: OrderRequest) -> str:
        if self.refuse_at_door:
            raise RejectedError(REFUSAL)
        self.placed.append(request)
        return f"X{len(self.placed)}"

    def order(self, order_id: str) -> Order:
        if order_id == self.sale.order_id:
            return self.sale
        return order(order_id, OrderStatus.REJECTED, tag=self.placed[0].tag, filled=0)


class Safety:
    """The safety manager as the exit sees it: its GTT deleted for the exit (nothing fired in the book
    yet), and afterwards the order it fired into before that delete."""

    def __init__(self, fired: Order | None) -> None:
        self.fired = fired
        self.asked: list[int] = []

    def prepare_exit(self, p: Protection, broker: Any, quantity: int) -> ExitPlan:
        return PROCEED

    def sold_by_stop(self, p: Protection, broker: Any) -> Order | None:
        self.asked.append(p.id)
        return self.fired


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "own_sale.db")
    yield s
    s.close()


def run_exit(store: ProtectionStore, broker: Broker, safety: Safety | None) -> tuple[int, Events]:
    account = store.add_account("kite", "Zerodha")
    p = store.create_protection(
        account_id=account.id,
        broker="kite",
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.CNC,
        quantity=3,
        filled_quantity=3,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        entry_price=1500.0,
        status=Status.OPEN,
    )
    store.transition(p.id, Status.TRIGGERED, reason="stop")
    if broker.sale.tag == "":
        broker.sale = replace(broker.sale, tag=p.exit_tag)  # an earlier send of this very exit
    events = Events()
    jobs = ExitJobs(
        store,
        lambda _account: broker,  # type: ignore[arg-type, return-value]
        events=events,
        runner=ThreadRunner(2),
        policy=RetryPolicy(poll_interval=0.01),
        sleep=lambda _seconds: None,
    )
    jobs.safety = safety  # type: ignore[assignment]
    try:
        assert jobs.submit(p.id)
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    return p.id, events


def test_a_refused_exit_whose_shares_its_gtt_sold_is_closed_by_the_gtt_with_its_fill(
    store: ProtectionStore,
) -> None:
    gtt_order = order("G1", OrderStatus.COMPLETE, tag=None, filled=3, price=1455.5)
    safety = Safety(gtt_order)
    broker = Broker(gtt_order)
    pid, events = run_exit(store, broker, safety)
    closed = store.get(pid)
    assert (closed.status, closed.reason) == (Status.CLOSED, SAFETY_STOP_REASON)
    assert (closed.exit_order_id, closed.exit_quantity, closed.exit_price) == ("G1", 3, 1455.5)
    assert "closed_externally" not in events.kinds() and ("exit_filled", pid, 1455.5) in events.seen
    assert [r.quantity for r in broker.placed] == [3] and safety.asked == [pid]  # one exit, refused
    assert store.events(protection_id=pid, kinds=["exit_own_sale"])


def test_a_gtt_order_still_working_is_watched_as_the_exit(store: ProtectionStore) -> None:
    """Its working sale held the shares (the refusal), and it fills later: it is the exit, watched."""
    working = order("G1", OrderStatus.OPEN, tag=None, filled=0)
    broker = Broker(working)
    safety = Safety(working)

    def fill_later(order_id: str) -> Order:
        if order_id == "G1":
            return order("G1", OrderStatus.COMPLETE, tag=None, filled=3, price=1454.0)
        return order(order_id, OrderStatus.REJECTED, tag=broker.placed[0].tag, filled=0)

    broker.order = fill_later  # type: ignore[method-assign]
    pid, events = run_exit(store, broker, safety)
    closed = store.get(pid)
    assert (closed.status, closed.reason, closed.exit_order_id) == (Status.CLOSED, SAFETY_STOP_REASON, "G1")
    assert (closed.exit_quantity, closed.exit_price) == (3, 1454.0)
    assert "closed_externally" not in events.kinds()


def test_an_exit_refused_at_the_door_after_its_own_earlier_send_filled_is_closed_by_that_send(
    store: ProtectionStore,
) -> None:
    """An earlier send of the exit (its tag) sold the shares; the next one is refused at placement."""
    earlier = order("E0", OrderStatus.COMPLETE, tag="", filled=3, price=1458.0)  # tag: the exit's
    broker = Broker(earlier, refuse_at_door=True)
    pid, events = run_exit(store, broker, Safety(None))
    closed = store.get(pid)
    assert (closed.status, closed.reason, closed.exit_order_id) == (Status.CLOSED, "stop", "E0")
    assert (closed.exit_quantity, closed.exit_price) == (3, 1458.0)
    assert "closed_externally" not in events.kinds()


def test_with_no_sale_of_its_own_the_shares_were_sold_outside(store: ProtectionStore) -> None:
    """The trader's own sale (another tag, no GTT fired): closed outside, as before."""
    outside = order("T1", OrderStatus.COMPLETE, tag="mine", filled=3, price=1457.0)
    broker = Broker(outside)
    safety = Safety(None)
    pid, events = run_exit(store, broker, safety)
    closed = store.get(pid)
    assert (closed.status, closed.reason, closed.exit_order_id) == (Status.CLOSED, "external", "X1")
    assert "closed_externally" in events.kinds() and safety.asked == [pid]
