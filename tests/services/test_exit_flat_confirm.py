"""An exit that reads the position flat reads it again before calling it flat: positions lag a fresh fill."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from tests.factories import FakeBroker, protection
from trailstop_gui.models.domain import Side, Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import Position
from trailstop_gui.services.exit_executor import ExitExecutor, RetryPolicy


class LaggingBroker(FakeBroker):
    """Its positions read flat ``lag_reads`` times before they show the 3 held. Its order book is empty
    (FakeBroker's): a flat position is looked at for the protection's own sale, and none is there."""

    def __init__(self, lag_reads: int) -> None:
        super().__init__()
        self.lag_reads = lag_reads

    def positions(self) -> list[Position]:
        if self.lag_reads > 0:
            self.lag_reads -= 1
            return []
        return super().positions()

    def find_order_by_tag(self, _tag: str) -> None:
        return None


def fire(store: ProtectionStore, broker: LaggingBroker) -> tuple[int, list[float]]:
    p = protection(store)
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
