"""ProtectionService without a network: the tick path's one commit and one exit, the trader's actions and
their refusals, the order tags' owners, and the alerts it raises. The account's broker is a stand-in."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QTimer
from pytestqt.qtbot import QtBot

from tests.factories import FakeBroker, protection
from tests.factories import order as factories_order
from tests.factories import position as factories_position
from trailstop_gui.models.domain import InstrumentId, Product, Protection, Side, Status, TrailRule
from trailstop_gui.models.engine import StopTriggered
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore
from trailstop_gui.services import position_book, protection_service, reconciler, session
from trailstop_gui.services.brokers.base import OrderStatus, OrderType
from trailstop_gui.services.brokers.errors import AuthError
from trailstop_gui.services.brokers.feed_loop import OrderUpdate
from trailstop_gui.services.exit_executor import RetryPolicy, TriggerGate
from trailstop_gui.services.notifier import Alert, AlertKind
from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, SessionState


class Rig:
    """A ProtectionService with one Zerodha account whose orders go to ``broker`` (never started: no feed)."""

    def __init__(self, store: ProtectionStore, qtbot: QtBot, **service: Any) -> None:
        self.store, self.qtbot = store, qtbot
        account = store.add_account("kite", "Zerodha", user_id="AB1234", api_key="key")
        secrets = SecretStore()
        secrets.set(account.id, "access_token", "token")
        self.session = AccountSession(account, secrets)
        self.broker = FakeBroker()
        self.session.broker = self.broker
        self.session.rest.set_access_token = lambda _token: None  # no SDK client to tell
        self.service = ProtectionService(store, retry_policy=RetryPolicy(poll_interval=0.01), **service)
        self.service.add_session(self.session)
        self.alerts: list[Alert] = []
        self.service.notifier.alerted.connect(self.alerts.append)
        self.changed: list[int] = []
        self.service.protection_changed.connect(self.changed.append)
        self.failures: list[tuple[str, str]] = []
        self.service.action_failed.connect(lambda what, why: self.failures.append((what, why)))

    @property
    def account_id(self) -> int:
        return self.session.account_id

    def protect(
        self, side: Side = Side.BUY, *, symbol: str = "INFY", instrument: InstrumentId = 408065
    ) -> Protection:
        """3 shares at 1500.00 with a 2 % trail, OPEN (the stand-in broker holds 3 INFY long)."""
        return protection(self.store, self.account_id, side=side, symbol=symbol, instrument=instrument)

    def wait_status(self, pid: int, status: Status) -> None:
        self.qtbot.waitUntil(lambda: self.store.get(pid).status is status, timeout=10_000)

    def kinds(self) -> list[AlertKind]:
        return [a.kind for a in self.alerts]


@pytest.fixture
def rig(store: ProtectionStore, qtbot: QtBot) -> Iterator[Rig]:
    r = Rig(store, qtbot)
    yield r
    r.service.shutdown()


def fired(p: Protection, ltp: float = 1469.0) -> tuple[int, StopTriggered]:
    return p.id, StopTriggered(str(p.id), ltp=ltp, stop=1470.0)


# ----------------------------------------------------------------- the tick path


def test_a_fired_stop_is_committed_then_exited_once(rig: Rig) -> None:
    p = rig.protect()
    rig.service._on_triggers([fired(p)])
    rig.wait_status(p.id, Status.CLOSED)
    # The same stop reported again (a second tick before the disarm landed) finds it no longer OPEN.
    rig.service._on_triggers([fired(p, 1468.0)])
    assert rig.service.executor.wait_idle(5)
    assert len(rig.broker.placed) == 1
    exit_order = rig.broker.placed[0]
    assert (exit_order.side, exit_order.quantity, exit_order.tag) == (Side.SELL, 3, p.exit_tag)
    closed = rig.store.get(p.id)
    assert closed.exit_price == 1460.0
    triggered_at = [e.price for e in rig.store.events(protection_id=p.id) if e.new == "TRIGGERED"]
    assert triggered_at == [1469.0]  # the tick's price, journalled once
    rig.qtbot.waitUntil(lambda: AlertKind.EXIT_FILLED in rig.kinds(), timeout=5000)
    assert rig.kinds().count(AlertKind.STOP_TRIGGERED) == 1
    triggered = next(a for a in rig.alerts if a.kind is AlertKind.STOP_TRIGGERED)
    assert triggered.message == "INFY: LTP 1469.00 crossed 1470.00; exiting 3"


def test_a_trigger_that_cannot_be_committed_sends_nothing(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    p = rig.protect()

    def disk_full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("database or disk is full")

    monkeypatch.setattr(rig.store, "commit_transitions", disk_full)
    with pytest.raises(OSError):
        rig.service._on_triggers([fired(p)])
    # The gated job was closed with the failed commit: it ends without a send (persist before you act).
    assert rig.service.executor.wait_idle(5)
    assert rig.broker.placed == []
    assert rig.store.get(p.id).status is Status.OPEN
    assert AlertKind.STOP_TRIGGERED not in rig.kinds()


def test_one_tick_firing_a_live_and_an_ended_stop_exits_only_the_live_one(rig: Rig) -> None:
    live = rig.protect()
    ended = rig.protect(symbol="TCS", instrument=2953217)
    rig.store.transition(ended.id, Status.REMOVED)
    rig.service._on_triggers([fired(ended), fired(live)])
    rig.wait_status(live.id, Status.CLOSED)
    assert rig.service.executor.wait_idle(5)
    assert [o.tag for o in rig.broker.placed] == [live.exit_tag]
    assert rig.store.get(ended.id).status is Status.REMOVED


def test_the_exit_is_let_go_when_triggered_commits_and_nothing_is_read_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate opened only once transition_many had read every row back: a read (and the interpreter it
    # holds) between TRIGGERED on disk and the order leaving. Now it opens as the commit returns, and the
    # feed thread reads nothing more while the exit thread needs the interpreter.
    p = rig.protect()
    feed_thread = threading.get_ident()
    seen: list[str] = []  # what the feed thread does inside _on_triggers, in order
    database, store_get, gate_open = rig.store._db, rig.store.get, TriggerGate.open

    def commit() -> None:
        type(database).commit(database)
        if threading.get_ident() == feed_thread:
            seen.append("commit")

    def get(pid: int) -> Protection:
        if threading.get_ident() == feed_thread:
            seen.append("read")
        return store_get(pid)

    def open_gate(gate: TriggerGate) -> None:
        seen.append("open")
        gate_open(gate)

    monkeypatch.setattr(database, "commit", commit)
    monkeypatch.setattr(rig.store, "get", get)
    monkeypatch.setattr(TriggerGate, "open", open_gate)
    rig.service._on_triggers([fired(p)])
    during = list(seen)
    rig.wait_status(p.id, Status.CLOSED)
    assert during[during.index("commit") + 1 :] == ["open"]
    assert len(rig.broker.placed) == 1
    assert rig.kinds().count(AlertKind.STOP_TRIGGERED) == 1


# ----------------------------------------------------------------- the trader's actions


def test_exit_now_commits_before_it_sends_and_refuses_a_second_exit(rig: Rig) -> None:
    p = rig.protect()
    statuses_at_send: list[Status] = []
    place = rig.broker.place_order
    rig.broker.place_order = lambda request: (  # type: ignore[method-assign]
        statuses_at_send.append(rig.store.get(p.id).status) or place(request)
    )
    assert rig.service.exit_now(p.id).status is Status.TRIGGERED
    rig.wait_status(p.id, Status.CLOSED)
    assert statuses_at_send == [Status.TRIGGERED]
    with pytest.raises((ConcurrentTransition, IllegalTransition)):
        rig.service.exit_now(p.id)
    assert rig.service.executor.wait_idle(5)
    assert len(rig.broker.placed) == 1
    assert rig.store.get(p.id).reason == "manual"


def test_exit_all_goes_on_past_a_protection_it_cannot_commit(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = rig.protect(symbol="TCS", instrument=2953217)
    p = rig.protect()
    real = rig.store.transition

    def failing_for_tcs(pid: int, *args: Any, **kwargs: Any) -> Protection:
        if pid == stuck.id:
            raise OSError("disk I/O error")
        return real(pid, *args, **kwargs)

    monkeypatch.setattr(rig.store, "transition", failing_for_tcs)
    assert rig.service.exit_all() == [p.id]
    rig.wait_status(p.id, Status.CLOSED)
    assert rig.store.get(stuck.id).status is Status.OPEN
    assert rig.failures == [("Exit all", "TCS: disk I/O error")]
    assert [o.tag for o in rig.broker.placed] == [p.exit_tag]


def test_remove_sends_nothing_and_keeps_the_position(rig: Rig) -> None:
    p = rig.protect()
    assert rig.service.remove(p.id).status is Status.REMOVED
    assert rig.service.executor.wait_idle(5)
    assert rig.broker.placed == []
    assert p.id in rig.changed


def test_protect_on_a_position_already_protected_whole_is_refused_naming_the_protection(rig: Rig) -> None:
    """A Protect clicked twice before the list refreshed: the second protection would own none of the
    position (the older one's share comes first), and the reconciler would end it as "Position closed
    outside TrailStop" while the trader still holds every share."""
    first = rig.protect()
    with pytest.raises(
        ValueError, match=rf"^position: all 3 of INFY are already protected \(#{first.id} covers 3\)"
    ):
        rig.service.adopt(rig.account_id, factories_position(3), TrailRule.percent(2.0), 0.05)
    assert [p.id for p in rig.store.protections()] == [first.id]
    # Another product or side of the same stock is another position: still protected on its own.
    short = rig.service.adopt(
        rig.account_id, factories_position(-2, product=Product.NRML), TrailRule.percent(2.0), 0.05
    )
    assert (short.side, short.quantity) == (Side.SELL, 2)


def test_protect_on_a_position_protected_in_part_protects_only_the_rest(rig: Rig) -> None:
    """3 INFY protected, 2 more bought outside the app: Protect covers those 2, not all 5 (which the exits'
    sharing would have cut to 2 anyway, showing the trader a protection of 5 that protects 2)."""
    first = rig.protect()
    rest = rig.service.adopt(rig.account_id, factories_position(5), TrailRule.percent(3.0), 0.05)
    assert (rest.quantity, rest.filled_quantity, rest.status) == (2, 2, Status.OPEN)
    with pytest.raises(ValueError, match=rf"#{first.id} covers 3, #{rest.id} covers 2"):
        rig.service.adopt(rig.account_id, factories_position(5), TrailRule.percent(3.0), 0.05)
    # Once the first one has ended, its shares are free to protect again.
    rig.service.remove(first.id)
    again = rig.service.adopt(rig.account_id, factories_position(5), TrailRule.percent(3.0), 0.05)
    assert again.quantity == 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"quantity": 0}, "quantity"),
        ({"account_id": 999}, "account: no connected account 999"),
        ({"product": Product.CNC, "side": Side.SELL}, "side: a CNC sell"),
        ({"order_type": OrderType.LIMIT, "price": None}, "price"),
        ({"order_type": OrderType.LIMIT, "price": 1.0, "rule": TrailRule.points(5.0)}, "stop"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_field_and_nothing_is_stored(
    rig: Rig, change: dict[str, Any], match: str
) -> None:
    fields: dict[str, Any] = {
        "account_id": rig.account_id,
        "instrument": 408065,
        "symbol": "INFY",
        "exchange": "NSE",
        "side": Side.BUY,
        "quantity": 3,
        "product": Product.MIS,
        "tick_size": 0.05,
        "rule": TrailRule.percent(2.0),
    }
    fields.update(change)
    with pytest.raises(ValueError, match=match):
        rig.service.place_entry(EntryRequest(**fields))
    assert rig.store.protections() == []
    assert rig.broker.placed == []


@pytest.mark.parametrize(
    ("side", "stop", "tick", "moved_to"),
    [(Side.BUY, 1470.07, 0.1, 1470.0), (Side.SELL, 1530.02, 0.1, 1530.1)],
)
def test_a_new_tick_size_moves_the_stop_onto_its_grid_never_looser(
    rig: Rig, side: Side, stop: float, tick: float, moved_to: float
) -> None:
    p = rig.protect(side)
    rig.store.update(p.id, kind="test", stop=stop)
    changed = rig.service.set_tick_size(p.id, tick)
    assert changed.tick_size == tick
    assert changed.stop == pytest.approx(moved_to)
    with pytest.raises(ValueError, match="tick size"):
        rig.service.set_tick_size(p.id, 0)
    assert rig.store.get(p.id).tick_size == tick


# ----------------------------------------------------------------- order updates and tags


def test_order_tags_name_their_protection_and_role(rig: Rig) -> None:
    p = rig.protect()
    assert rig.service._owner_of(p.exit_tag) == (rig.store.get(p.id), "exit")
    assert rig.service._owner_of(p.entry_tag) == (rig.store.get(p.id), "entry")
    assert rig.service._owner_of(p.safety_tag) == (rig.store.get(p.id), "safety")
    assert rig.service._owner_of("") == (None, "")
    assert rig.service._owner_of("SOMEONEELSE") == (None, "")


def test_a_fill_the_app_did_not_send_reconciles_at_once(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(rig.service, "reconcile", asked.append)
    update = OrderUpdate(order_id="9", status="COMPLETE", tag="", filled_quantity=5, average_price=1.0)
    rig.service._on_order_update(rig.account_id, update)
    assert asked == [rig.account_id]
    p = rig.protect()
    ours = OrderUpdate(order_id="10", status="COMPLETE", tag=p.exit_tag, filled_quantity=3, average_price=1.0)
    rig.service._on_order_update(rig.account_id, ours)
    assert asked == [rig.account_id]  # our own exit's fill is the exit job's to read, not a surprise


# ----------------------------------------------------------------- alerts


def test_a_protection_whose_position_others_cover_ends_without_a_closed_outside_alert(
    store: ProtectionStore, qtbot: QtBot
) -> None:
    """Two protections of all 3 INFY (a Protect that raced auto-protect): the newer owns none of them and
    ends, but the position is held: "Position closed outside TrailStop" would be false."""
    rig = Rig(store, qtbot, flat_confirm_seconds=0.01)
    try:
        older, newer = rig.protect(), rig.protect()
        rig.service._reconcile_now(rig.account_id)
        assert [store.get(p.id).status for p in (older, newer)] == [Status.OPEN, Status.CLOSED]
        assert AlertKind.CLOSED_EXTERNALLY not in rig.kinds()
        (alert,) = [a for a in rig.alerts if a.protection_id == newer.id]
        assert alert.title == "Protection ended: position protected by another"
        assert "cover all of it" in alert.message and "no exit sent" in alert.message
        assert rig.broker.placed == []
    finally:
        rig.service.shutdown()


def test_an_exit_fill_tells_the_realised_pnl(rig: Rig) -> None:
    long = rig.protect()
    short = rig.protect(Side.SELL, symbol="TCS", instrument=2953217)
    rig.service._on_exit_filled(long.id, 1460.0)
    rig.service._on_exit_filled(short.id, 1460.0)
    filled = [a.message for a in rig.alerts if a.kind is AlertKind.EXIT_FILLED]
    assert filled == [
        "INFY at 1460.00; realised P&L -₹120.00 on 3",
        "TCS at 1460.00; realised P&L +₹120.00 on 3",
    ]


def test_a_refused_token_in_a_reconcile_means_login_needed(rig: Rig) -> None:
    rig.broker.positions_error = AuthError("Incorrect `api_key` or `access_token`.")
    rig.service._reconcile_now(rig.account_id)
    assert rig.session.state is SessionState.LOGIN_NEEDED
    assert not rig.session.has_token()
    assert AlertKind.LOGIN_NEEDED in rig.kinds()


def test_a_feed_down_alert_comes_only_if_the_feed_stays_down(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protection_service, "FEED_DOWN_ALERT_MS", 20)
    states: list[tuple[int, str]] = []
    rig.service.session_state_changed.connect(lambda a, s: states.append((a, s)))
    # Down, then back before the alert is due: its timer is stopped, no alert can follow.
    rig.session._on_feed_state("reconnecting", "")
    timer = rig.service._feed_down[rig.account_id]
    assert timer.isActive()
    rig.session._on_feed_state("live", "")
    assert not timer.isActive() and rig.account_id not in rig.service._feed_down
    # Down and staying down: the alert comes.
    rig.session._on_feed_state("reconnecting", "")
    rig.qtbot.waitUntil(lambda: AlertKind.FEED_DOWN in rig.kinds(), timeout=5000)
    assert rig.kinds().count(AlertKind.FEED_DOWN) == 1
    assert states == [(rig.account_id, s) for s in ("reconnecting", "live", "reconnecting")]


def test_feed_drops_leave_no_timers_behind(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each drop starts a timer for its alert; a day of reconnects must not pile them up in the service."""
    monkeypatch.setattr(protection_service, "FEED_DOWN_ALERT_MS", 20)

    def timers() -> int:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        return len(rig.service.findChildren(QTimer))

    before = timers()
    for _ in range(5):  # back before the alert is due
        rig.session._on_feed_state("reconnecting", "")
        rig.session._on_feed_state("live", "")
    rig.session._on_feed_state("reconnecting", "")  # and once long enough for the alert
    rig.qtbot.waitUntil(lambda: AlertKind.FEED_DOWN in rig.kinds(), timeout=5000)
    rig.session._on_feed_state("live", "")
    assert timers() == before


def pending_entry(rig: Rig) -> Protection:
    """3 INFY to buy at market with a 2 % trail: PENDING, its entry not sent yet."""
    return rig.store.create_protection(
        account_id=rig.account_id,
        broker="kite",
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=3,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
    )


def test_an_entry_update_for_an_entry_ended_meanwhile_is_not_an_exception(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first update of an entry whose reply was lost names its order; the protection was read PENDING,
    then ended on another thread (the trader's cancel, a reconcile) before the order id was written: it
    used to raise into the feed thread's order-update handling."""
    p = pending_entry(rig)
    owner_of = rig.service._owner_of

    def read_then_cancelled(tag: str) -> tuple[Protection | None, str]:
        found = owner_of(tag)
        rig.store.transition(p.id, Status.CANCELLED, expected=Status.PENDING, reason="entry cancelled")
        return found

    monkeypatch.setattr(rig.service, "_owner_of", read_then_cancelled)
    update = OrderUpdate(order_id="E1", status="OPEN", tag=p.entry_tag, filled_quantity=0, average_price=0.0)
    rig.service._on_order_update(rig.account_id, update)
    assert rig.store.get(p.id).status is Status.CANCELLED and rig.store.get(p.id).entry_order_id is None


def test_an_entry_rejected_before_its_reply_is_read_is_not_an_exception(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kite answers a placed order with its id, then its RMS may reject it (Kite forum, discussion 9410: "the
    200 response ... doesn't guarantee the execution"); the pushed REJECTED update can end the protection
    before the reply is read. Writing the order id then raised in the entry task (logged as an ERROR)."""
    p = pending_entry(rig)
    place = rig.broker.place_order

    def accepted_then_rejected(request: Any) -> str:
        order_id = place(request)
        rig.store.transition(p.id, Status.REJECTED, expected=Status.PENDING, reason="entry rejected")
        return order_id

    monkeypatch.setattr(rig.broker, "place_order", accepted_then_rejected)
    watched: list[str] = []
    monkeypatch.setattr(rig.service, "_watch_entry", lambda _pid, _broker, order_id: watched.append(order_id))
    request = EntryRequest(
        account_id=rig.account_id,
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        quantity=3,
        product=Product.MIS,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
    )
    rig.service._send_entry(p, request)
    ended = rig.store.get(p.id)
    assert (ended.status, ended.reason) == (Status.REJECTED, "entry rejected")
    assert len(rig.broker.placed) == 1 and watched == []


class TagBook:
    """An order book that lists an order by its tag only after ``hidden`` look-ups (a lagging book)."""

    def __init__(self, hidden: int) -> None:
        self.hidden, self.looks = hidden, 0

    def find_order_by_tag(self, tag: str) -> Any:
        self.looks += 1
        if self.looks <= self.hidden:
            return None
        return factories_order("E1", tag=tag)


def test_an_entry_looked_up_by_its_tag_backs_off_by_the_one_retry_policy(
    store: ProtectionStore, qtbot: QtBot
) -> None:
    """After a lost reply the entry is looked up by its tag at 0.2 s, doubling to 2 s, over the watch
    window, on the service's injected clock and sleep (services/retry.py): no real time passes here."""
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    service = ProtectionService(store, sleep=sleep, clock=lambda: now[0])
    service.start()  # no account logged in: nothing else runs
    try:
        p = protection(store, status=Status.PENDING)
        assert service._find_entry(p.id, TagBook(hidden=5)) == "E1"  # type: ignore[arg-type]
        assert pauses == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0])
        pauses.clear()
        never = TagBook(hidden=10_000)
        assert service._find_entry(p.id, never) is None  # type: ignore[arg-type]
        assert sum(pauses) >= protection_service.ENTRY_WATCH_SECONDS > sum(pauses[:-1])
        assert max(pauses) == 2.0 and never.looks == len(pauses)
    finally:
        service.shutdown()


def test_a_placed_entry_is_watched_every_poll_over_the_window_without_real_time(
    store: ProtectionStore, qtbot: QtBot
) -> None:
    """A resting entry is read every ENTRY_POLL_SECONDS until the watch window ends (then order updates
    and the reconcile take over), on the injected clock: 20 s of watching pass here in no time."""
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    class Resting:
        reads = 0

        def order(self, order_id: str) -> Any:
            self.reads += 1
            return factories_order(order_id, OrderStatus.OPEN, filled=0)

    service = ProtectionService(store, sleep=sleep, clock=lambda: now[0])
    service.start()  # no account logged in: nothing else runs
    try:
        p = protection(store, status=Status.PENDING)
        book = Resting()
        service._watch_entry(p.id, book, "E1")  # type: ignore[arg-type]
        polls = round(protection_service.ENTRY_WATCH_SECONDS / protection_service.ENTRY_POLL_SECONDS)
        assert set(pauses) == {protection_service.ENTRY_POLL_SECONDS}
        assert book.reads == len(pauses) and abs(len(pauses) - polls) <= 1
        assert store.get(p.id).status is Status.PENDING
    finally:
        service.shutdown()


def test_the_waits_after_a_flat_read_and_for_a_trailing_read_are_the_app_s_unless_a_test_scales_them(
    store: ProtectionStore, qtbot: QtBot
) -> None:
    """The reconciler reads a flat position again after the retry policy's flat_confirm (the app's 2 s), the
    position books trust a read the policy's positions_lag after the stream came up (5 s), and the session's
    REST calls give up after 7 s: the figures the simulator tests scale down through these same arguments."""
    app = ProtectionService(store)
    try:
        assert (
            app.reconciler.flat_confirm_seconds
            == reconciler.FLAT_CONFIRM_SECONDS
            == RetryPolicy().flat_confirm
        )
        assert app._book_of(1, FakeBroker()).lag == position_book.POSITIONS_LAG  # type: ignore[union-attr]
    finally:
        app.shutdown()
    scaled = ProtectionService(store, retry_policy=RetryPolicy(flat_confirm=0.5, positions_lag=1.25))
    apart = ProtectionService(store, retry_policy=RetryPolicy(flat_confirm=0.5), flat_confirm_seconds=2.0)
    try:
        assert scaled.reconciler.flat_confirm_seconds == 0.5
        assert scaled._book_of(1, FakeBroker()).lag == 1.25  # type: ignore[union-attr]
        assert apart.reconciler.flat_confirm_seconds == 2.0 and apart.executor.policy.flat_confirm == 0.5
    finally:
        scaled.shutdown()
        apart.shutdown()
    account = store.add_account("kite", "Zerodha", user_id="AB1234", api_key="key")
    assert AccountSession(account, SecretStore()).rest._timeout == session.REQUEST_TIMEOUT == 7.0
    assert AccountSession(account, SecretStore(), request_timeout=1.5).rest._timeout == 1.5
