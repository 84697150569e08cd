"""The tick path's exit with the live position book: sized without a round trip when the book vouches,
by a positions read when it does not, never a flip when a sale outside the app is seen before REST shows it,
and the "exit_sending" marker committed with TRIGGERED (one fsync before the order, not two)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from tests.factories import Events, exit_jobs, position
from tests.factories import FakeBroker as Broker
from tests.factories import protection as open_protection
from tests.unit.services.test_position_book import Clock, update
from trailstop_gui.models.domain import Product, Protection, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore, TransitionRequest
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, OrderRequest, Position
from trailstop_gui.services.brokers.kite import order_from_kite
from trailstop_gui.services.exit_jobs import ExitJobs, RetryPolicy, ThreadRunner, TriggerGate
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


def test_a_gated_job_works_its_exit_out_only_once_the_commit_is_under_way(
    store: ProtectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sized before the commit, the job held the interpreter the commit needed (1-2 ms of the tick path in
    one exit of three); it now waits for ``committing()``, then sizes while the commit waits for the disk."""
    steps: list[str] = []
    parked = threading.Event()
    original = TriggerGate.wait_committing

    def wait_committing(gate: TriggerGate, timeout: float = 10.0) -> None:
        steps.append("job waits")
        parked.set()
        original(gate, timeout)

    monkeypatch.setattr(TriggerGate, "wait_committing", wait_committing)
    broker = CountingBroker(rest=3)
    positions = broker.positions

    def read() -> list[Position]:
        steps.append("job sizes")
        return positions()

    broker.positions = read  # type: ignore[method-assign]
    p = open_protection(store)
    jobs, _events, _sleeps = exit_jobs(store, broker)
    try:
        gate = jobs.submit_gated(p)
        assert gate is not None
        assert parked.wait(10), "the job never waited for the commit"
        committing = jobs.store.commit_transitions(
            [TransitionRequest(p.id, Status.TRIGGERED, expected=Status.OPEN, events=gate.commit_events)],
            before_commit=lambda: (steps.append("rows written"), gate.committing()),
        )
        assert committing == [None]
        gate.open()
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    assert steps[:3] == ["job waits", "rows written", "job sizes"]
    assert [r.quantity for r in broker.placed] == [3]


def test_a_gate_closed_before_its_commit_began_lets_the_job_end_at_once(store: ProtectionStore) -> None:
    broker = CountingBroker()
    p = open_protection(store)
    jobs, _events, _sleeps = exit_jobs(store, broker)
    try:
        gate = jobs.submit_gated(p)
        assert gate is not None
        gate.close()  # the batch was refused before any row was written: no committing() comes
        assert jobs.wait_idle(5)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    assert broker.placed == []


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


# ----------------------------------------------------------------------------- twins (issue 13 item 2)


def twins_one_closed(store: ProtectionStore) -> tuple[Protection, Protection]:
    """Two protections on the 3 INFY: the first one's exit sold the 3 and was reported filled just now;
    the second one fired meanwhile and waits (TRIGGERED) to be sized."""
    first = open_protection(store)
    second = open_protection(store, first.account_id)
    store.transition(first.id, Status.TRIGGERED, reason="stop")
    store.transition(first.id, Status.EXITING, exit_order_id="X1", exit_quantity=3)
    first = store.transition(first.id, Status.CLOSED, reason="stop", exit_quantity=3, exit_price=1460.0)
    second = store.transition(second.id, Status.TRIGGERED, reason="stop")
    return first, second


def resume_jobs(store: ProtectionStore, broker: Broker, book: PositionBook | None) -> tuple[ExitJobs, Events]:
    events = Events()
    jobs = ExitJobs(
        store,
        lambda _account: broker,  # type: ignore[arg-type, return-value]
        events=events,
        runner=ThreadRunner(2),
        policy=RetryPolicy(poll_interval=0.01, positions_lag=0.3),
        sleep=lambda _seconds: None,
    )
    jobs.book_for = lambda _account: book
    return jobs, events


