"""An exit that reads the position flat reads it again before calling it flat: positions lag a fresh fill."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Order, OrderRequest, OrderStatus, Position
from trailstop_gui.services.exit_executor import ExitExecutor, RetryPolicy


class LaggingBroker:
    """Its positions read flat ``lag_reads`` times before they show the 3 held."""

    capabilities = KITE_CAPABILITIES

    def __init__(self, lag_reads: int) -> None:
        self.lag_reads = lag_reads
        self.placed: list[OrderRequest] = []

    def positions(self) -> list[Position]:
        if self.lag_reads > 0:
            self.lag_reads -= 1
            return []
        return [Position("INFY", "NSE", 408065, "NSE:INFY", 3, 1500.0, Product.MIS, "MIS")]

    def holdings(self) -> list[Any]:
        return []

    def find_order_by_tag(self, _tag: str) -> None:
        return None

    def orders(self) -> list[Order]:
        """Nothing of ours in the book: a flat position is looked at for the protection's own sale."""
        return []

    def place_order(self, request: OrderRequest) -> str:
        self.placed.append(request)
        return "X1"

    def order(self, order_id: str) -> Order:
        return Order(
            order_id=order_id,
            status=OrderStatus.COMPLETE,
            raw_status="COMPLETE",
            side=Side.SELL,
            order_type=None,
            product=Product.MIS,
            raw_product="MIS",
            symbol="INFY",
            exchange="NSE",
            instrument=408065,
            quantity=3,
            filled_quantity=3,
            pending_quantity=0,
            average_price=1460.0,
            price=0.0,
            trigger_price=0.0,
            tag=None,
            status_message=None,
            placed_at=None,
            updated_at=None,
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "exit.db")
    yield s
    s.close()


def fire(store: ProtectionStore, broker: LaggingBroker) -> tuple[int, list[float]]:
    account = store.add_account("kite", "Zerodha")
    p = store.create_protection(
        account_id=account.id,
        broker="kite",
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=3,
        filled_quantity=3,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        entry_price=1500.0,
        status=Status.OPEN,
    )
    sleeps: list[float] = []
    executor = ExitExecutor(
        store, lambda _account: broker, policy=RetryPolicy(poll_interval=0.01), sleep=sleeps.append
    )
    store.transition(p.id, Status.TRIGGERED, reason="stop")
    assert executor.submit(p.id)
    assert executor.wait_idle(10)
    return p.id, sleeps


def test_a_flat_read_just_after_the_fill_does_not_leave_the_position_naked(
    qtbot: QtBot, store: ProtectionStore
) -> None:
    broker = LaggingBroker(lag_reads=1)
    pid, sleeps = fire(store, broker)
    # It used to close as "external" with nothing sent, the 3 still held and no stop watching them.
    assert [r.quantity for r in broker.placed] == [3] and broker.placed[0].side is Side.SELL
    assert store.get(pid).status is Status.CLOSED and store.get(pid).exit_order_id == "X1"
    assert sleeps == [RetryPolicy().flat_confirm] and RetryPolicy().flat_confirm >= 1.0


def test_flat_twice_is_flat(qtbot: QtBot, store: ProtectionStore) -> None:
    broker = LaggingBroker(lag_reads=2)
    pid, sleeps = fire(store, broker)
    assert broker.placed == [] and sleeps == [RetryPolicy().flat_confirm]
    assert (store.get(pid).status, store.get(pid).reason) == (Status.CLOSED, "external")
