"""FillWatcher polled by the test on its own thread, with an injected clock: nothing waits in real time."""

from __future__ import annotations

import threading
from typing import Any

from tests.unit.services.test_exit_decisions import order
from trailstop_gui.services.brokers.base import Order, OrderStatus
from trailstop_gui.services.brokers.errors import TemporaryError
from trailstop_gui.services.exit_decisions import Step, WatchStep
from trailstop_gui.services.exit_watch import ExitWatch, FillWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Book:
    """The broker's order book as the watcher reads it, one order at a time."""

    def __init__(self, **orders: Order) -> None:
        self.orders: dict[str, Order | Exception] = dict(orders)

    def order(self, order_id: str) -> Order:
        found = self.orders[order_id]
        if isinstance(found, Exception):
            raise found
        return found


class Rig:
    def __init__(self, book: Book, expected: int = 10, fill_timeout: float = 60.0) -> None:
        self.clock = Clock()
        self.steps: list[WatchStep] = []
        self.expired: list[str] = []
        self.watcher = FillWatcher(
            lambda _w, step: self.steps.append(step),
            lambda _w, why: self.expired.append(why),
            poll_interval=0.25,
            rest_timeout=3.0,
            stopping=threading.Event(),
            clock=self.clock,
            run_thread=False,
        )
        self.watch = ExitWatch(
            protection_id=1,
            broker=book,  # type: ignore[arg-type]
            expected=expected,
            children={},
            deadline=self.clock.now + fill_timeout,
        )
        self.watch.add(list(book.orders), self.clock.now)
        self.watcher.watch(self.watch)

    def after(self, seconds: float) -> int:
        self.clock.now += seconds
        return self.watcher.poll_due()


def test_a_filled_exit_closes_at_its_average_and_is_no_longer_watched() -> None:
    rig = Rig(Book(A=order("A", OrderStatus.COMPLETE, 6), B=order("B", OrderStatus.COMPLETE, 4)))
    assert rig.after(0) == 1
    assert [(s.step, s.quantity, s.price) for s in rig.steps] == [(Step.CLOSE, 10, 100.0)]
    assert not rig.watcher.watching(1) and rig.after(10) == 0


def test_a_working_exit_is_polled_again_only_when_its_turn_comes() -> None:
    rig = Rig(Book(A=order("A", OrderStatus.OPEN)))
    assert rig.after(0) == 1 and rig.steps == []
    assert rig.after(0.1) == 0  # not due before poll_interval
    assert rig.after(0.15) == 1 and rig.steps == []


def test_a_part_filled_rest_is_repriced_after_the_rest_timeout_and_the_watch_pauses() -> None:
    book = Book(A=order("A", OrderStatus.OPEN, 10, filled=4))
    rig = Rig(book)
    rig.after(0)
    rig.after(2.9)
    assert rig.steps == []
    rig.after(0.3)  # 3.2 s without progress since the fill of 4 was first seen
    assert [(s.step, s.order_id) for s in rig.steps] == [(Step.REPRICE, "A")]
    assert rig.watch.paused and rig.after(5) == 0  # the action runs elsewhere; nothing polls meanwhile
    rig.watcher.resume(rig.watch)
    assert rig.after(0) == 1


def test_an_order_that_filled_nothing_is_given_three_times_as_long() -> None:
    rig = Rig(Book(A=order("A", OrderStatus.OPEN)))
    rig.after(0)
    rig.after(8.9)
    assert rig.steps == []
    rig.after(0.3)  # 9.2 s: three times the rest timeout
    assert [s.step for s in rig.steps] == [Step.REPRICE]


def test_an_unreadable_child_waits_and_the_watch_expires_at_its_deadline() -> None:
    rig = Rig(Book(A=TemporaryError("timeout")), fill_timeout=5.0)  # type: ignore[arg-type]
    rig.after(0)
    rig.after(4.0)
    assert rig.steps == [] and rig.expired == []
    rig.after(1.5)
    assert rig.expired == ["not final in time; the reconciler takes over"] and not rig.watcher.watching(1)


def test_an_order_update_makes_its_exit_due_at_once() -> None:
    rig = Rig(Book(A=order("A", OrderStatus.OPEN)))
    rig.after(0)
    assert rig.after(0.1) == 0
    rig.watcher.wake("A")
    assert rig.after(0) == 1


def test_one_odd_reply_does_not_end_the_watching(caplog: Any) -> None:
    rig = Rig(Book(A=order("A", OrderStatus.OPEN)))
    rig.watch.broker.orders["A"] = None  # type: ignore[attr-defined]  # the poll crashes on it
    rig.after(0)
    assert rig.watcher.watching(1) and "watching the exit failed" in caplog.text
    rig.watch.broker.orders["A"] = order("A", OrderStatus.COMPLETE)  # type: ignore[attr-defined]
    rig.after(0.25)
    assert [s.step for s in rig.steps] == [Step.CLOSE]