def live_book(net: int) -> PositionBook:
    """A book on the real clock (no lag of its own), stream up, corrected twice: it vouches for ``net``."""
    book = PositionBook(KITE_CAPABILITIES, order_from_kite, lag=0.0)
    book.stream_up()
    rows = [position(net)]
    for _ in range(2):
        book.correct(rows, None, time.monotonic())
    return book


@pytest.mark.parametrize("with_book", [True, False], ids=["book-missed-the-fill", "no-book"])
def test_a_twin_resumed_on_a_figure_without_the_others_fill_waits_and_goes_on_by_itself(
    store: ProtectionStore, with_book: bool
) -> None:
    """The chaos run's flip, as the reconciler's resume (or a restart) meets it: the figure still shows the
    3 that the first exit just sold (a lagging positions read; a book corrected before that fill, whose
    stream never counted it). The second exit used to sell those 3 again: the long became a short."""
    first, second = twins_one_closed(store)
    broker = CountingBroker(rest=3)
    jobs, events = resume_jobs(store, broker, live_book(3) if with_book else None)
    try:
        assert jobs.submit(second.id, recover=True)
        assert jobs.wait_idle(10)
        assert broker.placed == []
        assert store.get(second.id).status is Status.TRIGGERED
        assert "exit_waiting" in kinds(store, second.id)
        broker.rest = 0  # the positions endpoint catches up with the first exit's fill
        deadline = time.monotonic() + 10
        while store.get(second.id).status is not Status.CLOSED:  # resumed by its timer, nobody else
            assert time.monotonic() < deadline, "the waiting exit was never resumed"
            time.sleep(0.02)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    assert broker.placed == []
    assert store.get(second.id).reason == "external"
    assert store.get(first.id).exit_quantity == 3


def test_a_twins_fill_the_stream_counted_lets_the_book_size_at_once(store: ProtectionStore) -> None:
    first, second = twins_one_closed(store)
    book = live_book(3)
    sold = update("X1", "COMPLETE", 3, side="SELL", quantity=3)
    book.apply(replace(sold, tag=first.exit_tag))
    broker = CountingBroker(rest=0)
    jobs, _events = resume_jobs(store, broker, book)
    try:
        assert jobs.submit(second.id, recover=True)
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    # The book shows the fill: flat at once (confirmed by one positions read), nothing waited for.
    assert broker.placed == []
    assert store.get(second.id).status is Status.CLOSED
    assert "exit_waiting" not in kinds(store, second.id)


class TrailingBroker(CountingBroker):
    """Positions that show an exit's fill only ``lag`` seconds after it was placed (the exit fills at
    once: ``order`` reads COMPLETE): the positions endpoint trailing the order book."""

    def __init__(self, rest: int, lag: float) -> None:
        super().__init__(rest)
        self.lag = lag
        self.placed_at: list[float] = []

    def place_order(self, request: OrderRequest) -> str:
        self.placed_at.append(time.monotonic())
        return super().place_order(request)

    def positions(self) -> list[Position]:
        shown = sum(
            r.quantity
            for r, at in zip(self.placed, self.placed_at, strict=False)
            if at + self.lag <= time.monotonic()
        )
        self.reads += 1
        return [position(self.rest - shown)]


