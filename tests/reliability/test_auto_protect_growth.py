"""Found by the chaos run: a position that grows after auto-protect adopted it must be covered in full.

An outside order filled in parts (or a second buy outside the app) used to leave the extra quantity
unprotected: the reconciler only ever shrank a protection, and the exit then closed only the first part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Position
from trailstop_gui.services.reconciler import FLAT_CONFIRM_SECONDS, Hooks, Reconciler

RULE = TrailRule.parse("percent:2")


class FakeBroker:
    """Just what a reconcile reads: positions (set by the test), no holdings, no orders."""

    capabilities = KITE_CAPABILITIES

    def __init__(self) -> None:
        self.net: dict[tuple[str, Product], int] = {}
        self.while_reading: list[Any] = []  # run once each, after the positions were read

    def positions(self) -> list[Position]:
        read = [
            Position(symbol, "NSE", 408065, f"NSE:{symbol}", qty, 1500.0, product, product.value)
            for (symbol, product), qty in self.net.items()
        ]
        while self.while_reading:
            self.while_reading.pop(0)()
        return read

    def holdings(self) -> list[Any]:
        return []

    def orders(self) -> list[Any]:
        return []


class Clock:
    """The reconciler's monotonic clock, moved on by the test (a change is applied once a read this long
    after the first one still shows it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def later(self) -> None:
        self.now += FLAT_CONFIRM_SECONDS


def rig(
    tmp_path: Path, waits: list[float] | None = None, clock: Clock | None = None
) -> tuple[ProtectionStore, Reconciler, FakeBroker, int, list[int]]:
    store = ProtectionStore(tmp_path / "growth.db")
    account = store.add_account("kite", "Zerodha")
    armed: list[int] = []
    hooks = Hooks(
        arm=lambda p: armed.append(p.id),
        disarm=lambda _pid: None,
        resume_exit=lambda _pid: None,
        tick_size=lambda _account, _pos: 0.05,
    )
    # The second look at a flat position is recorded, not waited for: the broker here never changes by itself.
    reconciler = Reconciler(
        store, hooks, sleep=(waits if waits is not None else []).append, clock=clock or Clock()
    )
    reconciler.auto_protect[account.id] = RULE
    return store, reconciler, FakeBroker(), account.id, armed


def test_a_position_that_grows_is_covered_in_full(tmp_path: Path) -> None:
    clock = Clock()
    store, reconciler, broker, account_id, _armed = rig(tmp_path, clock=clock)
    try:
        broker.net[("INFY", Product.MIS)] = 7  # the first part of an order for 17
        report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        (pid,) = report.adopted
        stop = store.get(pid).stop
        broker.net[("INFY", Product.MIS)] = 17  # the rest filled
        # Grown once a second read, FLAT_CONFIRM_SECONDS on, shows it too (one read may trail a sale).
        report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        assert report.unconfirmed == [pid] and store.get(pid).filled_quantity == 7
        assert report.recheck_in == FLAT_CONFIRM_SECONDS
        clock.later()
        report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        p = store.get(pid)
        assert report.resized == [pid] and not report.adopted
        assert (p.quantity, p.filled_quantity, p.status) == (17, 17, Status.OPEN)
        assert p.stop == stop  # the stop does not move for a bigger position
        changes = store.events(protection_id=pid, kinds=["quantity_changed"])
        assert [e.message for e in changes] == ["position is 17, was 7"]
        # Shrinking still follows the position down; and nothing changes while it stays the same.
        broker.net[("INFY", Product.MIS)] = 12
        reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        clock.later()
        reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        clock.later()
        reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        assert store.get(pid).filled_quantity == 12
        assert len(store.live(account_id)) == 1
    finally:
        store.close()


def test_a_reversed_position_is_not_grown_into(tmp_path: Path) -> None:
    waits: list[float] = []
    store, reconciler, broker, account_id, _armed = rig(tmp_path, waits)
    try:
        broker.net[("INFY", Product.MIS)] = -5
        (short,) = reconciler.reconcile(account_id, broker).adopted  # type: ignore[arg-type]
        assert store.get(short).side is Side.SELL
        broker.net[("INFY", Product.MIS)] = 9  # bought 14 outside: now long
        report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        assert store.get(short).status is Status.CLOSED and report.closed_externally == [short]
        assert waits == [reconciler.flat_confirm_seconds]  # the short was seen gone twice, apart
        (long,) = report.adopted
        assert store.get(long).side is Side.BUY and store.get(long).filled_quantity == 9
    finally:
        store.close()


def test_a_position_whose_exit_fills_during_the_reconcile_is_not_adopted_again(tmp_path: Path) -> None:
    """Found by the chaos run with safety stops: the positions said 7 (read just before our exit filled),
    the protection closed meanwhile, and auto-protect adopted the flat position again, placing a broker
    stop for it."""
    store, reconciler, broker, account_id, _armed = rig(tmp_path)
    try:
        broker.net[("INFY", Product.MIS)] = 7
        (pid,) = reconciler.reconcile(account_id, broker).adopted  # type: ignore[arg-type]
        store.transition(pid, Status.TRIGGERED, reason="stop", price=1460.0)
        store.transition(pid, Status.EXITING, exit_order_id="X1")

        def exit_filled() -> None:
            store.transition(pid, Status.CLOSED, exit_price=1459.95, exit_quantity=7, reason="stop")
            broker.net[("INFY", Product.MIS)] = 0

        broker.while_reading.append(exit_filled)
        report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
        assert report.adopted == [] and store.live(account_id) == []
        # A real position opened later is adopted as usual.
        broker.net[("INFY", Product.MIS)] = 4
        assert len(reconciler.reconcile(account_id, broker).adopted) == 1  # type: ignore[arg-type]
    finally:
        store.close()
