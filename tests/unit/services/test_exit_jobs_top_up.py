"""An exit sized on a positions read that trailed the position's own fills: the rest is exited too.

Found by the chaos run (make chaos-safety, run 1): auto-protect grew a short to 30, a lagging read still
said 10 when the stop was crossed, the exit bought back 10 and the other 20 stayed open and unwatched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Order, OrderRequest, OrderStatus, Position
from trailstop_gui.services.exit_jobs import MAX_TOP_UPS, ExitJobs, RetryPolicy, ThreadRunner


class LaggingBroker:
    """INFY long; ``reads`` are the quantities successive positions reads show (the last one repeats).

    Every exit fills at once, whole, at 1460.
    """

    capabilities = KITE_CAPABILITIES

    def __init__(self, reads: list[int]) -> None:
        self.reads = list(reads)
        self.placed: list[OrderRequest] = []

    def positions(self) -> list[Position]:
        net = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        return [Position("INFY", "NSE", 408065, "NSE:INFY", net, 1500.0, Product.MIS, "MIS")]

    def holdings(self) -> list[Any]:
        return []

    def orders(self) -> list[Order]:
        return []

    def place_order(self, request: OrderRequest) -> str:
        self.placed.append(request)
        return f"X{len(self.placed)}"

    def order(self, order_id: str) -> Order:
        quantity = self.placed[int(order_id[1:]) - 1].quantity
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
            quantity=quantity,
            filled_quantity=quantity,
            pending_quantity=0,
            average_price=1460.0,
            price=0.0,
            trigger_price=0.0,
            tag=None,
            status_message=None,
            placed_at=None,
            updated_at=None,
        )


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.seen.append((name, *args))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "topup.db")
    yield s
    s.close()


def run_exit(store: ProtectionStore, broker: LaggingBroker, protected: int = 30) -> int:
    account = store.add_account("kite", "Zerodha")
    p = store.create_protection(
        account_id=account.id,
        broker="kite",
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=protected,
        filled_quantity=protected,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        entry_price=1500.0,
        status=Status.OPEN,
    )
    store.transition(p.id, Status.TRIGGERED, reason="stop")
    jobs = ExitJobs(
        store,
        lambda _account: broker,  # type: ignore[arg-type, return-value]
        events=Events(),
        runner=ThreadRunner(2),
        # The re-reads come from timers: short ones here, so that nothing waits in real time for long.
        policy=RetryPolicy(poll_interval=0.01, lookup_window=0.02, flat_confirm=0.02),
        sleep=lambda _s: None,
    )
    try:
        assert jobs.submit(p.id)
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    return p.id


def test_the_rest_a_trailing_read_hid_is_exited_once_the_reads_show_it(store: ProtectionStore) -> None:
    # The read at the crossing trails the entry's fills (10 of 30); after the exit of 10, two reads agree
    # that 20 are still open: they are exited as well, and the protection closes on all 30.
    broker = LaggingBroker([10, 20, 20, 0])
    pid = run_exit(store, broker)
    assert [o.quantity for o in broker.placed] == [10, 20]
    assert all(o.side is Side.SELL and o.tag == store.get(pid).exit_tag for o in broker.placed)
    p = store.get(pid)
    assert p.status is Status.CLOSED and p.exit_quantity == 30 and p.exit_price == 1460.0
    kinds = [e.kind for e in store.events(protection_id=pid)]
    assert kinds.count("exit_short") == 1 and kinds.count("exit_topped_up") == 1


def test_a_position_sold_down_outside_is_not_topped_up(store: ProtectionStore) -> None:
    # The trader sold 20 outside: the read at the crossing was right, and after the exit it is flat.
    broker = LaggingBroker([10, 0])
    pid = run_exit(store, broker)
    assert [o.quantity for o in broker.placed] == [10]
    assert store.get(pid).status is Status.CLOSED and store.get(pid).exit_quantity == 10


def test_a_read_that_does_not_show_the_exit_yet_sends_nothing_more(store: ProtectionStore) -> None:
    # The first re-read still trails the exit's own fill (10, as before it); the second, flat, is right.
    # Sending on the first alone would flip the position: both reads must show the rest.
    broker = LaggingBroker([10, 10, 0])
    pid = run_exit(store, broker)
    assert [o.quantity for o in broker.placed] == [10]
    assert store.get(pid).status is Status.CLOSED


def test_top_ups_are_bounded(store: ProtectionStore) -> None:
    # A position whose reads never show the exits' fills (a broken endpoint, always 10): at most
    # MAX_TOP_UPS more exits, none past what the protection covers, then it closes on what filled.
    broker = LaggingBroker([5, 10])
    pid = run_exit(store, broker)
    assert len(broker.placed) == 1 + MAX_TOP_UPS
    assert sum(o.quantity for o in broker.placed) <= 30
    assert store.get(pid).status is Status.CLOSED
