"""A crash at each step of a tick's exit, then the restart: never a second exit, and no needless wait.

The first process commits TRIGGERED with the "exit_sending" marker (TriggerGate.commit_events) and dies:
before its request left, with the request in the air (the broker took it), or after the answer but before
EXITING was committed. Its disk is left exactly as the kill leaves it: the database as committed, the send
log (services/exit_send_log.py) as written. The broker's order book and positions lag by ``LAG`` seconds
(the simulator's ``book_lag``; Kite forum: book, trades and positions "can temporarily disagree").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.services.test_exit_jobs import Events
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore, TransitionRequest
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Order, OrderRequest, OrderStatus, Position
from trailstop_gui.services.brokers.errors import AmbiguousError
from trailstop_gui.services.exit_jobs import ExitJobs, RetryPolicy, ThreadRunner
from trailstop_gui.services.exit_send_log import ExitSendLog

LAG = 0.5  # the book's lag behind a send
WINDOW = 1.0  # the lost-order look-up window (longer than the lag, as in production: 3 s for 0.5-2 s)
HELD = 3


class Kill:
    """The SIGKILL at one step: the job's thread stops right there and runs nothing more (no ``finally``,
    no journal line) while the restart runs; it is let go, ending in :class:`Killed`, after the test."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.jobs: ExitJobs | None = None  # the killed process's jobs, ended after the test

    def here(self, *_args: Any, **_kwargs: Any) -> Any:
        self.reached.set()
        self.release.wait(30)
        raise Killed


class Killed(BaseException):
    """What the frozen thread ends with once let go: nothing in the exit path catches it."""


@pytest.fixture
def kill() -> Iterator[Kill]:
    k = Kill()
    yield k
    k.release.set()
    if k.jobs is not None:
        stop(k.jobs)  # before the store closes: the thread let go may still write its "finally"


class LaggingBroker:
    """Holds 3 INFY; every exit fills at once, but the book and positions show it only LAG s later."""

    capabilities = KITE_CAPABILITIES

    def __init__(self) -> None:
        self.placed: list[tuple[float, Order]] = []
        self.book_reads = 0
        self.on_place: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    def _seen(self) -> list[Order]:
        horizon = time.monotonic() - LAG
        with self._lock:
            return [order for at, order in self.placed if at <= horizon]

    def positions(self) -> list[Position]:
        net = HELD - sum(o.filled_quantity for o in self._seen())
        return [Position("INFY", "NSE", 408065, "NSE:INFY", net, 1500.0, Product.MIS, "MIS")]

    def holdings(self) -> list[Any]:
        return []

    def orders(self) -> list[Order]:
        self.book_reads += 1
        return self._seen()

    def order(self, order_id: str) -> Order:
        with self._lock:
            return next(o for _at, o in self.placed if o.order_id == order_id)

    def place_order(self, request: OrderRequest) -> str:
        with self._lock:
            order_id = f"X{len(self.placed) + 1}"
            self.placed.append((time.monotonic(), _filled(order_id, request)))
        self.on_place()  # the broker has the order; the reply has not left it yet
        return order_id


def _filled(order_id: str, request: OrderRequest) -> Order:
    return Order(
        order_id=order_id,
        status=OrderStatus.COMPLETE,
        raw_status="COMPLETE",
        side=request.side,
        order_type=request.order_type,
        product=Product.MIS,
        raw_product="MIS",
        symbol="INFY",
        exchange="NSE",
        instrument=408065,
        quantity=request.quantity,
        filled_quantity=request.quantity,
        pending_quantity=0,
        average_price=1460.0,
        price=0.0,
        trigger_price=0.0,
        tag=request.tag,
        status_message=None,
        placed_at=None,
        updated_at=None,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "restart.db")
    yield s
    s.close()


def open_protection(store: ProtectionStore) -> int:
    account = store.add_account("kite", "Zerodha")
    p = store.create_protection(
        account_id=account.id,
        broker="kite",
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=HELD,
        filled_quantity=HELD,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        entry_price=1500.0,
        status=Status.OPEN,
    )
    return p.id


