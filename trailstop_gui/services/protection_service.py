"""ProtectionService: the API the views and headless mode call; it wires sessions, feeds, exits, reconciles.

Thread rules:
- Trader actions return at once. Anything that talks to a broker runs on the ``actions`` pool; the GUI
  learns the outcome from signals.
- A fired stop is handled in the feed thread that saw it: TRIGGERED is committed there, then the exit job
  is handed to the executor. The GUI thread is never on that path.
- Reconciles run one at a time on their own pool: at start-up, after every (re)connect and every 30 s.
- Broker-held safety stops (``safety``, services/safety_stop.py) follow the trail from one worker thread
  per account; the feed only notifies them of stop moves, and the exit path asks them before every exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal

from trailstop_gui.models.domain import (
    InstrumentId,
    Product,
    Protection,
    SafetyState,
    Side,
    Status,
    TrailRule,
    check_safety_buffer,
    require_positive,
    require_positive_int,
    round_down,
    round_up,
)
from trailstop_gui.models.engine import StopTriggered, checked_initial_stop
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import (
    ConcurrentTransition,
    ProtectionEnded,
    ProtectionStore,
    TransitionRequest,
)
from trailstop_gui.services.adoption import adopt_position
from trailstop_gui.services.brokers.base import (
    Broker,
    Holding,
    Order,
    OrderRequest,
    OrderType,
    Position,
    normalize_order_status,
)
from trailstop_gui.services.brokers.errors import AmbiguousError, AuthError, BrokerError
from trailstop_gui.services.brokers.feed_loop import OrderUpdate
from trailstop_gui.services.brokers.kite import order_from_kite
from trailstop_gui.services.brokers.upstox import order_from_upstox
from trailstop_gui.services.exit_executor import ExitExecutor, RetryPolicy, TriggerGate
from trailstop_gui.services.feed_worker import FeedWorker
from trailstop_gui.services.holdings import (
    CONSENT_WARNING,
    DEMAT_REFUSAL_ADVICE,
    DeliveryStock,
    covers_stock,
    delivery_stocks,
    is_demat_refusal,
    sells_need_authorisation,
)
from trailstop_gui.services.instruments import master_key
from trailstop_gui.services.logged_task import LoggedTask
from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.services.position_book import PositionBook
from trailstop_gui.services.positions import covered_quantity, covers_position, matching_position
from trailstop_gui.services.reconciler import Hooks, Reconciler
from trailstop_gui.services.retry import Backoff, polls
from trailstop_gui.services.safety_stop import SafetyConfig, SafetyHooks, SafetyPolicy, SafetyStopManager
from trailstop_gui.services.session import AccountSession, SessionState
from trailstop_gui.settings import Settings, load_settings

log = logging.getLogger("trailstop.protection")

RECONCILE_INTERVAL_MS = 30_000
# A positions read that leaves the position book unsettled is followed by another this much later, at most
# BOOK_RECHECKS times in a row (then the periodic reconcile): a positions endpoint trails a fill by seconds.
BOOK_RECHECK_SECONDS = 2.0
BOOK_RECHECKS = 5
# How each broker's pushed order updates read (its order-book parser): the position books use them.
BOOK_PARSERS: dict[str, Callable[[Mapping[str, Any]], Order]] = {
    "kite": order_from_kite,
    "upstox": order_from_upstox,
}
ENTRY_WATCH_SECONDS = 20.0
ENTRY_POLL_SECONDS = 0.2
# An entry whose reply was lost is looked up by its tag at 0.2 s, doubling to 2 s (the book may lag);
# a placed entry is read every 0.2 s until it is final (its fill arms the stop).
ENTRY_LOOKUP_BACKOFF = Backoff(ENTRY_POLL_SECONDS, 2.0)
ENTRY_WATCH_PACE = Backoff(ENTRY_POLL_SECONDS, ENTRY_POLL_SECONDS)
DEFAULT_TICK_SIZE = 0.05  # NSE's and NFO's usual tick, for an instrument the master does not know
FEED_DOWN_ALERT_MS = 10_000


@dataclass(frozen=True)
class EntryRequest:
    """An entry order with its trailing rule, as the order form builds it."""

    account_id: int
    instrument: InstrumentId
    symbol: str
    exchange: str
    side: Side
    quantity: int
    product: Product
    tick_size: float
    rule: TrailRule
    order_type: OrderType = OrderType.MARKET
    price: float | None = None
    # The broker-held safety stop for this order; None: the service's default (settings, --safety-stop).
    safety: bool | None = None
    safety_buffer_percent: float | None = None
    safety_buffer_ticks: int | None = None


DELIVERY_SELL_REFUSED = (
    "side: a CNC sell takes delivery shares out of your holdings, and its trailing exit would buy them "
    "back. TrailStop never buys delivery shares back: protect the shares you hold (a long), or use MIS "
    "for a short."
)


class ProtectionService(QObject):
    """Every trader action and every automatic reaction, for all accounts."""

    protection_changed = Signal(int)  # protection id: re-read it from the store
    # {"account_id": int, "quotes": {instrument: Quote}, "stops": {protection id: stop}}; <= 10 Hz a feed
    snapshot_ready = Signal(object)
    action_failed = Signal(str, str)  # what, why (for a message box)
    session_state_changed = Signal(int, str)

    def __init__(
        self,
        store: ProtectionStore,
        notifier: Notifier | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        reconcile_interval_ms: int = RECONCILE_INTERVAL_MS,
        safety_policy: SafetyPolicy | None = None,
        position_book: bool = True,
        book_recheck_seconds: float = BOOK_RECHECK_SECONDS,
        flat_confirm_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.store = store
        # The entry's look-up and watch pause and measure their window by these (tests inject them).
        self._sleep = sleep
        self._clock = clock
        self.notifier = notifier or Notifier()
        self.sessions: dict[int, AccountSession] = {}
        settings = load_settings(store)
        # What new protections get: the settings' default, or ``--safety-stop`` (set_safety_defaults).
        self.safety_defaults = SafetyConfig(
            enabled=settings.safety_stop,
            buffer_percent=settings.safety_buffer_percent,
            buffer_ticks=settings.safety_buffer_ticks,
        )
        self.safety = SafetyStopManager(
            store,
            SafetyHooks(
                broker_for=self._broker_for,
                last_price=self._last_price,
                disarm=self._disarm,
                changed=self.protection_changed.emit,
                reconcile=self.reconcile,
                gave_up=self._on_safety_gave_up,
            ),
            safety_policy or SafetyPolicy(limit_percent=settings.safety_limit_percent),
        )
        self.executor = ExitExecutor(store, self._broker_for, policy=retry_policy)
        self.executor.safety = self.safety
        policy = self.executor.policy  # the app's: RetryPolicy() unless a test scales it down
        # "Read a flat position again this much later": the exits' figure unless told otherwise.
        flat_confirm = policy.flat_confirm if flat_confirm_seconds is None else flat_confirm_seconds
        self.reconciler = Reconciler(
            store,
            Hooks(
                arm=self._arm,
                disarm=self._disarm,
                resume_exit=self._resume_exit,
                tick_size=self._tick_size,
                safety_fired=self.safety.fired_order,
                safety_check=self.safety.verify,
                safety_release=self.safety.refresh,
                safety_default=lambda _account_id: self.safety_defaults,
                armed=self._armed_ids,
                stop_refused=self._on_stop_refused,
                engine_view=lambda p: self.engine_view(p),
                positions_read=self._on_positions_read,
            ),
            flat_confirm_seconds=flat_confirm,
        )
        # Each account's live position book: exits are sized from it when it is fresh (no round trip).
        self.books: dict[int, PositionBook] = {}
        self._book_rechecks: dict[int, threading.Timer] = {}
        self._book_tries: dict[int, int] = {}  # rechecks since the account's book last settled
        self._book_lock = threading.Lock()
        self._book_recheck_seconds = book_recheck_seconds
        self.position_book = position_book
        self.executor.book_for = lambda account_id: self.books.get(account_id) if self.position_book else None
        self.actions = QThreadPool()
        self.actions.setMaxThreadCount(4)  # an entry is watched until it fills, for up to 20 s
        self.reconciles = QThreadPool()
        self.reconciles.setMaxThreadCount(1)  # reconciles never overlap
        self._timer = QTimer(self)
        self._timer.setInterval(reconcile_interval_ms)
        self._timer.timeout.connect(self.reconcile_all)
        self._feed_down: dict[int, QTimer] = {}
        self._started = False
        # What a feed's engine watches for a protection (services/underlying.py swaps it in): as it is, or a
        # stop on the underlying's prices. Every feed asks this at every arm.
        self.engine_view: Callable[[Protection], Protection] = lambda p: p
        self._demat_consent: dict[int, str | None] = {}  # per account, from its profile at login
        self._consent_warned: set[int] = set()
        ex = self.executor.signals
        ex.exit_placed.connect(self._on_exit_placed)
        ex.exit_filled.connect(self._on_exit_filled)
        ex.exit_failed.connect(self._on_exit_failed)
        ex.exit_delayed.connect(self._on_exit_delayed)
        ex.closed_externally.connect(self._on_closed_externally)
        ex.login_needed.connect(self._on_exit_login_needed)

    # ----------------------------------------------------------------- accounts and start-up

    def add_session(self, session: AccountSession) -> None:
        session.set_market_protection(load_settings(self.store).market_protection)
        self.sessions[session.account_id] = session
        session.state_changed.connect(self._on_session_state)
        session.logged_in.connect(self._on_logged_in)

    def apply_settings(self, settings: Settings) -> None:
        """Settings saved in the dialog that the services act on: the exits' market protection, and whether
        new protections (adopted, auto-protected; the order form passes its own) keep a broker-held stop."""
        for session in list(self.sessions.values()):
            session.set_market_protection(settings.market_protection)
        self.safety_defaults = replace(self.safety_defaults, enabled=settings.safety_stop)

    def set_auto_protect(self, account_id: int, rule: TrailRule | None, *, holdings: bool = False) -> None:
        """Protect every open position of the account (``holdings``: delivery holdings too) as it appears."""
        if rule is None:
            self.reconciler.auto_protect.pop(account_id, None)
        else:
            self.reconciler.auto_protect[account_id] = rule
        if rule is not None and holdings:
            self.reconciler.auto_protect_holdings.add(account_id)
        else:
            self.reconciler.auto_protect_holdings.discard(account_id)

    # ----------------------------------------------------------------- consent to sell from the demat

    def demat_warning(self, account_id: int) -> str | None:
        """Why an exit of delivery shares may be refused on this account, or None when it should not be.

        Read from the profile at every login (Kite ``meta.demat_consent``, Upstox ``poa``).
        """
        if sells_need_authorisation(self._demat_consent.get(account_id)):
            return CONSENT_WARNING
        return None

    def _read_demat_consent(self, account_id: int, broker: Broker) -> None:
        try:
            consent = broker.profile().demat_consent
        except BrokerError as exc:
            log.info("account %s: profile unreadable, demat consent unknown (%s)", account_id, exc)
            return
        self._demat_consent[account_id] = consent
        if sells_need_authorisation(consent):
            log.warning(
                "account %s: no standing demat consent (%s): %s", account_id, consent, CONSENT_WARNING
            )

    def start(self, pending_logins: set[int] | frozenset[int] = frozenset()) -> None:
        """Start every logged-in account's feed, arm its protections, reconcile, and keep reconciling.

        ``pending_logins``: accounts being logged in right now (the simulator's); they start on their
        logged_in signal instead of being reported as needing a login.
        """
        self._started = True
        for session in self.sessions.values():
            if session.has_token():
                self._start_account(session)
            elif session.account_id not in pending_logins:
                session.state_changed.emit(session.account_id, SessionState.LOGIN_NEEDED.value)
        self._timer.start()

    def shutdown(self) -> None:
        """Stop feeds and pools; protections stay armed in the database for the next start."""
        self._started = False
        self._timer.stop()
        with self._book_lock:
            rechecks, self._book_rechecks = list(self._book_rechecks.values()), {}
        for timer in rechecks:
            timer.cancel()
        self.executor.stopping.set()
        for session in self.sessions.values():
            session.stop_feed()
        self.actions.waitForDone(10_000)
        self.reconciles.waitForDone(10_000)
        self.executor.shutdown()
        self.safety.shutdown()  # the broker-held stops stay at the broker: that is their point
        self.store.flush()

    def _start_account(self, session: AccountSession) -> None:
        account_id = session.account_id
        broker = session.broker_if_ready()
        if broker is not None:
            self.actions.start(
                LoggedTask(
                    lambda: self._read_demat_consent(account_id, broker), f"profile of {account_id}", log
                )
            )
        # Before the feed starts: its first reconcile (on connect) corrects the book.
        book = self._book_of(account_id, broker)
        feed = session.start_feed(
            self.store,
            on_trigger=self._on_trigger,
            on_order_update=lambda update: self._on_order_update(account_id, update),
            on_connected=lambda _reconnect: self.reconcile(account_id),
            on_triggers=self._on_triggers,
        )
        feed.engine_view = lambda p: self.engine_view(p)
        if book is not None:

            def stream_changed(up: bool, feed: FeedWorker = feed, book: PositionBook = book) -> None:
                if session.feed is not feed:
                    return  # a feed being replaced: the new one speaks for the stream now
                if up:
                    book.stream_up()
                else:
                    book.stream_down()

            feed.listen_order_stream(stream_changed)
        feed.snapshot_ready.connect(lambda snap: self.snapshot_ready.emit(dict(snap, account_id=account_id)))
        # Direct: a cheap, thread-safe notification from the feed thread (coalesced, at most 10 Hz).
        feed.stop_moved.connect(self._on_stop_moved, Qt.ConnectionType.DirectConnection)
        armed = [p for p in self.store.protections([Status.OPEN], account_id) if p.entry_price]
        feed.arm(p for p in armed if not p.paused)
        feed.watch(p for p in armed if p.paused)  # a paused row keeps showing the live price
        for p in armed:
            self.safety.track(p)

    def _on_logged_in(self, account_id: int) -> None:
        session = self.sessions[account_id]
        self.notifier.notify(Alert(AlertKind.INFO, "Logged in", session.label, account_id=account_id))
        if self._started:
            # A new login (after a token expiry, or a first login): the feed is rebuilt with the new token.
            self._start_account(session)

    # ----------------------------------------------------------------- reconciling

    def reconcile_all(self) -> None:
        for account_id in self.sessions:
            self.reconcile(account_id)

    def reconcile(self, account_id: int) -> None:
        self.reconciles.start(
            LoggedTask(lambda: self._reconcile_now(account_id), f"reconcile {account_id}", log)
        )

    def _alert_each(
        self,
        account_id: int,
        pids: list[int],
        kind: AlertKind,
        title: str,
        message: Callable[[Protection], str],
    ) -> None:
        """One alert per protection the reconciler reported, its message from the protection as stored."""
        for pid in pids:
            self.notifier.notify(Alert(kind, title, message(self.store.get(pid)), pid, account_id))

    def _reconcile_now(self, account_id: int) -> None:
        session = self.sessions.get(account_id)
        broker = session.broker_if_ready() if session else None
        if session is None or broker is None:
            return
        try:
            report = self.reconciler.reconcile(account_id, broker)
        except AuthError as exc:
            session.mark_login_needed(str(exc))
            return
        except BrokerError as exc:
            log.warning("reconcile of account %s failed: %s", account_id, exc)
            return
        if report.recheck_in is not None:
            # A changed quantity seen once waits for a confirming read (reconciler): soon, not in 30 s.
            self._reconcile_in(account_id, report.recheck_in)
        self._alert_each(
            account_id,
            report.safety_closed,
            AlertKind.EXIT_FILLED,
            "Safety stop filled",
            lambda p: f"{p.symbol}: the broker-held stop closed the position at {p.exit_price or 0:.2f}",
        )
        adopted_delivery = [pid for pid in report.adopted if self.store.get(pid).product is Product.CNC]
        warning = self.demat_warning(account_id)
        if adopted_delivery and warning and account_id not in self._consent_warned:
            self._consent_warned.add(account_id)
            self.notifier.notify(
                Alert(AlertKind.INFO, "Delivery shares protected", warning, adopted_delivery[0], account_id)
            )
        self._alert_each(
            account_id,
            report.closed_externally,
            AlertKind.CLOSED_EXTERNALLY,
            "Position closed outside TrailStop",
            lambda p: f"{p.symbol}: protection ended, no exit sent",
        )
        self._alert_each(
            account_id,
            report.covered_by_others,
            AlertKind.INFO,
            "Protection ended: position protected by another",
            lambda p: (
                f"{p.symbol}: older protections of this position cover all of it; this one ended, "
                "no exit sent"
            ),
        )
        for pid in [
            *report.filled,
            *report.ended,
            *report.closed_externally,
            *report.covered_by_others,
            *report.resized,
            *report.adopted,
            *report.safety_closed,
            *report.rearmed,
        ]:
            self.protection_changed.emit(pid)

    # ----------------------------------------------------------------- the tick path (feed thread)

    def _on_trigger(self, pid: int, event: StopTriggered) -> None:
        self._on_triggers([(pid, event)])

    def _on_triggers(self, fired: list[tuple[int, StopTriggered]]) -> None:
        """Every stop one tick fired: TRIGGERED for all of them in one commit, then their exits.

        Each exit job starts reading the live position while TRIGGERED is committed here; it sends nothing
        until the commit is done (gate.open), so the durable-before-act rule holds at no latency cost. One
        transaction for the tick, not one per stop: eight stops on one tick wait for one fsync, not eight.
        """
        triggered = {pid: self.store.get(pid) for pid, _ in fired}
        gates = {pid: self.executor.submit_gated(p) for pid, p in triggered.items()}
        moves = [
            TransitionRequest(
                pid,
                Status.TRIGGERED,
                expected=Status.OPEN,
                reason=event.reason,
                price=event.ltp,
                fields={"stop": event.stop},
                events=gate.commit_events if (gate := gates[pid]) is not None else (),
            )
            for pid, event in fired
        ]
        try:
            # No read-back: each exit leaves as its TRIGGERED is on disk, and a read here would hold the
            # interpreter its exit thread is waiting for (bench/tick_to_exit_stages.py).
            failures = self.store.commit_transitions(moves, before_commit=lambda: _committing(gates))
        except Exception:
            for gate in gates.values():
                if gate is not None:
                    gate.close()
            raise
        for (pid, _event), failure in zip(fired, failures, strict=True):
            gate = gates[pid]
            if gate is not None and failure is None:
                gate.open()
            elif gate is not None:
                gate.close()
        for (pid, event), failure in zip(fired, failures, strict=True):
            if failure is not None:
                log.info("protection %s: trigger ignored (%s)", pid, failure)
                continue
            if gates[pid] is None:
                self.executor.submit(pid)
            result = triggered[pid]  # what the alert names is the same after the move
            what = "Target reached" if event.reason == "target" else "Stop triggered"
            self.notifier.notify(
                Alert(
                    AlertKind.STOP_TRIGGERED,
                    what,
                    f"{result.symbol}: LTP {event.ltp:.2f} crossed {event.stop:.2f}; "
                    f"exiting {result.filled_quantity}",
                    pid,
                    result.account_id,
                )
            )
            self.protection_changed.emit(pid)

    def _on_stop_moved(self, pid: int, _old: float, _new: float) -> None:
        self.safety.on_stop_moved(pid)

    def _on_order_update(self, account_id: int, update: OrderUpdate) -> None:
        book = self.books.get(account_id)
        if book is not None:
            book.apply(update)
        self.executor.on_order_update(update)
        owner, role = self._owner_of(update.tag)
        if owner is not None and role == "safety":
            # A safety SL-M changed (it fired, or was cancelled outside): its worker reads it back.
            self.safety.on_order_update(owner.id)
        if normalize_order_status(update.status).is_final and role not in ("exit", "entry"):
            # A fill we did not send: a position opened or closed outside the app. Look now, not in 30 s.
            self.reconcile(account_id)
        # A pushed entry fill arms the stop without waiting for a reconcile.
        if owner is not None and role == "entry" and owner.status in (Status.PENDING, Status.OPEN):
            try:
                if owner.entry_order_id is None and update.order_id:
                    # The entry's own reply was lost (a timeout): the update names its order. (Inside the
                    # try: it may have ended since it was read, and this runs on the feed thread.)
                    owner = self.store.record_entry_order(owner.id, update.order_id) or self.store.get(
                        owner.id
                    )
                changed = self.reconciler.apply_entry_state(
                    owner, normalize_order_status(update.status), update.filled_quantity, update.average_price
                )
            except (ConcurrentTransition, IllegalTransition):
                changed = None
            if changed is not None:
                self.protection_changed.emit(owner.id)

    def _owner_of(self, tag: str) -> tuple[Protection | None, str]:
        """The protection an order tag belongs to, and the order's role: "exit", "entry" or "safety"."""
        if not tag:
            return None, ""
        p = self.store.find_by_tag(tag)
        if p is not None:
            return p, "exit"
        p = self.store.find_by_tag(tag[:-1])
        if p is not None and tag == p.entry_tag:
            return p, "entry"
        if p is not None and tag == p.safety_tag:
            return p, "safety"
        return None, ""

    # ----------------------------------------------------------------- the live position books

    def _book_of(self, account_id: int, broker: Broker | None) -> PositionBook | None:
        """The account's book, made at its first start and kept across feed rebuilds; None for paper."""
        book = self.books.get(account_id)
        if book is None and broker is not None:
            parse = BOOK_PARSERS.get(broker.capabilities.broker)
            if parse is not None:
                # The book trusts a read sent this long after the stream came up, the bound the exits
                # use for a positions read trailing a fill.
                lag = self.executor.policy.positions_lag
                book = self.books[account_id] = PositionBook(broker.capabilities, parse, lag=lag)
        return book

    def _on_positions_read(
        self, account_id: int, positions: list[Position], holdings: list[Holding] | None, sent_at: float
    ) -> None:
        book = self.books.get(account_id)
        if book is None:
            return
        settled = book.correct(positions, holdings, sent_at)
        with self._book_lock:
            if settled:
                self._book_tries.pop(account_id, None)
                return
            # Too soon after the stream came up, or REST and the stream disagree (one of them trails): the
            # book vouches again once a later read settles it. Read again soon (a few times), not in 30 s.
            tries = self._book_tries.get(account_id, 0)
            if account_id in self._book_rechecks or not self._started or tries >= BOOK_RECHECKS:
                return
            self._book_tries[account_id] = tries + 1
            timer = threading.Timer(self._book_recheck_seconds, lambda: self._book_recheck(account_id))
            timer.daemon = True
            self._book_rechecks[account_id] = timer
        timer.start()

    def _reconcile_in(self, account_id: int, seconds: float) -> None:
        """One more reconcile of the account ``seconds`` from now (none if one is already due)."""
        with self._book_lock:
            if account_id in self._book_rechecks or not self._started:
                return
            timer = threading.Timer(seconds, lambda: self._book_recheck(account_id))
            timer.daemon = True
            self._book_rechecks[account_id] = timer
        timer.start()

    def _book_recheck(self, account_id: int) -> None:
        with self._book_lock:
            self._book_rechecks.pop(account_id, None)
        if self._started:
            self.reconcile(account_id)

    # ----------------------------------------------------------------- hooks for the reconciler

    def _broker_for(self, account_id: int) -> Broker | None:
        session = self.sessions.get(account_id)
        return session.broker_if_ready() if session else None

    def _arm(self, p: Protection) -> None:
        session = self.sessions.get(p.account_id)
        if session is not None and session.feed is not None:
            if p.paused:
                session.feed.watch([p])  # prices keep coming; nothing trails or fires
            else:
                session.feed.arm([p])
        self.safety.track(p)

    def _last_price(self, p: Protection) -> float | None:
        session = self.sessions.get(p.account_id)
        feed = session.feed if session is not None else None
        quote = feed.latest_quote(p.engine_instrument) if feed is not None else None
        return None if quote is None else quote.ltp

    def _on_stop_refused(self, p: Protection) -> None:
        """Any thread: an entry filled, but its rule would put the stop at or below zero."""
        self.notifier.notify(
            Alert(
                AlertKind.EXIT_FAILED,
                "Stop not armed",
                f"{p.symbol}: the entry filled, but {p.reason.partition('stop refused: ')[2]}; "
                "the protection is paused until its rule is changed",
                p.id,
                p.account_id,
            )
        )

    def _armed_ids(self, account_id: int) -> frozenset[int] | None:
        session = self.sessions.get(account_id)
        feed = session.feed if session is not None else None
        if feed is None or not feed.isRunning():
            return None  # no feed yet: it arms every OPEN protection when it starts
        return feed.armed_ids()

    def _disarm(self, pid: int) -> None:
        p = self.store.get(pid)
        session = self.sessions.get(p.account_id)
        if session is not None and session.feed is not None:
            session.feed.disarm(pid)

    def _resume_exit(self, pid: int) -> None:
        self.executor.submit(pid, recover=True)

    def _tick_size(self, account_id: int, pos: Position | DeliveryStock) -> float:
        return self.tick_size_for(account_id, pos)

    def tick_size_for(self, account_id: int, pos: Position | DeliveryStock) -> float:
        """The instrument's tick size from the account's instrument master (a local lookup, no network);
        NSE's usual 0.05 when the master is not loaded or does not list it. ``set_tick_size`` corrects it."""
        session = self.sessions.get(account_id)
        if session is not None:
            master = master_key(session.account)
            instruments = self.store.instruments_repo
            record = instruments.get(master, pos.instrument) or instruments.find(
                master, pos.exchange, pos.symbol
            )
            if record is not None and record.tick_size > 0:
                return float(record.tick_size)
        return DEFAULT_TICK_SIZE

    def set_tick_size(self, pid: int, tick_size: float) -> Protection:
        """Correct a protection's tick size (an adopted position's guess, say). The stop moves onto the new
        grid as every stop is rounded: a long's down, a short's up (by less than one tick)."""
        tick = require_positive(tick_size, "tick size")
        p = self.store.get(pid)
        fields: dict[str, Any] = {"tick_size": tick}
        if p.stop is not None:
            fields["stop"] = round_down(p.stop, tick) if p.side.is_long else round_up(p.stop, tick)
        p = self.store.update(pid, kind="tick_size_changed", **fields)
        if p.status is Status.OPEN and not p.paused:
            self._arm(p)
        self.protection_changed.emit(pid)
        return p

    # ----------------------------------------------------------------- trader actions (any thread)

    def place_entry(
        self, request: EntryRequest, attach: Callable[[Protection], None] | None = None
    ) -> Protection:
        """Persist a PENDING protection, then send its entry order in the background.

        ``attach`` stores what else the protection gets (a basket, an exit time, a stop on the underlying)
        before the order goes out; when it raises ValueError nothing is sent, the protection is REJECTED
        with the reason, and the error is raised again.
        """
        require_positive_int(request.quantity, "quantity")
        if request.order_type is OrderType.LIMIT:
            price = require_positive(request.price, "price")
            # A stop <= 0 is refused now, not found when the entry fills.
            checked_initial_stop(request.side, price, request.tick_size, request.rule)
        if request.account_id not in self.sessions:
            raise ValueError(f"account: no connected account {request.account_id}")
        if Product.parse(request.product) is Product.CNC and Side.parse(request.side) is Side.SELL:
            raise ValueError(DELIVERY_SELL_REFUSED)
        safety = self._safety_for(request.safety, request.safety_buffer_percent, request.safety_buffer_ticks)
        p = self.store.create_protection(
            safety_enabled=safety.enabled,
            safety_buffer_percent=safety.buffer_percent,
            safety_buffer_ticks=safety.buffer_ticks,
            account_id=request.account_id,
            broker=self.sessions[request.account_id].account.broker,
            instrument=request.instrument,
            symbol=request.symbol,
            exchange=request.exchange,
            side=request.side,
            product=request.product,
            quantity=request.quantity,
            tick_size=request.tick_size,
            rule=request.rule,
        )
        if attach is not None:
            try:
                attach(p)
            except (ValueError, KeyError) as exc:
                self.store.transition(
                    p.id, Status.REJECTED, expected=Status.PENDING, reason=f"not sent: {exc}"
                )
                self.protection_changed.emit(p.id)
                raise ValueError(str(exc).strip("'\"")) from None
            p = self.store.get(p.id)
        self.actions.start(
            LoggedTask(lambda: self._send_entry(p, request), f"entry for protection {p.id}", log)
        )
        self.protection_changed.emit(p.id)
        return p

    def _send_entry(self, p: Protection, request: EntryRequest) -> None:
        broker = self._broker_for(p.account_id)
        if broker is None:
            self.store.transition(p.id, Status.REJECTED, reason="not logged in")
            self.action_failed.emit("Entry order", "The account needs a login first.")
            self.protection_changed.emit(p.id)
            return
        order = OrderRequest(
            symbol=p.symbol,
            exchange=p.exchange,
            instrument=p.engine_instrument,
            side=p.side,
            quantity=p.quantity,
            product=p.product,
            order_type=request.order_type,
            price=request.price,
            tag=p.entry_tag,
        )
        try:
            order_id = broker.place_order(order)
        except AmbiguousError as exc:
            # A timeout is not a refusal: the broker may have taken the order, and it may fill. The
            # protection stays PENDING and its order is looked up by the entry tag (here, then by every
            # reconcile), never marked REJECTED on a guess.
            log.warning("protection %s: entry reply lost (%s); looking it up by its tag", p.id, exc)
            self.store.journal("entry_unconfirmed", protection_id=p.id, message=str(exc)[:200])
            found = self._find_entry(p.id, broker)
            if found is None:
                return
            order_id = found
        except BrokerError as exc:
            self.store.transition(p.id, Status.REJECTED, reason=str(exc)[:200])
            self.action_failed.emit("Entry order", str(exc))
            self.protection_changed.emit(p.id)
            if isinstance(exc, AuthError):
                self.sessions[p.account_id].mark_login_needed(str(exc))
            return
        try:
            self.store.record_entry_order(p.id, order_id)  # the pushed order update may have stored it
        except ProtectionEnded as exc:
            # An order id is no promise: the broker's RMS may reject the order a moment later (Kite forum,
            # discussion 9410), and the pushed REJECTED update (or the trader's cancel) can end the
            # protection before this reply is read. Nothing is left to watch.
            log.info("protection %s: entry %s placed, but it has ended meanwhile (%s)", p.id, order_id, exc)
            self.protection_changed.emit(p.id)
            return
        self.protection_changed.emit(p.id)
        self._watch_entry(p.id, broker, order_id)

    def _find_entry(self, pid: int, broker: Broker) -> str | None:
        """The id of the entry order carrying this protection's entry tag, once the order book shows it.

        The book may lag the broker by a second or two; None after ``ENTRY_WATCH_SECONDS`` (the reconciler
        goes on looking by the tag).
        """
        tag = self.store.get(pid).entry_tag
        for _ in polls(ENTRY_LOOKUP_BACKOFF, ENTRY_WATCH_SECONDS, sleep=self._sleep, clock=self._clock):
            if not self._started:
                return None
            try:
                order = broker.find_order_by_tag(tag)
            except AuthError as exc:
                self.sessions[self.store.get(pid).account_id].mark_login_needed(str(exc))
                return None
            except BrokerError as exc:
                log.info("protection %s: looking up entry tag %s failed (%s)", pid, tag, exc)
                order = None
            if order is not None:
                log.info("protection %s: entry %s found by its tag", pid, order.order_id)
                return order.order_id
            if self.store.get(pid).status is not Status.PENDING:
                return None  # found meanwhile (a reconcile, an order update), or removed
        return None

    def _watch_entry(self, pid: int, broker: Broker, order_id: str) -> None:
        """Follow a fresh entry until it is final, so the stop is armed the moment it fills.

        Both brokers push order updates (Kite's ticker, Upstox's portfolio stream), but one can be late or
        lost, and a paper account has none; a resting LIMIT entry is left to order updates and the periodic
        reconcile once ``ENTRY_WATCH_SECONDS`` have passed.
        """
        for _ in polls(ENTRY_WATCH_PACE, ENTRY_WATCH_SECONDS, sleep=self._sleep, clock=self._clock):
            if not self._started:
                return  # shutdown must not wait on a watch
            try:
                order = broker.order(order_id)
            except AuthError as exc:
                self.sessions[self.store.get(pid).account_id].mark_login_needed(str(exc))
                return
            except BrokerError as exc:
                log.info("protection %s: reading entry %s failed (%s)", pid, order_id, exc)
                order = None
            p = self.store.get(pid)
            if p.status not in (Status.PENDING, Status.OPEN):
                return
            if order is not None:
                try:
                    changed = self.reconciler.apply_entry_state(
                        p, order.status, order.filled_quantity, order.average_price
                    )
                except (ConcurrentTransition, IllegalTransition):
                    changed = None
                if changed is not None:
                    self.protection_changed.emit(pid)
                if order.is_final:
                    return

    def adopt(
        self,
        account_id: int,
        position: Position | DeliveryStock,
        rule: TrailRule,
        tick_size: float | None = None,
        *,
        safety: bool | None = None,
    ) -> Protection:
        """Protect a position (or delivery shares) the trader already holds (``safety``: None takes the
        default; ``tick_size``: None takes the instrument master's).

        A ``DeliveryStock`` protects every sellable share of that stock (holdings and today's buys).
        Shares another live protection already covers are left to it: a position protected whole is
        refused (naming that protection), one protected in part gets a protection of the rest. A second
        protection of the whole would own nothing (its position's shares go to the older one first,
        ``positions.allocate``), and the reconciler would end it as "closed outside TrailStop" while the
        position is still held (a Protect clicked twice before the list refreshed).
        """
        if position.side is None or position.product is None:
            raise ValueError("position: it is flat, or its product is unknown")
        if position.product is Product.CNC and position.side is Side.SELL:
            raise ValueError(DELIVERY_SELL_REFUSED)
        quantity = self._unprotected_part(account_id, position)
        config = self._safety_for(safety, None, None)
        p = adopt_position(
            self.store,
            account_id=account_id,
            broker=self.sessions[account_id].account.broker,
            position=position,
            rule=rule,
            tick_size=self.tick_size_for(account_id, position) if tick_size is None else tick_size,
            safety=config,
            reason="adopted",
            quantity=quantity,
        )
        self._arm(p)
        self.protection_changed.emit(p.id)
        return p

    def _unprotected_part(self, account_id: int, position: Position | DeliveryStock) -> int:
        """The shares of ``position`` no live protection covers; ValueError naming those that cover it all."""
        covering = [p for p in self.store.live(account_id) if covers_position(p, account_id, position)]
        held = abs(position.quantity)
        rest = held - sum(covered_quantity(p) for p in covering)
        if rest <= 0:
            names = ", ".join(f"#{p.id} covers {covered_quantity(p)}" for p in covering)
            raise ValueError(
                f"position: all {held} of {position.symbol} are already protected ({names}); "
                "change that protection's rule instead"
            )
        return rest

    def unprotected_positions(self, account_id: int) -> list[Position | DeliveryStock]:
        """Open broker positions and delivery holdings with no live protection. Blocking: off the GUI thread.

        Delivery shares come as one ``DeliveryStock`` per stock (holdings and today's buys, every listing);
        a negative delivery row (a sale out of holdings) is never offered as a short.
        """
        broker = self._broker_for(account_id)
        if broker is None:
            return []
        live = self.store.live(account_id)
        caps = broker.capabilities
        positions = broker.positions()
        holdings = broker.holdings()
        result: list[Position | DeliveryStock] = [
            pos
            for pos in positions
            if pos.quantity != 0
            and pos.product is not Product.CNC
            and not any(matching_position(p, [pos], caps) for p in live)
        ]
        result.extend(
            stock
            for stock in delivery_stocks(positions, holdings, caps.broker)
            if not any(covers_stock(p, stock, holdings) for p in live)
        )
        return result

    def modify_rule(self, pid: int, rule: TrailRule) -> Protection:
        p = self.store.update(pid, kind="rule_changed", rule=rule)
        if p.status is Status.OPEN and not p.paused:
            # Re-arm from the current stop: a new rule never loosens a stop already reached.
            self._arm(p.with_changes(peak=None))
        self.protection_changed.emit(pid)
        return p

    def pause(self, pid: int) -> Protection:
        p = self.store.update(pid, kind="paused", paused=True)
        session = self.sessions.get(p.account_id)
        if session is not None and session.feed is not None:
            session.feed.watch([p])  # out of the engine, but its price stays live in the window
        self.protection_changed.emit(pid)
        return p

    def resume(self, pid: int) -> Protection:
        current = self.store.get(pid)
        fields: dict[str, Any] = {"paused": False}
        if current.status is Status.OPEN and current.stop is None and current.entry_price is not None:
            # Paused at its fill because its rule's stop was <= 0: the rule must change first. A stop on
            # the underlying starts from the underlying's price.
            view = self.engine_view(current)
            fields["stop"] = checked_initial_stop(
                view.side, view.entry_price or current.entry_price, view.tick_size, view.rule
            )
        p = self.store.update(pid, kind="resumed", **fields)
        if p.status is Status.OPEN:
            self._arm(p)
        self.protection_changed.emit(pid)
        return p

    def exit_now(self, pid: int, *, reason: str = "manual") -> Protection:
        """The trader's manual exit (or a timed square-off, a basket's: ``reason``): the same durable
        path as a fired stop. Raises ConcurrentTransition/IllegalTransition when it is not OPEN."""
        # Committed before disarming: a failed commit leaves the protection OPEN and still watched. A tick
        # firing in between finds it TRIGGERED already and does nothing.
        p = self.store.transition(pid, Status.TRIGGERED, expected=Status.OPEN, reason=reason)
        self._disarm(pid)
        self.executor.submit(pid)
        self.protection_changed.emit(pid)
        return p

    def exit_all(self) -> list[int]:
        done = []
        for p in self.store.protections([Status.OPEN]):
            try:
                self.exit_now(p.id)
                done.append(p.id)
            except (ConcurrentTransition, IllegalTransition) as exc:
                log.info("exit all: protection %s skipped (%s)", p.id, exc)
            except Exception as exc:
                # One that cannot be committed stays OPEN and armed; it must not stop the others' exits.
                log.exception("exit all: protection %s could not be exited", p.id)
                self.action_failed.emit("Exit all", f"{p.symbol}: {exc}")
        return done

    def remove(self, pid: int) -> Protection:
        """Stop protecting; the position stays open at the broker (its broker-held safety stop goes)."""
        self._disarm(pid)
        p = self.store.get(pid)
        if p.status is Status.TRIGGERED:
            # A stuck exit (its account offline): withdrawn first, so that nothing sends it later.
            self.executor.withdraw(pid)
        target = Status.REMOVED
        p = self.store.transition(pid, target, expected=(Status.OPEN, Status.PENDING, Status.EXIT_FAILED))
        self.safety.refresh(pid)
        self.protection_changed.emit(pid)
        return p

    # ----------------------------------------------------------------- the broker-held safety stop

    def set_safety_defaults(self, config: SafetyConfig) -> None:
        """What new protections (order form, adopt, auto-protect) get when they do not say."""
        self.safety_defaults = config

    def _safety_for(self, enabled: bool | None, percent: float | None, ticks: int | None) -> SafetyConfig:
        base = self.safety_defaults
        return replace(
            base,
            enabled=base.enabled if enabled is None else enabled,
            buffer_percent=base.buffer_percent if percent is None else percent,
            buffer_ticks=base.buffer_ticks if ticks is None else ticks,
        )

    def set_safety(
        self,
        pid: int,
        enabled: bool,
        *,
        buffer_percent: float | None = None,
        buffer_ticks: int | None = None,
    ) -> Protection:
        """Switch a protection's broker-held safety stop on or off, or change its buffer. Returns at once."""
        p = self.store.get(pid)
        if enabled and self.engine_view(p) is not p:
            raise ValueError(
                "safety stop: this protection trails on its underlying; its stop is a price of the "
                "underlying, which a broker-held stop on the option cannot hold"
            )
        percent = p.safety_buffer_percent if buffer_percent is None else buffer_percent
        ticks = p.safety_buffer_ticks if buffer_ticks is None else buffer_ticks
        check_safety_buffer(percent, ticks)
        fields: dict[str, Any] = {
            "safety_enabled": enabled,
            "safety_buffer_percent": percent,
            "safety_buffer_ticks": ticks,
        }
        if enabled and p.safety_state in (SafetyState.OFF, SafetyState.REMOVED):
            fields["safety_state"] = SafetyState.PLACING
        p = self.store.update(pid, kind="safety_changed", **fields)
        self.safety.refresh(pid, buffer_changed=True)
        self.protection_changed.emit(pid)
        return p

    def retry_exit(self, pid: int) -> None:
        """Send a failed exit again; or try once more an exit that never went out (TRIGGERED, stuck)."""
        if self.store.get(pid).status is Status.TRIGGERED:
            self.executor.submit(pid, recover=True)  # the tag is looked up first: never a second exit
        else:
            self.executor.retry(pid)
        self.protection_changed.emit(pid)

    # ----------------------------------------------------------------- signals to alerts

    def _on_exit_placed(self, pid: int, order_id: str) -> None:
        p = self.store.get(pid)
        self.notifier.notify(
            Alert(AlertKind.EXIT_PLACED, "Exit placed", f"{p.symbol}: order {order_id}", pid, p.account_id)
        )
        self.protection_changed.emit(pid)

    def _on_exit_filled(self, pid: int, price: float) -> None:
        p = self.store.get(pid)
        text = f"{p.symbol} at {price:.2f}"
        if p.entry_price is not None:
            # What the trader wants to know first: what the trade made or lost.
            qty = p.exit_quantity or p.filled_quantity or p.quantity
            pnl = (price - p.entry_price if p.side.is_long else p.entry_price - price) * qty
            text += f"; realised P&L {'+' if pnl >= 0 else '-'}₹{abs(pnl):,.2f} on {qty}"
        self.notifier.notify(Alert(AlertKind.EXIT_FILLED, "Exit filled", text, pid, p.account_id))
        self.protection_changed.emit(pid)

    def _on_exit_failed(self, pid: int, why: str) -> None:
        p = self.store.get(pid)
        message = f"{p.symbol}: {why}"
        if is_demat_refusal(why):
            message = f"{message}. {DEMAT_REFUSAL_ADVICE}"
        self.notifier.notify(Alert(AlertKind.EXIT_FAILED, "Exit failed", message, pid, p.account_id))
        self.protection_changed.emit(pid)

    def _on_safety_gave_up(self, pid: int, why: str) -> None:
        """On the safety worker's thread: the notifier's signals carry the alert to the GUI thread."""
        p = self.store.get(pid)
        self.notifier.notify(
            Alert(
                AlertKind.SAFETY_FAILED,
                "No broker-held stop",
                f"{p.symbol}: {why}. TrailStop's own stop still protects it while TrailStop runs.",
                pid,
                p.account_id,
            )
        )
        self.protection_changed.emit(pid)

    def _on_exit_delayed(self, pid: int, why: str) -> None:
        p = self.store.get(pid)
        self.notifier.notify(
            Alert(
                AlertKind.EXIT_DELAYED,
                "Exit delayed",
                f"{p.symbol}: {why}; TrailStop tries again",
                pid,
                p.account_id,
            )
        )
        self.protection_changed.emit(pid)

    def _on_closed_externally(self, pid: int) -> None:
        p = self.store.get(pid)
        self.notifier.notify(
            Alert(
                AlertKind.CLOSED_EXTERNALLY, "Already flat", f"{p.symbol}: no exit needed", pid, p.account_id
            )
        )
        self.protection_changed.emit(pid)

    def _on_exit_login_needed(self, account_id: int) -> None:
        session = self.sessions.get(account_id)
        if session is not None:
            session.mark_login_needed("an exit was refused for the token")

    def _on_session_state(self, account_id: int, state: str) -> None:
        self.session_state_changed.emit(account_id, state)
        session = self.sessions[account_id]
        if state == SessionState.LOGIN_NEEDED.value:
            self.notifier.notify(
                Alert(
                    AlertKind.LOGIN_NEEDED, "Login needed", f"{session.label}: log in again", None, account_id
                )
            )
        if state in (SessionState.RECONNECTING.value, SessionState.STALE.value):
            if account_id not in self._feed_down:
                timer = QTimer(self)
                timer.setSingleShot(True)
                timer.timeout.connect(lambda: self._feed_still_down(account_id))
                timer.start(FEED_DOWN_ALERT_MS)
                self._feed_down[account_id] = timer
        elif state == SessionState.LIVE.value and account_id in self._feed_down:
            timer = self._feed_down.pop(account_id)
            timer.stop()
            timer.deleteLater()  # a child of the service: kept for the app's life otherwise, one per drop

    def _feed_still_down(self, account_id: int) -> None:
        timer = self._feed_down.pop(account_id, None)
        if timer is not None:
            timer.deleteLater()
        session = self.sessions[account_id]
        if session.state in (SessionState.RECONNECTING, SessionState.STALE):
            self.notifier.notify(
                Alert(
                    AlertKind.FEED_DOWN,
                    "Feed down",
                    f"{session.label}: no prices for over 10 s",
                    None,
                    account_id,
                )
            )


def _committing(gates: Mapping[int, TriggerGate | None]) -> None:
    """TRIGGERED's rows are written and its COMMIT comes next: the exit jobs may work their exits out."""
    for gate in gates.values():
        if gate is not None:
            gate.committing()
