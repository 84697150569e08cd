"""The tick path's exit with the live position book: sized without a round trip when the book vouches,
by a positions read when it does not, never a flip when a sale outside the app is seen before REST shows it,
and the "exit_sending" marker committed with TRIGGERED (one fsync before the order, not two)."""

from __future__ import annotations

from typing import Any

from tests.factories import Events, exit_jobs, position
from tests.factories import FakeBroker as Broker
from tests.factories import protection as open_protection
from tests.unit.services.test_position_book import Clock, update
from trailstop_gui.models.domain import Protection, Side, Status
from trailstop_gui.models.store import ProtectionStore, TransitionRequest
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Position
from trailstop_gui.services.brokers.kite import order_from_kite
from trailstop_gui.services.exit_jobs import ExitJobs, ThreadRunner
from trailstop_gui.services.position_book import POSITIONS_LAG, PositionBook


class CountingBroker(Broker):
    """The test broker, counting its positions reads; ``rest`` is what they answer (a lagging read)."""

    def __init__(self, rest: int = 3) -> None:
        super().__init__()
        self.rest = rest
        self.reads = 0

    def positions(self) -> list[Position]:
        self.reads += 1
        return [position(self.rest)]


def fresh_book(net: int) -> PositionBook:
    clock = Clock()
    book = PositionBook(KITE_CAPABILITIES, order_from_kite, clock=clock)
    book.stream_up()
    clock.now += POSITIONS_LAG
    rows = [position(net)] if net else []
    for _ in range(2):
        clock.now += 1
        book.correct(rows, None, clock.now)
    return book


def trigger(
    store: ProtectionStore, broker: Broker, book: PositionBook | None, **policy: Any
) -> tuple[Protection, Events, list[float]]:
    """What the feed thread does at a crossing: a gated job, TRIGGERED committed, the gate opened."""
    p = open_protection(store)
    jobs, events, sleeps = exit_jobs(store, broker, **policy)
    jobs.book_for = lambda _account: book
    try:
        gate = jobs.submit_gated(p)
        assert gate is not None
        [result] = store.transition_many(
            [TransitionRequest(p.id, Status.TRIGGERED, expected=Status.OPEN, events=gate.commit_events)]
        )
        assert not isinstance(result, Exception)
        gate.open()
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    return store.get(p.id), events, sleeps


def kinds(store: ProtectionStore, pid: int) -> list[str]:
    return [e.kind for e in store.events(protection_id=pid)]


def test_a_fresh_book_sizes_the_exit_without_a_positions_read(store: ProtectionStore) -> None:
    broker = CountingBroker()
    p, events, _ = trigger(store, broker, fresh_book(3))
    assert broker.reads == 0
    assert [(r.side, r.quantity) for r in broker.placed] == [(Side.SELL, 3)]
    assert p.status is Status.CLOSED
    # One "exit_sending", committed with TRIGGERED (right after its transition), none of its own.
    journal = kinds(store, p.id)
    assert journal.count("exit_sending") == 1
    assert journal.index("exit_sending") == journal.index("transition") + 1


def test_a_book_that_cannot_vouch_falls_back_to_the_positions_read(store: ProtectionStore) -> None:
    broker = CountingBroker()
    book = fresh_book(3)
    book.stream_down()
    p, _, _ = trigger(store, broker, book)
    assert broker.reads == 1
    assert [r.quantity for r in broker.placed] == [3]
    assert p.status is Status.CLOSED


def test_a_sale_outside_the_app_seen_on_the_stream_is_never_sold_again(store: ProtectionStore) -> None:
    # The trader sold the 3 on Kite web a moment ago: the stream said so, positions still show 3 (lag).
    # Sized by the read alone, the exit sold 3 more and the long became a short.
    broker = CountingBroker(rest=3)
    book = fresh_book(3)
    book.apply(update("web1", "COMPLETE", 3, side="SELL", quantity=3))
    p, events, _ = trigger(store, broker, book)
    assert broker.placed == []
    assert p.status is Status.CLOSED and p.reason == "external"
    assert "closed_externally" in events.kinds()


def test_a_trigger_that_sends_nothing_clears_its_marker(store: ProtectionStore) -> None:
    # No broker connected: nothing sent. The marker committed with TRIGGERED must not make a later job
    # (or the trader's Remove) believe an exit may be at the broker.
    p = open_protection(store)
    jobs = ExitJobs(store, lambda _account: None, events=Events(), runner=ThreadRunner(1))
    gate = jobs.submit_gated(p)
    assert gate is not None
    store.transition_many(
        [TransitionRequest(p.id, Status.TRIGGERED, expected=Status.OPEN, events=gate.commit_events)]
    )
    gate.open()
    assert jobs.wait_idle(10)
    assert kinds(store, p.id)[-2:] == ["exit_sending", "exit_not_sent"]
    jobs.withdraw(p.id)  # refused while an exit may be at the broker; allowed here
    assert store.get(p.id).status is Status.EXIT_FAILED
