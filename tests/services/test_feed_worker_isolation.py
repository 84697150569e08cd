"""FeedWorker: one bad protection never unarms the others; a trigger that cannot be committed is re-armed."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from pytestqt.qtbot import QtBot

from tests.services.test_feed_worker import (
    kite_session,
    protect,
    subscribed_modes,
    wait_until,
)
from trailstop_gui.models.domain import Status
from trailstop_gui.models.engine import StopTriggered
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.simulator.runner import SimulatorHandle


def test_a_stored_stop_below_zero_does_not_unarm_the_batch(
    qtbot: QtBot,
    simulator: SimulatorHandle,
    store: ProtectionStore,
) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    feed = session.start_feed(store, on_trigger=lambda _pid, _event: None)
    try:
        # A row saved before stops <= 0 were refused: arming it raises; it used to take the batch with it.
        broken = replace(protect(store, session.account_id), stop=-2.0)
        good = protect(store, session.account_id)
        feed.arm([broken, good])
        wait_until(lambda: subscribed_modes(simulator) == ["full"], what="the good one subscribed")
        wait_until(lambda: feed.engine.is_armed(str(good.id)), what="the good one armed")
        assert not feed.engine.is_armed(str(broken.id)) and feed.armed_ids() == {good.id}
    finally:
        session.stop_feed()


def test_a_trigger_whose_commit_fails_is_armed_again_and_fires_again(
    qtbot: QtBot,
    simulator: SimulatorHandle,
    store: ProtectionStore,
) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    handled: list[tuple[int, StopTriggered]] = []

    def on_trigger(pid: int, event: StopTriggered) -> None:
        if not handled:
            handled.append((-pid, event))
            raise OSError("disk I/O error")  # the commit of TRIGGERED failed: still OPEN in the store
        handled.append((pid, event))

    feed = session.start_feed(store, on_trigger=on_trigger)
    try:
        p = protect(store, session.account_id)
        feed.arm([p])
        wait_until(lambda: feed.engine.is_armed(str(p.id)), what="armed")
        simulator.set_price("NSE:INFY", 1460.0, bid=1459.95, ask=1460.05)
        wait_until(lambda: len(handled) >= 1, what="the first trigger")
        # Armed again at once: the next tick through the stop (perhaps one already on its way) fires again.
        simulator.set_price("NSE:INFY", 1459.0, bid=1458.95, ask=1459.05)
        wait_until(lambda: len(handled) == 2, what="the second trigger")
        assert [pid for pid, _ in handled] == [-p.id, p.id]
    finally:
        session.stop_feed()


@pytest.mark.parametrize("batched", [False, True], ids=["one trigger", "the tick's triggers"])
def test_a_stop_being_committed_still_counts_as_armed(
    qtbot: QtBot,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    batched: bool,
) -> None:
    """Found by a chaos run (seed 31001): the reconciler's "OPEN but not armed" look fell between the engine
    letting go of a fired stop and the commit of TRIGGERED; it armed the protection again, which fired a
    second time after its exit had closed it. Until its handler returns, a fired stop counts as armed."""
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    seen_while_committing: list[frozenset[int]] = []

    def on_triggers(fired: list[tuple[int, StopTriggered]]) -> None:
        seen_while_committing.append(feed.armed_ids())  # what a reconcile on another thread reads now

    feed = session.start_feed(
        store,
        on_trigger=lambda pid, event: on_triggers([(pid, event)]),
        on_triggers=on_triggers if batched else None,
    )
    try:
        p = protect(store, session.account_id)
        feed.arm([p])
        wait_until(lambda: feed.engine.is_armed(str(p.id)), what="armed")
        simulator.set_price("NSE:INFY", 1460.0, bid=1459.95, ask=1460.05)
        wait_until(lambda: bool(seen_while_committing), what="the trigger")
        assert seen_while_committing == [frozenset({p.id})]
        wait_until(lambda: feed.armed_ids() == frozenset(), what="let go once handled")
    finally:
        session.stop_feed()


def test_an_arm_that_arrives_after_the_stop_fired_is_not_armed(
    qtbot: QtBot,
    simulator: SimulatorHandle,
    store: ProtectionStore,
) -> None:
    """A thread read the protection OPEN and asked for it to be armed (a reconcile's entry fill, a rule or
    tick size changed); its stop fired before the feed thread got to the request: arming that snapshot would
    let it fire a second time, with its exit already on its way."""
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    feed = session.start_feed(store, on_trigger=lambda _pid, _event: None)
    try:
        fired, other = protect(store, session.account_id), protect(store, session.account_id)
        store.transition(fired.id, Status.TRIGGERED, expected=Status.OPEN, reason="stop")
        feed.arm([fired])  # the snapshot still says OPEN
        feed.arm([other])  # handled after it, in order, on the feed thread
        wait_until(lambda: feed.engine.is_armed(str(other.id)), what="the later one armed")
        assert not feed.engine.is_armed(str(fired.id)) and feed.armed_ids() == {other.id}
    finally:
        session.stop_feed()


def test_an_arm_on_its_way_to_the_feed_thread_counts_as_armed(
    qtbot: QtBot,
    simulator: SimulatorHandle,
    store: ProtectionStore,
) -> None:
    """Found by chaos seed 31031: a reconcile 40 ms after an adoption found it "OPEN but not armed" (its arm
    still queued for the feed thread) and armed it a second time, from a staler snapshot."""
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    feed = session.start_feed(store, on_trigger=lambda _pid, _event: None)
    busy, release = threading.Event(), threading.Event()
    try:
        wait_until(lambda: feed._aloop is not None, what="the feed thread's loop")
        p = protect(store, session.account_id)
        feed._call(lambda: (busy.set(), release.wait(10)))  # the feed thread is busy elsewhere
        assert busy.wait(10)
        feed.arm([p])
        assert p.id in feed.armed_ids() and not feed.engine.is_armed(str(p.id))
        release.set()
        wait_until(lambda: feed.engine.is_armed(str(p.id)), what="armed")
        assert feed.armed_ids() == {p.id}
    finally:
        release.set()
        session.stop_feed()


def test_a_stale_snapshot_armed_again_never_takes_the_stop_back(
    qtbot: QtBot,
    simulator: SimulatorHandle,
    store: ProtectionStore,
) -> None:
    """The engine trailed the stop up; a re-arm from a snapshot read before that (the store's stop lags the
    engine's by up to a flush) used to put the stop back where the snapshot had it: against the trader."""
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    feed = session.start_feed(store, on_trigger=lambda _pid, _event: None)
    try:
        stale = protect(store, session.account_id)
        feed.arm([stale])
        wait_until(lambda: feed.engine.is_armed(str(stale.id)), what="armed")
        first = feed.engine.stop(str(stale.id))
        simulator.set_price("NSE:INFY", 1560.0, bid=1559.95, ask=1560.05)
        wait_until(lambda: feed.engine.stop(str(stale.id)) > first, what="the stop trailed up")
        trailed = feed.engine.stop(str(stale.id))
        other = protect(store, session.account_id)
        feed.arm([stale])
        feed.arm([other])  # handled after it, in order, on the feed thread
        wait_until(lambda: feed.engine.is_armed(str(other.id)), what="the later one armed")
        assert feed.engine.stop(str(stale.id)) >= trailed > stale.stop  # type: ignore[operator]
    finally:
        session.stop_feed()
