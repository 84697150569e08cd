"""An exit sized on a positions read that trailed the position's own fills: the rest is exited too.

Found by the chaos run (make chaos-safety, run 1): auto-protect grew a short to 30, a lagging read still
said 10 when the stop was crossed, the exit bought back 10 and the other 20 stayed open and unwatched.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from tests.factories import FakeBroker, exit_jobs, order, position, triggered
from trailstop_gui.models.domain import Side, Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import Order, OrderRequest, Position
from trailstop_gui.services.exit_jobs import MAX_TOP_UPS


class LaggingBroker(FakeBroker):
    """INFY long; ``reads`` are the quantities successive positions reads show (the last one repeats).

    Every exit fills at once, whole, at 1460. The order book lists them, each placed a minute after the
    one before (the broker's clock), and then ``outside``: the trader's own orders.
    """

    def __init__(self, reads: list[int], outside: list[Order] | None = None) -> None:
        super().__init__()
        self.reads = list(reads)
        self.outside = outside or []

    def positions(self) -> list[Position]:
        net = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        return [position(net)]

    def order(self, order_id: str) -> Order:
        request = self.placed[int(order_id[1:]) - 1]
        return order(
            order_id,
            quantity=request.quantity,
            average_price=1460.0,
            tag=request.tag,
            placed_at=EXIT_LEFT_AT + timedelta(minutes=int(order_id[1:]) - 1),
        )

    def orders(self) -> list[Order]:
        return [*(self.order(f"X{i}") for i in range(1, len(self.placed) + 1)), *self.outside]


EXIT_LEFT_AT = datetime(2026, 12, 7, 10, 15, 0)  # the broker's clock (IST), as its order book gives it


def run_exit(store: ProtectionStore, broker: LaggingBroker, protected: int = 30) -> int:
    p = triggered(store, quantity=protected)
    # The re-reads come from timers: short ones here, so that nothing waits in real time for long.
    jobs, _events, _sleeps = exit_jobs(store, broker, lookup_window=0.02, flat_confirm=0.02)
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


def test_shares_the_trader_bought_after_the_exit_left_are_not_topped_up(store: ProtectionStore) -> None:
    """Found by the chaos run: a basket exited a holding the trader was buying back; the exit sold the 10
    left, the trader's buy of 20 filled a moment later, and the top-up sold those 20 too. Shares bought
    before the exit left (a read trailing them) are still exited: only the later ones are the trader's."""
    # Placed a second before the exit, filled two seconds after it (the chaos run's fill delay).
    later = order(
        "T1",
        side=Side.BUY,
        quantity=20,
        placed_at=EXIT_LEFT_AT - timedelta(seconds=1),
        updated_at=EXIT_LEFT_AT + timedelta(seconds=2),
    )
    broker = LaggingBroker([10, 20, 20, 20], outside=[later])
    pid = run_exit(store, broker)
    assert [o.quantity for o in broker.placed] == [10]
    assert store.get(pid).status is Status.CLOSED and store.get(pid).exit_quantity == 10
    # The same buy filled before the exit left: its 20 were hidden by a trailing read, and are exited.
    earlier = replace(later, updated_at=EXIT_LEFT_AT)  # filled in the exit's own (whole) second
    broker2 = LaggingBroker([10, 20, 20, 0], outside=[earlier])
    pid2 = run_exit(store, broker2)
    assert [o.quantity for o in broker2.placed] == [10, 20]
    assert store.get(pid2).exit_quantity == 30
    # A buy whose time the book does not give is taken for a later one: its 5 are never sold.
    unknown = replace(
        later, placed_at=None, updated_at=None, quantity=5, filled_quantity=5, pending_quantity=0
    )
    broker3 = LaggingBroker([10, 20, 20, 5], outside=[unknown])
    pid3 = run_exit(store, broker3)
    assert [o.quantity for o in broker3.placed] == [10, 15]
    assert store.get(pid3).exit_quantity == 25


class UnlistedBroker(LaggingBroker):
    """An order book that does not list the exit (a lagging book): when it left cannot be told."""

    def orders(self) -> list[Order]:
        return list(self.outside)


def test_without_the_exit_in_the_order_book_no_fill_of_the_trader_is_taken_for_a_hidden_one(
    store: ProtectionStore,
) -> None:
    earlier = order("T1", side=Side.BUY, quantity=20, updated_at=EXIT_LEFT_AT - timedelta(minutes=5))
    broker = UnlistedBroker([10, 20, 20, 20], outside=[earlier])
    pid = run_exit(store, broker)
    assert [o.quantity for o in broker.placed] == [10]  # never stuck waiting: it closes on what filled
    assert store.get(pid).status is Status.CLOSED and store.get(pid).exit_quantity == 10
    # With no such order at all, the rest a trailing read hid is exited as before.
    plain = UnlistedBroker([10, 20, 20, 0])
    pid2 = run_exit(store, plain)
    assert store.get(pid2).exit_quantity == 30
    assert [o.quantity for o in plain.placed] == [10, 20]


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


def test_a_twins_exit_that_filled_a_moment_ago_is_not_topped_up_again(store: ProtectionStore) -> None:
    """Two protections on a 30-share long: the older one's exit of 20 is at the broker when this one's
    stop is crossed, so this one sells the 10 left. The older one's exit then fills (CLOSED); the re-reads
    still trail it (20: this exit's 10 shown, the twin's 20 not yet). Taken as this exit's rest, those 20
    were sold again: the long became a short of 20."""
    twin = triggered(store, quantity=20)
    store.transition(twin.id, Status.EXITING, exit_order_id="T1", exit_quantity=20)
    p = triggered(store, twin.account_id, quantity=30)

    class TwinFillsBroker(LaggingBroker):
        def place_order(self, request: OrderRequest) -> str:
            order_id = super().place_order(request)
            if len(self.placed) == 1:  # the twin's exit fills as this one goes out
                store.transition(twin.id, Status.CLOSED, reason="stop", exit_quantity=20, exit_price=1460.0)
            return order_id

    broker = TwinFillsBroker([30, 20])
    jobs, _events, _sleeps = exit_jobs(store, broker, lookup_window=0.02, flat_confirm=0.02)
    try:
        assert jobs.submit(p.id)
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    assert [o.quantity for o in broker.placed] == [10]
    done = store.get(p.id)
    assert done.status is Status.CLOSED and done.exit_quantity == 10