def jobs_for(store: ProtectionStore, broker: LaggingBroker, send_log: ExitSendLog | None) -> ExitJobs:
    jobs = ExitJobs(
        store,
        lambda _account: broker,  # type: ignore[arg-type, return-value]
        events=Events(),
        runner=ThreadRunner(2),
        policy=RetryPolicy(poll_interval=0.01, lookup_window=WINDOW, lookup_delay=0.05),
        sleep=lambda _s: None,
    )
    jobs.send_log = send_log
    return jobs


def stop(jobs: ExitJobs) -> None:
    jobs.stopping.set()
    jobs.shutdown(5_000)


def first_process(store: ProtectionStore, broker: LaggingBroker, path: Path, kill: Kill, kill_at: str) -> int:
    """The tick's exit, killed at ``kill_at``; returns the protection id. Disk as the kill left it."""
    pid = open_protection(store)
    send_log = ExitSendLog(path, run=1, first_event_id=store.last_event_id())
    jobs = kill.jobs = jobs_for(store, broker, send_log)
    if kill_at == "before the request":
        jobs._send = kill.here  # type: ignore[method-assign]
    elif kill_at == "in the air":
        broker.on_place = kill.here  # the broker has the order, its reply never comes back
    elif kill_at == "answered":
        jobs._to_exiting = kill.here  # type: ignore[method-assign]
    gate = jobs.submit_gated(store.get(pid))
    assert gate is not None
    store.transition_many(
        [
            TransitionRequest(
                pid, Status.TRIGGERED, expected=Status.OPEN, reason="stop", events=gate.commit_events
            )
        ]
    )
    gate.open()
    assert kill.reached.wait(10)
    broker.on_place = lambda: None
    assert store.get(pid).status is Status.TRIGGERED
    return pid


def restart(
    store: ProtectionStore, broker: LaggingBroker, path: Path, *, later: float = 0.0
) -> tuple[float, int]:
    """The next process, ``later`` seconds after the kill: its recovery of the exit. Returns the seconds
    until its job was done and the book reads it made."""
    send_log = ExitSendLog(
        path,
        run=2,
        first_event_id=store.last_event_id(),
        wall=lambda: time.time() + later,
        mono=lambda: time.monotonic() + later,
    )
    jobs = jobs_for(store, broker, send_log)
    reads_before = broker.book_reads
    started = time.monotonic()
    try:
        pid = store.live()[0].id
        assert jobs.submit(pid, recover=True)
        assert jobs.wait_idle(10)
        took = time.monotonic() - started
        deadline = time.monotonic() + 5
        while store.get(pid).status is not Status.CLOSED and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop(jobs)
        send_log.close()
    return took, broker.book_reads - reads_before


def test_a_crash_before_the_request_left_sends_after_one_look(
    store: ProtectionStore, tmp_path: Path, kill: Kill
) -> None:
    """Found by make chaos: with the marker in the TRIGGERED commit, a crash just after a crossing made the
    restart look for a lost order over the whole window before sending, although none had left. The send
    log shows none was in the air: one look at the book, then the exit."""
    broker = LaggingBroker()
    pid = first_process(store, broker, tmp_path / "exit-sends", kill, "before the request")
    assert broker.placed == []
    took, reads = restart(store, broker, tmp_path / "exit-sends", later=2.0)
    assert [o.quantity for _at, o in broker.placed] == [HELD]
    assert took < WINDOW / 2 and reads <= 2  # the old code looked again and again for the whole window
    assert store.get(pid).status is Status.CLOSED


