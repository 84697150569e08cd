"""FeedWorker against the simulator: ticks reach the engine; drops, stalls and dead tokens are survived."""

from __future__ import annotations

import time

import pytest
from pytestqt.qtbot import QtBot

from tests.factories import protection, quick_reconnects, sim_session
from tests.services.conftest import control
from trailstop_gui.models.domain import Product, Protection, Side
from trailstop_gui.models.engine import StopTriggered
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.feed_loop import FeedState
from trailstop_gui.services.feed_worker import FeedWorker
from trailstop_gui.services.session import AccountSession
from trailstop_gui.simulator.runner import SimulatorHandle

INFY = 408065


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def kite_session(sim: SimulatorHandle, store: ProtectionStore, watchdog: float = 2.5) -> AccountSession:
    return sim_session(store, sim, "kite", **quick_reconnects(watchdog))


def protect(store: ProtectionStore, account_id: int, product: Product = Product.MIS) -> Protection:
    """A long at 1500.00 with a 2 % trail: its stop starts at 1470.00."""
    return protection(store, account_id, quantity=1, product=product, instrument=INFY)


def subscribed_modes(sim: SimulatorHandle) -> list[str]:
    modes = []
    for connection in control(sim, "feeds"):
        for token, mode in (connection.get("subscriptions") or {}).items():
            if int(token) == INFY:
                modes.append(mode)
    return modes


def start(
    session: AccountSession, store: ProtectionStore, triggers: list[tuple[int, StopTriggered]]
) -> FeedWorker:
    return session.start_feed(store, on_trigger=lambda pid, event: triggers.append((pid, event)))


