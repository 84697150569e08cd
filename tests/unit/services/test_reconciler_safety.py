"""The reconciler and the broker-held stop: a flat position is labelled by what closed it, never by a guess.

Found by the chaos run with safety stops: the safety SL-M had filled, reading it back drew an HTTP 429, and
the protection was recorded as "closed outside TrailStop" although its own broker stop closed it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.test_auto_protect_growth import RULE, FakeBroker
from tests.unit.services.test_safety_decisions import order
from trailstop_gui.models.domain import Product, Protection, SafetyKind, SafetyState, Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services import safety_stop
from trailstop_gui.services.brokers.base import Broker, Order, OrderStatus, OrderType
from trailstop_gui.services.brokers.errors import RateLimitedError
from trailstop_gui.services.reconciler import Hooks, Reconciler
from trailstop_gui.services.safety_lifecycle import SafetyEvent, next_state


def filled_slm() -> Order:
    return order(
        "S1",
        OrderStatus.COMPLETE,
        order_type=OrderType.SL_M,
        quantity=7,
        filled_quantity=7,
        average_price=1460.0,
        trigger_price=1460.0,
    )


def test_a_flat_position_waits_until_its_safety_stop_can_be_read(tmp_path: Path) -> None:
    store = ProtectionStore(tmp_path / "r.db")
    try:
        account = store.add_account("kite", "Zerodha")
        answers: list[Order | Exception] = [RateLimitedError("HTTP 429"), filled_slm()]
        disarmed: list[int] = []

        def fired(_p: Protection, _b: Broker) -> Order | None:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        hooks = Hooks(
            arm=lambda _p: None,
            disarm=disarmed.append,
            resume_exit=lambda _pid: None,
            tick_size=lambda _account, _pos: 0.05,
            safety_fired=fired,
        )
        waits: list[float] = []
        reconciler = Reconciler(store, hooks, sleep=waits.append)  # the flat read's second look, untimed
        reconciler.auto_protect[account.id] = RULE
        broker = FakeBroker()
        broker.net[("INFY", Product.MIS)] = 7
        (pid,) = reconciler.reconcile(account.id, broker).adopted  # type: ignore[arg-type]
        broker.net[("INFY", Product.MIS)] = 0  # the broker-held stop sold it
        report = reconciler.reconcile(account.id, broker)  # type: ignore[arg-type]
        assert not report.changed() and store.get(pid).status is Status.OPEN and disarmed == []
        assert waits == [reconciler.flat_confirm_seconds]  # flat twice, 2 s apart, before it is believed
        report = reconciler.reconcile(account.id, broker)  # type: ignore[arg-type]
        done = store.get(pid)
        assert report.safety_closed == [pid] and disarmed == [pid]
        assert waits == [reconciler.flat_confirm_seconds] * 2
        assert (done.status, done.reason, done.exit_order_id) == (Status.CLOSED, "safety stop", "S1")
    finally:
        store.close()


def test_the_reconciler_closes_a_stop_taken_away_after_it_sold_through_the_safety_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop taken away (REMOVED) whose order had sold the position is closed by the one close that the
    safety stop manager uses too: its FIRED goes through the table (SafetyEvent.FILLED), not around it.
    Before, the reconciler wrote FIRED itself, a second copy of the close beside the manager's."""
    seen: list[tuple[SafetyState, SafetyEvent, int | None]] = []

    def spy(state: SafetyState, event: SafetyEvent, pid: int | None = None) -> SafetyState:
        seen.append((state, event, pid))
        return next_state(state, event, pid)

    monkeypatch.setattr(safety_stop, "next_state", spy)
    store = ProtectionStore(tmp_path / "r.db")
    try:
        account = store.add_account("kite", "Zerodha")
        hooks = Hooks(
            arm=lambda _p: None,
            disarm=lambda _pid: None,
            resume_exit=lambda _pid: None,
            tick_size=lambda _account, _pos: 0.05,
            safety_fired=lambda _p, _b: filled_slm(),
        )
        reconciler = Reconciler(store, hooks, sleep=lambda _s: None)
        reconciler.auto_protect[account.id] = RULE
        broker = FakeBroker()
        broker.net[("INFY", Product.MIS)] = 7
        (pid,) = reconciler.reconcile(account.id, broker).adopted  # type: ignore[arg-type]
        store.update_safety(
            pid, safety_state=SafetyState.REMOVED, safety_kind=SafetyKind.SL_M, safety_quantity=7
        )
        broker.net[("INFY", Product.MIS)] = 0
        report = reconciler.reconcile(account.id, broker)  # type: ignore[arg-type]
        done = store.get(pid)
        assert report.safety_closed == [pid]
        assert (done.status, done.reason, done.safety_state) == (
            Status.CLOSED,
            "safety stop",
            SafetyState.FIRED,
        )
        assert (done.exit_order_id, done.exit_price, done.exit_quantity) == ("S1", 1460.0, 7)
        assert seen == [(SafetyState.REMOVED, SafetyEvent.FILLED, pid)]
    finally:
        store.close()
