"""ExitExecutor: the exit jobs on a QThreadPool, their outcomes as ExitSignals (the one Qt adapter)."""

from __future__ import annotations

import threading

import pytest
from pytestqt.qtbot import QtBot

from tests.factories import FakeBroker as Broker
from tests.factories import triggered
from trailstop_gui.models import db
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.errors import RejectedError
from trailstop_gui.services.exit_executor import ExitExecutor, RetryPolicy


def test_the_exit_is_sent_on_the_pool_and_reported_as_signals(qtbot: QtBot, store: ProtectionStore) -> None:
    pid = triggered(store).id
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
    pid = triggered(store).id
    executor = ExitExecutor(store, lambda _a: Broker(place_errors=[RejectedError("margin")]))  # type: ignore[arg-type, return-value]
    try:
        with qtbot.waitSignal(executor.signals.exit_failed, timeout=10_000) as blocker:
            assert executor.submit(pid)
        assert executor.wait_idle(5)
    finally:
        executor.shutdown()
    assert blocker.args is not None and blocker.args[0] == pid and "margin" in blocker.args[1]
    assert store.get(pid).status is Status.EXIT_FAILED


def test_exit_jobs_on_one_pool_thread_keep_one_sqlite_connection(
    qtbot: QtBot, store: ProtectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every job opened a new connection (a pool thread's threading.local is new for each task): the file,
    # its WAL, four pragmas, on the way from the tick to the exit order.
    opened: list[str] = []
    connect = type(db.database)._connect

    def counted(self: object, *args: object, **kwargs: object) -> object:
        opened.append(threading.current_thread().name)
        return connect(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(type(db.database), "_connect", counted)
    broker = Broker()
    executor = ExitExecutor(store, lambda _a: broker, policy=RetryPolicy(poll_interval=0.01), max_threads=1)  # type: ignore[arg-type, return-value]
    try:
        for _ in range(3):
            pid = triggered(store).id
            with qtbot.waitSignal(executor.signals.job_finished, timeout=10_000):
                assert executor.submit(pid)
            qtbot.waitUntil(lambda pid=pid: store.get(pid).status is Status.CLOSED, timeout=5_000)
    finally:
        executor.stopping.set()
        executor.shutdown()
    pool_threads = [name for name in opened if name != threading.current_thread().name]
    assert 1 <= len(pool_threads) <= 2  # the pool's one thread, and the fill watcher's
