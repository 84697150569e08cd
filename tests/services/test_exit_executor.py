"""ExitExecutor: the exit jobs on a QThreadPool, their outcomes as ExitSignals (the one Qt adapter)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.unit.services.test_exit_jobs import Broker
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.errors import RejectedError
from trailstop_gui.services.exit_executor import ExitExecutor, RetryPolicy


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "executor.db")
    yield s
    s.close()


def triggered(store: ProtectionStore) -> int:
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
    store.transition(p.id, Status.TRIGGERED, reason="stop")
    return p.id


def test_the_exit_is_sent_on_the_pool_and_reported_as_signals(qtbot: QtBot, store: ProtectionStore) -> None:
    pid = triggered(store)
    broker = Broker()
    senders: list[threading.Thread] = []
    place = broker.place_order
    broker.place_order = lambda request: senders.append(threading.current_thread()) or place(request)  # type: ignore[method-assign]
    executor = ExitExecutor(store, lambda _a: broker, policy=RetryPolicy(poll_interval=0.01))  # type: ignore[arg-type, return-value]
    seen: list[tuple[object, ...]] = []
    signals = executor.signals
    signals.exit_placed.connect(lambda *a: seen.append(("placed", *a)))
    signals.exit_filled.connect(lambda *a: seen.append(("filled", *a)))
    signals.job_finished.connect(lambda *a: seen.append(("finished", *a)))
    try:
        with qtbot.waitSignal(signals.job_finished, timeout=10_000):
            assert executor.submit(pid)
        qtbot.waitUntil(lambda: len(seen) == 3, timeout=5_000)
    finally:
        executor.stopping.set()
        executor.shutdown()
    assert seen == [("placed", pid, "X1"), ("filled", pid, 1460.0), ("finished", pid)]
    assert senders and senders[0] is not threading.main_thread()  # never the GUI thread
    assert store.get(pid).status is Status.CLOSED


def test_a_refusal_arrives_as_exit_failed(qtbot: QtBot, store: ProtectionStore) -> None:
    pid = triggered(store)
    executor = ExitExecutor(store, lambda _a: Broker(place_errors=[RejectedError("margin")]))  # type: ignore[arg-type, return-value]
    try:
        with qtbot.waitSignal(executor.signals.exit_failed, timeout=10_000) as blocker:
            assert executor.submit(pid)
        assert executor.wait_idle(5)
    finally:
        executor.shutdown()
    assert blocker.args is not None and blocker.args[0] == pid and "margin" in blocker.args[1]
    assert store.get(pid).status is Status.EXIT_FAILED
