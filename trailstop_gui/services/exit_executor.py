"""ExitExecutor: the exit jobs (services/exit_jobs.py) on a QThreadPool, reporting through Qt signals.

The money rules live in the Qt-free ``ExitJobs`` and ``exit_decisions``; this module only gives them the
design card's threads (a QThreadPool of QRunnables) and the one adapter that turns their events into
signals for the views.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from trailstop_gui.models.store import ProtectionStore, kept_connection
from trailstop_gui.services.brokers.base import Broker
from trailstop_gui.services.exit_jobs import ExitJobs, RetryPolicy, TriggerGate

__all__ = ["ExitExecutor", "ExitSignals", "RetryPolicy", "TriggerGate"]


class ExitSignals(QObject):
    """A QRunnable is not a QObject: its reports travel through this one."""

    exit_placed = Signal(int, str)  # protection id, order id
    exit_filled = Signal(int, float)  # protection id, average price
    exit_failed = Signal(int, str)  # protection id, why (the broker refused: EXIT_FAILED)
    exit_delayed = Signal(int, str)  # protection id, why (stays TRIGGERED; the reconciler resumes it)
    closed_externally = Signal(int)  # protection id: the position was already flat
    login_needed = Signal(int)  # account id: an exit waits for a new login
    job_finished = Signal(int)  # protection id


class _SignalEvents:
    """The exit jobs' events (exit_jobs.ExitEvents) as ExitSignals' signals."""

    def __init__(self, signals: ExitSignals) -> None:
        self._signals = signals

    def exit_placed(self, protection_id: int, order_id: str) -> None:
        self._signals.exit_placed.emit(protection_id, order_id)

    def exit_filled(self, protection_id: int, price: float) -> None:
        self._signals.exit_filled.emit(protection_id, price)

    def exit_failed(self, protection_id: int, why: str) -> None:
        self._signals.exit_failed.emit(protection_id, why)

    def exit_delayed(self, protection_id: int, why: str) -> None:
        self._signals.exit_delayed.emit(protection_id, why)

    def closed_externally(self, protection_id: int) -> None:
        self._signals.closed_externally.emit(protection_id)

    def login_needed(self, account_id: int) -> None:
        self._signals.login_needed.emit(account_id)

    def job_finished(self, protection_id: int) -> None:
        self._signals.job_finished.emit(protection_id)


class _Task(QRunnable):
    """One unit of sending work on the pool (ExitJobs._run_task catches its exceptions)."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self.work = work

    def run(self) -> None:
        with kept_connection():  # not a new SQLite connection for every exit job
            self.work()


class _PoolRunner:
    """ExitJobs' sending threads as a QThreadPool."""

    def __init__(self, pool: QThreadPool) -> None:
        self.pool = pool

    def start(self, work: Callable[[], None]) -> None:
        self.pool.start(_Task(work))

    def wait_done(self, timeout: float) -> bool:
        return bool(self.pool.waitForDone(int(timeout * 1000)))


class ExitExecutor(ExitJobs):
    """Sends exits for TRIGGERED protections on a QThreadPool; outcomes arrive as ``signals``."""

    def __init__(
        self,
        store: ProtectionStore,
        broker_for: Callable[[int], Broker | None],
        *,
        policy: RetryPolicy | None = None,
        max_threads: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signals = ExitSignals()
        self.pool = QThreadPool()
        # Sending threads only: fills are watched on the FillWatcher's own thread.
        self.pool.setMaxThreadCount(max_threads)
        super().__init__(
            store,
            broker_for,
            events=_SignalEvents(self.signals),
            runner=_PoolRunner(self.pool),
            policy=policy,
            sleep=sleep,
            clock=clock,
        )