def test_ticks_reach_the_engine_and_fire(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    triggers: list[tuple[int, StopTriggered]] = []
    feed = start(session, store, triggers)
    try:
        p = protect(store, session.account_id)
        feed.arm([p])
        # MIS trails on the bid, so the feed must ask for a mode that carries depth.
        wait_until(lambda: subscribed_modes(simulator) == ["full"], what="a full-mode subscription")
        simulator.set_price("NSE:INFY", 1520.0, bid=1519.90, ask=1520.10)
        wait_until(lambda: feed.engine.stop(str(p.id)) == 1489.50, what="the stop to trail the bid")
        store.flush()
        assert store.get(p.id).stop == 1489.50
        simulator.set_price("NSE:INFY", 1489.0, bid=1488.95, ask=1489.05)
        wait_until(lambda: bool(triggers), what="the trigger")
        assert triggers == [(p.id, StopTriggered(str(p.id), 1489.0, 1489.5))]
        assert not feed.engine.is_armed(str(p.id))
    finally:
        session.stop_feed()


def test_cnc_subscribes_without_depth(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    feed = start(session, store, [])
    try:
        feed.arm([protect(store, session.account_id, Product.CNC)])
        wait_until(lambda: subscribed_modes(simulator) == ["ltp"], what="an ltp-mode subscription")
    finally:
        session.stop_feed()


def test_watched_instruments_bring_quotes_and_arm_nothing(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    """A basket's member armed on its underlying still needs its own price: watched, never armed."""
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    feed = start(session, store, [])
    try:
        feed.watch_instruments([INFY])
        wait_until(lambda: subscribed_modes(simulator) == ["ltp"], what="an ltp-mode subscription")
        simulator.set_price("NSE:INFY", 1512.0)
        wait_until(lambda: (q := feed.latest_quote(INFY)) is not None and q.ltp == 1512.0, what="its quote")
        assert feed.armed_ids() == frozenset() and len(feed.engine) == 0
        p = protect(store, session.account_id)
        feed.arm([p])  # an MIS on it as well: depth wins
        wait_until(lambda: subscribed_modes(simulator) == ["full"], what="a full-mode subscription")
        feed.watch_instruments([])
        feed.disarm(p.id)
        wait_until(lambda: subscribed_modes(simulator) == [], what="no subscription left")
    finally:
        session.stop_feed()


@pytest.mark.parametrize("fault", [{"fault": "drop_ws"}, {"fault": "stall_ws", "seconds": 3.5}])
def test_recovers_and_resubscribes(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore, fault: dict[str, object]
) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    session = kite_session(simulator, store)
    triggers: list[tuple[int, StopTriggered]] = []
    feed = start(session, store, triggers)
    reconnects: list[bool] = []
    feed.reconnected.connect(lambda: reconnects.append(True))
    try:
        p = protect(store, session.account_id)
        feed.arm([p])
        wait_until(lambda: subscribed_modes(simulator) == ["full"], what="the first subscription")
        connects_before = feed.loop.connects
        control(simulator, "fault", fault)
        started = time.monotonic()
        wait_until(lambda: feed.loop.connects > connects_before, timeout=8, what="a reconnect")
        wait_until(lambda: subscribed_modes(simulator) == ["full"], timeout=8, what="the resubscription")
        recovered_in = time.monotonic() - started
        assert recovered_in < 6.0
        # Ticks sent into a stalled socket are lost, as on a real network: move the price once it flows.
        wait_until(
            lambda: not any(c["stalled"] for c in control(simulator, "feeds")), what="the stall to end"
        )
        # The stop still fires after recovery, exactly once.
        simulator.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
        wait_until(lambda: bool(triggers), what="the trigger after recovery")
        # Exactly once: the fired protection has left the engine, and two later ticks that cross the stop
        # again are read in order; once the second shows as the latest price, the first went through the
        # engine too, and neither fired anything.
        assert not feed.engine.is_armed(str(p.id))
        simulator.set_price("NSE:INFY", 1390.0, bid=1389.95, ask=1390.05)
        simulator.set_price("NSE:INFY", 1380.0, bid=1379.95, ask=1380.05)
        wait_until(lambda: getattr(feed.latest_quote(INFY), "ltp", None) == 1380.0, what="the later ticks")
        assert len(triggers) == 1
        qtbot.waitUntil(lambda: bool(reconnects), timeout=3000)
    finally:
        session.stop_feed()


def test_expired_token_means_login_needed_without_a_storm(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    session = kite_session(simulator, store)
    feed = start(session, store, [])
    try:
        wait_until(lambda: feed.loop.state is FeedState.LIVE, what="live")
        control(simulator, "fault", {"fault": "expire_tokens"})
        control(simulator, "fault", {"fault": "drop_ws"})
        wait_until(lambda: feed.loop.state is FeedState.LOGIN_NEEDED, what="login needed")
        qtbot.waitUntil(lambda: session.state.value == "login needed", timeout=3000)
        connects = feed.loop.connects
        # No storm: the loop has ended for good (a new login builds a new feed), so it cannot reconnect.
        assert feed.wait(5000), "the feed thread must end once the token is refused"
        assert feed.loop.connects == connects
        assert control(simulator, "feeds") == []
        assert not session.has_token()
    finally:
        session.stop_feed()


def upstox_session(sim: SimulatorHandle, store: ProtectionStore) -> AccountSession:
    return sim_session(store, sim, "upstox", **quick_reconnects())


@pytest.mark.parametrize("fault", [None, {"fault": "drop_ws"}, {"fault": "stall_ws", "seconds": 6}])
def test_upstox_feed_quiet_market_stall_and_drop(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore, fault: dict[str, object] | None
) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    session = upstox_session(simulator, store)
    key = next(i["upstox_key"] for i in control(simulator, "instruments") if i["symbol"] == "NSE:INFY")
    p = protection(store, session.account_id, quantity=1, broker="upstox", instrument=key)
    triggers: list[tuple[int, StopTriggered]] = []
    feed = start(session, store, triggers)
    try:
        feed.arm([p])
        wait_until(lambda: feed.loop.state is FeedState.LIVE, what="live")
        if fault is None:
            # A quiet market sends nothing on Upstox (no heartbeats): that is no reason to reconnect. An hour
            # of it passes on the loop's clock, which its watchdog reads (see the unit test_feed_loop.py),
            # instead of seconds of the test's time; the stop then fires on the first socket.
            feed.loop.clock = lambda: time.monotonic() + 3600.0
            assert not feed.loop.protocol.silence_means_dead
        else:
            control(simulator, "fault", fault)
            wait_until(lambda: feed.loop.connects > 1, timeout=15, what="a reconnect")
            wait_until(
                lambda: not any(c["stalled"] for c in control(simulator, "feeds")), what="the stall to end"
            )
            wait_until(lambda: feed.loop.state is FeedState.LIVE, timeout=10, what="live again")
        simulator.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
        wait_until(lambda: bool(triggers), what="the trigger")
        assert [pid for pid, _ in triggers] == [p.id]
        if fault is None:
            assert feed.loop.connects == 1 and feed.loop.state is FeedState.LIVE
    finally:
        session.stop_feed()


def test_upstox_order_updates_arrive_on_the_portfolio_stream(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    from trailstop_gui.services.brokers.base import OrderRequest
    from trailstop_gui.services.brokers.feed_loop import OrderUpdate

    simulator.set_price("NSE:INFY", 1500.0)
    session = upstox_session(simulator, store)
    updates: list[OrderUpdate] = []
    feed = session.start_feed(store, on_trigger=lambda pid, event: None, on_order_update=updates.append)
    try:
        assert feed.order_loop is not None
        wait_until(
            lambda: feed.order_loop is not None and feed.order_loop.state is FeedState.LIVE,
            what="orders live",
        )
        key = next(i["upstox_key"] for i in control(simulator, "instruments") if i["symbol"] == "NSE:INFY")
        order_id = session.broker.place_order(
            OrderRequest(
                symbol="INFY",
                exchange="NSE",
                instrument=key,
                side=Side.BUY,
                quantity=1,
                product=Product.MIS,
                tag="PUSHTEST",
            )
        )
        wait_until(
            lambda: any(u.order_id == order_id and u.status == "complete" for u in updates),
            what="the pushed fill",
        )
        assert all(u.tag == "PUSHTEST" for u in updates if u.order_id == order_id)
    finally:
        session.stop_feed()