def test_members_of_a_basket_on_one_position_exit_it_once(store: ProtectionStore) -> None:
    """A basket's breach exits its members at once (exit_now, then submit): two on one 3-share long. The
    second waits while the first is at the broker, is resumed when it fills, and reads positions that still
    show the 3 (they trail the fill by 0.25 s): it waits for a read that shows it, then ends with nothing
    sold. It used to be resumed a look-up window after the fill and sold the 3 again."""
    first = open_protection(store)
    second = open_protection(store, first.account_id)
    for p in (first, second):
        store.transition(p.id, Status.TRIGGERED, reason="basket")
    broker = TrailingBroker(rest=3, lag=0.25)
    jobs = ExitJobs(
        store,
        lambda _account: broker,  # type: ignore[arg-type, return-value]
        events=Events(),
        runner=ThreadRunner(2),
        policy=RetryPolicy(poll_interval=0.01, lookup_window=0.02, positions_lag=0.3),
        sleep=lambda _seconds: None,
    )
    try:
        assert jobs.submit(first.id) and jobs.submit(second.id)
        deadline = time.monotonic() + 10
        while store.get(second.id).status is not Status.CLOSED:  # its own timer resumes it
            assert time.monotonic() < deadline, "the waiting member was never resumed"
            time.sleep(0.02)
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    assert [r.quantity for r in broker.placed] == [3]
    assert store.get(first.id).status is Status.CLOSED
    assert store.get(second.id).reason == "external"


def test_the_share_is_worked_out_without_reading_every_live_protection(
    store: ProtectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job works its share out while the feed thread commits TRIGGERED; reading all the account's
    # protections (60 in the bench: 2-10 ms of the interpreter) made that commit wait for it.
    account = store.add_account("kite", "Other stocks")
    for token in range(20):
        store.create_protection(
            account_id=account.id,
            broker="kite",
            instrument=1000 + token,
            symbol=f"S{token}",
            exchange="NSE",
            side=Side.BUY,
            product=Product.CNC,
            quantity=1,
            filled_quantity=1,
            tick_size=0.05,
            rule=TrailRule.percent(50.0),
            entry_price=1.0,
            status=Status.OPEN,
        )

    broker = CountingBroker()
    read_all = store.live
    orders_sent_at_each_read: list[int] = []

    def every_live_one(account_id: int | None = None) -> list[Protection]:
        orders_sent_at_each_read.append(len(broker.placed))
        return read_all(account_id)

    monkeypatch.setattr(store, "live", every_live_one)
    p, _, _ = trigger(store, broker, fresh_book(3))
    assert [(r.side, r.quantity) for r in broker.placed] == [(Side.SELL, 3)]
    assert p.status is Status.CLOSED
    assert 0 not in orders_sent_at_each_read  # after the exit (the watcher's bookkeeping): not on the path


class PreparingBroker(CountingBroker):
    """A broker that prepares orders ahead (as KiteBroker does); ``calls`` in the order they came."""

    def __init__(self, rest: int = 3) -> None:
        super().__init__(rest)
        self.calls: list[tuple[str, OrderRequest]] = []

    def prepare_order(self, request: OrderRequest) -> None:
        self.calls.append(("prepare", request))

    def place_order(self, request: OrderRequest) -> str:
        self.calls.append(("place", request))
        return super().place_order(request)


def test_a_ticks_exit_is_prepared_before_its_gate_and_the_same_order_is_placed(
    store: ProtectionStore,
) -> None:
    """The order is worked out down to its request before the gate (while TRIGGERED commits); the one
    placed once the gate opens is that very one (KiteBroker sends its prepared bytes only for an equal
    request: tests/unit/services/brokers/test_kite_adapter.py)."""
    broker = PreparingBroker()
    p, _, _ = trigger(store, broker, fresh_book(3))
    assert p.status is Status.CLOSED
    [(first, prepared), (then, placed)] = broker.calls
    assert (first, then) == ("prepare", "place")
    assert placed == prepared and (placed.side, placed.quantity, placed.tag) == (Side.SELL, 3, p.exit_tag)


def test_an_exit_with_nothing_to_sell_prepares_nothing(store: ProtectionStore) -> None:
    broker = PreparingBroker(rest=0)
    p, _, _ = trigger(store, broker, fresh_book(0), flat_confirm=0.0)
    assert broker.calls == []
    assert p.status is Status.CLOSED and p.reason == "external"