def test_a_crash_with_the_request_in_the_air_waits_for_the_lagging_book(
    store: ProtectionStore, tmp_path: Path, kill: Kill
) -> None:
    broker = LaggingBroker()
    pid = first_process(store, broker, tmp_path / "exit-sends", kill, "in the air")
    assert len(broker.placed) == 1
    # However long ago: the send log cannot say when that request ended.
    took, reads = restart(store, broker, tmp_path / "exit-sends", later=30.0)
    assert len(broker.placed) == 1 and reads >= 2  # found once the book showed it: adopted, not resent
    assert store.get(pid).status is Status.CLOSED and store.get(pid).exit_order_id == "X1"


def test_a_crash_after_the_answer_looks_over_what_is_left_of_the_window(
    store: ProtectionStore, tmp_path: Path, kill: Kill
) -> None:
    broker = LaggingBroker()
    pid = first_process(store, broker, tmp_path / "exit-sends", kill, "answered")
    assert len(broker.placed) == 1
    took, reads = restart(store, broker, tmp_path / "exit-sends")  # at once: the book still lags
    assert len(broker.placed) == 1 and reads >= 2 and took >= LAG / 2  # looked until the book showed it
    assert store.get(pid).status is Status.CLOSED and store.get(pid).exit_order_id == "X1"


def test_a_marker_of_this_process_gets_the_whole_window(store: ProtectionStore, tmp_path: Path) -> None:
    """The previous process was quiet long ago, but the marker is this process's own (written after it
    started): its request may have just left; the previous process's record says nothing about it."""
    path = tmp_path / "exit-sends"
    ExitSendLog(path, run=1, first_event_id=0).close()
    broker = LaggingBroker()
    pid = open_protection(store)
    send_log = ExitSendLog(
        path,
        run=2,
        first_event_id=store.last_event_id(),
        wall=lambda: time.time() + 60,
        mono=lambda: time.monotonic() + 60,
    )
    assert send_log.seconds_quiet() is not None and send_log.seconds_quiet() >= 59  # type: ignore[operator]
    store.transition(pid, Status.TRIGGERED, expected=Status.OPEN, reason="stop")
    store.journal("exit_sending", protection_id=pid, message="attempt 1, quantity 3")
    jobs = jobs_for(store, broker, send_log)
    started = time.monotonic()
    try:
        assert jobs.submit(pid, recover=True)
        assert jobs.wait_idle(10)
    finally:
        stop(jobs)
        send_log.close()
    assert time.monotonic() - started >= WINDOW and broker.book_reads >= 4
    assert [o.quantity for _at, o in broker.placed] == [HELD]


def test_without_a_send_log_the_whole_window_is_waited(
    store: ProtectionStore, tmp_path: Path, kill: Kill
) -> None:
    broker = LaggingBroker()
    first_process(store, broker, tmp_path / "exit-sends", kill, "before the request")
    (tmp_path / "exit-sends").unlink()  # lost (a power cut before writeback): unknown
    took, reads = restart(store, broker, tmp_path / "exit-sends", later=30.0)
    assert took >= WINDOW and reads >= 4
    assert [o.quantity for _at, o in broker.placed] == [HELD]


def test_a_lost_reply_in_this_process_still_looks_over_the_whole_window(
    store: ProtectionStore, tmp_path: Path
) -> None:
    """Unchanged in-process rule: after an ambiguous failure the window counts from that failure."""
    path = tmp_path / "exit-sends"
    ExitSendLog(path, run=1, first_event_id=0).close()
    broker = LaggingBroker()
    pid = open_protection(store)
    send_log = ExitSendLog(path, run=2, first_event_id=store.last_event_id(), wall=lambda: time.time() + 60)
    jobs = jobs_for(store, broker, send_log)

    def lost_reply() -> None:
        broker.on_place = lambda: None
        raise AmbiguousError("connection closed without an answer")

    broker.on_place = lost_reply
    store.transition(pid, Status.TRIGGERED, expected=Status.OPEN, reason="stop")
    try:
        assert jobs.submit(pid)
        assert jobs.wait_idle(10)
    finally:
        stop(jobs)
        send_log.close()
    assert len(broker.placed) == 1  # the lost one, adopted once the book showed it
    assert store.get(pid).exit_order_id == "X1"
