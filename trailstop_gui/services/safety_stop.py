"""The broker-held safety stop: a second stop, held by the broker, a buffer behind the client-side trail.

TrailStop trails tick by tick on the client. When the laptop sleeps or the app dies, that stop is gone, so
each protection may also keep a stop at the broker, ``buffer`` behind the trailed stop (long: below it,
short: above it), moved as the trail moves. The worst case is then bounded even with TrailStop closed.

Which broker object holds it (``Capabilities.safety_orders``), and why:

- Kite MIS: an SL-M order with market protection, tagged with the exit tag plus "S". An MIS position lives
  for the day and so does the order; when TrailStop's own stop fires, the exit *is* this order, modified to
  MARKET, so there is one exit order and never two.
- Kite CNC/NRML: a single-leg GTT (good for a year: an SL-M would lapse at the end of the day while the
  position stays) whose LIMIT order is priced ``limit_percent`` through the trigger, so that it fills in a
  fast market. Before TrailStop's own exit the GTT is deleted; if it has already fired, no exit is sent and
  the GTT's order is the exit.
- Upstox: a GTT with one ENTRY rule on the exit side (SELL BELOW for a long). Upstox's STOPLOSS rules arm
  only after an ENTRY order of the same GTT fills, so for a position that is already open the stop-loss is
  the ENTRY rule itself; the native ``trailing_gap`` trails the LTP by a fixed gap and so cannot follow our
  rules (percent, bid-based MIS trail, ladder, breakeven). See ``UpstoxBroker.place_gtt``.

Threads and timing:

- The tick path never waits on this: stop moves arrive as cheap notifications (``on_stop_moved``) and one
  worker thread per account talks to the broker. A broker stop moves only when the wanted level is at
  least ``threshold`` (default half the buffer) better than the one held, and at most once every
  ``min_interval`` seconds (a quantity fix goes at once).
- Safety calls are ordinary (non-urgent) calls in the broker's rate limiter, which the exits share; exits
  are urgent and always go first.
- Near a broker's modification cap (Kite: 25 per order) the order is cancelled and re-placed, cancel first:
  placing first would leave two stops that could both fire. TrailStop's own stop covers the one round trip
  (it is running: it is the one re-placing), and a crash in between is repaired at the next start.
- TrailStop's own exit (``prepare_exit``, on the executor's thread) takes the same per-protection lock,
  so it never races a move.

Where things are: ``decide`` (below, pure) says what to do; ``safety_strategies.py`` does it at the broker,
one strategy per object (``SLOrderStrategy``, ``GTTStrategy``); ``safety_lifecycle.py`` is the table of the
legal state changes, which every write here goes through; ``SafetyStopManager`` keeps one ``_Record`` per
protection and orchestrates: when to look, what to persist before acting, how a fired stop is settled.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from trailstop_gui.models.domain import (
    SAFETY_BUFFER_PERCENT,
    SAFETY_BUFFER_TICKS,
    Product,
    Protection,
    SafetyKind,
    SafetyState,
    Side,
    Status,
    check_safety_buffer,
    safety_buffer,
)
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore
from trailstop_gui.services.brokers.base import (
    Broker,
    Gtt,
    GttNotFound,
    GttStatus,
    Order,
    OrderStatus,
    OrderType,
)
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    AuthError,
    BrokerError,
    BrokerInputError,
    RejectedError,
    TemporaryError,
)
from trailstop_gui.services.position_book import POSITIONS_LAG
from trailstop_gui.services.positions import (
    LiveQuantity,
    allocate,
    exit_claim,
    exits_in_flight,
    open_quantity,
    position_key,
    settling_exits,
)
from trailstop_gui.services.retry import Backoff, call_with_retries, polls
from trailstop_gui.services.safety_lifecycle import SafetyEvent, next_state
from trailstop_gui.services.safety_strategies import (
    FiredNotInBookYet,
    GTTStrategy,
    NotInBookYet,
    Reading,
    SafetyStrategy,
    Search,
    SLOrderStrategy,
    gtt_limit_price,
    strategy_for,
)

log = logging.getLogger("trailstop.safety")

T = TypeVar("T")

SAFETY_STOP_REASON = "safety stop"
"""The reason a protection closes with when the broker-held stop fired."""


def close_by_safety_stop(store: ProtectionStore, protection_id: int, order: Order) -> Protection:
    """CLOSED (reason "safety stop") on ``order``, the filled order its broker-held stop fired into.

    The one writer of that close: the manager settling a stop it read as filled, and the reconciler finding
    the position flat, both come here; the safety state moves by the table (SafetyEvent.FILLED). Raises
    ConcurrentTransition or IllegalTransition when the protection is no longer OPEN.
    """
    state = store.get(protection_id).safety_state
    return store.transition(
        protection_id,
        Status.CLOSED,
        expected=Status.OPEN,
        reason=SAFETY_STOP_REASON,
        price=order.average_price or None,
        exit_order_id=order.order_id,
        exit_price=order.average_price or None,
        exit_quantity=order.filled_quantity or None,
        safety_state=next_state(state, SafetyEvent.FILLED, protection_id),
    )


_ENDED = frozenset({Status.CLOSED, Status.REMOVED, Status.CANCELLED, Status.REJECTED})
_LIVE_AT_BROKER = (SafetyState.PLACING, SafetyState.PLACED, SafetyState.MOVING, SafetyState.MISSING)
_CHECKED = (SafetyState.PLACED, SafetyState.MOVING, SafetyState.FIRED)  # states with an order to read back
# States that without an order id may hide one at the broker: placed (or moved) and the reply never stored.
_UNRECORDED = (SafetyState.PLACING, SafetyState.MOVING, SafetyState.FIRED)


def _taken_away(p: Protection) -> bool:
    """A broker stop that was held (kind, quantity on record) and taken away: its id is no longer kept."""
    return (
        p.safety_state is SafetyState.REMOVED
        and p.safety_kind is not SafetyKind.NONE
        and bool(p.safety_quantity)
    )


# ============================================================================= configuration


@dataclass(frozen=True)
class SafetyConfig:
    """The defaults a new protection gets (settings, ``--safety-stop``); the order form may change them."""

    enabled: bool = False
    buffer_percent: float = SAFETY_BUFFER_PERCENT
    buffer_ticks: int = SAFETY_BUFFER_TICKS

    def __post_init__(self) -> None:
        check_safety_buffer(self.buffer_percent, self.buffer_ticks)


@dataclass(frozen=True)
class SafetyPolicy:
    """How the broker-held stops follow the trail."""

    min_interval: float = 3.0  # seconds between two moves of one broker stop
    threshold_fraction: float = 0.5  # move once the wanted level is this much of the buffer ahead
    cap_reserve: int = 2  # modifications kept spare: one turns an SL-M into the exit, one fixes a quantity
    max_modifications: int | None = None  # a lower cap than the broker's (None: the broker's)
    limit_percent: float = 2.0  # a Kite GTT's LIMIT price, this far through the trigger
    market_protection: float | None = None  # an Upstox GTT rule's (None: the broker's default)
    retry_delay: float = 2.0  # after a failed placement or move, doubling ...
    max_retry_delay: float = 60.0  # ... up to this
    max_refusals: int = 4  # placements the broker refuses in a row before the safety stop is given up
    exit_attempts: int = 6  # broker calls on the exit path are retried this often on temporary errors
    exit_retry_delay: float = 0.2
    # A deleted Kite GTT is forgotten; when the price had crossed it, the order it may have fired is looked
    # for this long (the order book can trail a fill by seconds) before TrailStop sends its own exit.
    fired_lookup_window: float = 4.0


# ============================================================================= the decision (pure)


class Move(enum.Enum):
    NONE = "none"
    PLACE = "place"
    MODIFY = "modify"
    REPLACE = "replace"  # cancel and place again (near the modification cap)
    WAIT = "wait"  # a move is due, but not before ``Decision.at``


@dataclass(frozen=True)
class Decision:
    move: Move
    level: float | None = None
    at: float | None = None


def threshold_for(stop: float, tick_size: float, percent: float, ticks: int, fraction: float) -> float:
    """How far the wanted safety level must be from the held one before the broker stop moves."""
    return max(fraction * safety_buffer(stop, tick_size, percent, ticks), tick_size)


def decide(
    *,
    side: Side,
    wanted: float,
    held: float | None,
    held_quantity: int | None,
    quantity: int,
    modifications: int,
    cap: int | None,
    last_move: float | None,
    now: float,
    threshold: float,
    policy: SafetyPolicy,
    loosen: bool = False,
) -> Decision:
    """What to do with one protection's broker stop now. Pure: the bench drives it with a synthetic clock.

    The broker stop only ever moves in the trader's favour, as the trail does: a wanted level behind the
    held one (a stop read before its last move was written, a restart that lost the last fraction of a
    second of trail) keeps the held level. ``loosen`` allows it once: the trader widened the buffer.
    """
    if held is None:
        return Decision(Move.PLACE, wanted)
    lag = wanted - held if side.is_long else held - wanted  # > 0: the broker stop trails behind
    if lag < 0 and not loosen:
        wanted, lag = held, 0.0
    quantity_fix = held_quantity != quantity
    if not quantity_fix and abs(lag) < threshold - 1e-9:
        return Decision(Move.NONE)
    if not quantity_fix and last_move is not None and now - last_move < policy.min_interval:
        return Decision(Move.WAIT, wanted, last_move + policy.min_interval)
    if cap is not None and modifications >= cap - policy.cap_reserve:
        return Decision(Move.REPLACE, wanted)
    return Decision(Move.MODIFY, wanted)


# Where the exchange offers no SL-M. NSE withdrew stop-loss market orders for index and stock options on
# 27 September 2021 (the exchange answers "16052: Function not available"; the NSE circular as relayed by
# brokers, e.g. SAS Online bulletin 388 "Pre-Trade risk controls for market order in Option Index &
# Stocks"); BSE discontinued SL-M in every segment on 9 October 2023 (Upstox's notice "BSE halts Stop Loss
# Market (SL-M) Orders"; Zerodha blocks them on Kite). PROTOCOLS.md, "The real brokers in 2026".
_NO_SLM_EXCHANGES = frozenset({"BSE", "BFO", "BCD", "BSE_EQ", "BSE_FO", "BCD_FO"})
_OPTION_EXCHANGES = frozenset({"NFO", "NSE_FO"})
_OPTION_SYMBOL = re.compile(r"\d(CE|PE)$")
_ORDER_TYPE_REFUSED = re.compile(
    r"function not available"
    r"|(sl-?m|sl_m|stop[ -]?loss[ -]market)\b.{0,80}?(not allowed|blocked|not available|discontinued|"
    r"not supported|withdrawn)",
    re.IGNORECASE,
)


def slm_unavailable(exchange: str, symbol: str) -> bool:
    """The exchange refuses SL-M orders for this instrument (options on NSE, anything on BSE)."""
    exchange = exchange.upper()
    if exchange in _NO_SLM_EXCHANGES:
        return True
    return exchange in _OPTION_EXCHANGES and _OPTION_SYMBOL.search(symbol.upper()) is not None


def order_type_refused(text: str) -> bool:
    """A refusal that says the order type itself is not offered here (retrying it cannot help)."""
    return _ORDER_TYPE_REFUSED.search(text) is not None


def safety_kind_for(broker: Broker, p: Protection) -> SafetyKind:
    """The broker object that holds ``p``'s safety stop: the broker's kind for the product, except that
    an SL-M becomes an SL where the exchange has none, or where the broker already refused one for it."""
    kind = broker.capabilities.safety_kind(p.product)
    if kind is SafetyKind.SL_M and (p.safety_kind is SafetyKind.SL or slm_unavailable(p.exchange, p.symbol)):
        return SafetyKind.SL
    return kind


# ============================================================================= what the exit path gets


@dataclass(frozen=True)
class ExitPlan:
    """What TrailStop's own exit should do about the broker-held stop.

    - ``order_id`` set: that order *is* the exit (the SL-M turned MARKET, or the order a fired safety stop
      placed); send nothing, watch it. ``fired``: the broker's stop fired by itself (reason "safety stop").
    - ``blocked`` set: the broker stop could not be taken away; sending an exit might make two. Fail.
    - neither: no broker stop is left; send the exit as usual.
    """

    order_id: str | None = None
    fired: bool = False
    blocked: str | None = None

    @property
    def proceed(self) -> bool:
        return self.order_id is None and self.blocked is None


PROCEED = ExitPlan()


@dataclass(frozen=True)
class SafetyHooks:
    """What the manager asks of the rest of the services."""

    broker_for: Callable[[int], Broker | None]  # an account's broker, None when it needs a login
    last_price: Callable[[Protection], float | None] = lambda _p: None  # the feed's latest LTP
    disarm: Callable[[int], None] = lambda _pid: None  # the protection left the engine (closed)
    changed: Callable[[int], None] = lambda _pid: None  # re-read the protection (GUI)
    reconcile: Callable[[int], None] = lambda _account: None  # look at the account now
    gave_up: Callable[[int, str], None] = lambda _pid, _why: None  # no broker stop can be held: alert


# ============================================================================= the manager


@dataclass(slots=True)
class _Record:
    """What the manager keeps of one protection beside the database, which holds its ``SafetyState``.

    Read and written under the manager's guard; ``lock`` serialises the protection's broker calls (the
    account's worker and TrailStop's own exit on the executor's thread).
    """

    lock: threading.RLock = field(default_factory=threading.RLock)
    account_id: int | None = None  # set while tracked: stop moves and checks wake the account's worker
    last_move: float | None = None  # when its broker stop last moved (``min_interval``)
    failures: int = 0  # failed steps in a row (the retry backoff)
    refusals: int = 0  # placements the broker refused in a row
    suspect: bool = False  # may have an order we did not record (a crash, an ambiguous reply)
    exiting: bool = False  # TrailStop's own exit owns the broker stop now
    check: bool = False  # read the broker stop back before the next decision
    replace: bool = False  # the broker refused a move of a live stop: cancel and place it again
    loosen: bool = False  # the trader changed the buffer: the stop may move back, once
    quote_first: bool = False  # the first look since it was tracked: judge "crossed" on a broker quote

    def forget(self) -> None:
        """It ended (or is gone): nothing to follow any more. ``suspect``/``exiting`` outlive this."""
        self.account_id = self.last_move = None
        self.failures = self.refusals = 0
        self.check = self.replace = self.loosen = self.quote_first = False


class _Worker:
    """One account's thread: runs due protections' steps, one at a time."""

    def __init__(self, manager: SafetyStopManager, account_id: int) -> None:
        self.manager = manager
        self.account_id = account_id
        self.due: dict[int, float] = {}
        self.cond = threading.Condition()
        self.stopping = False
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=f"safety-{account_id}", daemon=True)
        self.thread.start()

    def wake(self, pid: int, at: float) -> None:
        with self.cond:
            current = self.due.get(pid)
            if current is None or at < current:
                self.due[pid] = at
                self.cond.notify()

    def stop(self, timeout: float) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)

    def idle(self) -> bool:
        with self.cond:
            now = self.manager.clock()
            return not self.busy and not any(at <= now for at in self.due.values())

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.stopping:
                    now = self.manager.clock()
                    ready = [pid for pid, at in self.due.items() if at <= now]
                    if ready:
                        break
                    soonest = min(self.due.values(), default=None)
                    self.cond.wait(None if soonest is None else max(0.0, soonest - now))
                if self.stopping:
                    return
                for pid in ready:
                    del self.due[pid]
                self.busy = True
            try:
                for pid in ready:
                    try:
                        again = self.manager._step(pid)
                    except Exception:
                        log.exception("protection %s: safety stop step failed", pid)
                        again = self.manager.clock() + self.manager.policy.max_retry_delay
                    if again is not None:
                        self.wake(pid, again)
            finally:
                with self.cond:
                    self.busy = False


class SafetyStopManager:
    """Keeps each enabled protection's broker-held stop a buffer behind its trailed stop. Thread-safe.

    Orchestration only: the decision is ``decide``, the broker calls are the kind's strategy
    (safety_strategies.py), the legal state changes are safety_lifecycle.py's table, and what it keeps of
    a protection between steps is one ``_Record``.
    """

    def __init__(
        self,
        store: ProtectionStore,
        hooks: SafetyHooks,
        policy: SafetyPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.policy = policy or SafetyPolicy()
        self.clock = clock
        self._sleep = sleep
        self._guard = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._records: dict[int, _Record] = {}
        self._closed = False

    # ----------------------------------------------------------------- public, any thread

    def track(self, p: Protection) -> None:
        """An armed protection: place or check its broker stop now (if it has one enabled)."""
        if not p.safety_enabled and p.safety_state not in _LIVE_AT_BROKER:
            return
        with self._guard:
            rec = self._record(p.id)
            if rec.account_id is None:
                rec.quote_first = True
                if p.safety_state in (SafetyState.PLACING, SafetyState.MOVING, SafetyState.MISSING):
                    rec.suspect = True  # from an earlier run: look for an order it may have left
            rec.account_id = p.account_id
            rec.exiting = False
        self._wake(p.account_id, p.id)

    def on_stop_moved(self, pid: int) -> None:
        """The trailed stop moved (coalesced by the feed): look again soon. Never blocks."""
        with self._guard:
            rec = self._records.get(pid)
            account_id = rec.account_id if rec is not None else None
        if account_id is not None:
            self._wake(account_id, pid)

    def refresh(self, pid: int, *, buffer_changed: bool = False) -> None:
        """The protection changed (switched on or off, resized, removed, closed): act on it soon.

        ``buffer_changed``: the trader widened (or narrowed) the buffer; the broker stop follows, even back.
        """
        try:
            p = self.store.get(pid)
        except KeyError:
            return
        with self._guard:
            rec = self._record(pid)
            if buffer_changed:
                rec.loosen = True
            if p.status is Status.OPEN and (p.safety_enabled or p.safety_state in _LIVE_AT_BROKER):
                rec.account_id = p.account_id
        self._wake(p.account_id, pid)

    def on_order_update(self, pid: int) -> None:
        """The broker pushed a change of a safety SL-M order (tag: exit tag + "S"). Never blocks."""
        self._check_soon(pid)

    def verify(self, p: Protection) -> None:
        """Reconcile: check soon that the broker stop is there, at its level and quantity; fix it if not.

        The check runs on the account's safety worker, so that only that thread moves broker stops.
        """
        if p.status is Status.OPEN and (p.safety_enabled or p.safety_state in _LIVE_AT_BROKER):
            self._check_soon(p.id)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Tests: wait until no step is due or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._guard:
                workers = list(self._workers.values())
            if all(w.idle() for w in workers):
                return True
            time.sleep(0.01)
        return False

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the workers. Broker-held stops stay where they are: that is their point."""
        with self._guard:
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.stop(timeout)

    # ----------------------------------------------------------------- plumbing

    def _record(self, pid: int) -> _Record:
        """The protection's record (created on first use). The caller holds ``_guard``."""
        rec = self._records.get(pid)
        if rec is None:
            rec = self._records[pid] = _Record()
        return rec

    def _flag(self, pid: int, name: str, value: bool = True) -> None:
        with self._guard:
            setattr(self._record(pid), name, value)

    def _take_flag(self, pid: int, name: str) -> bool:
        """Read a one-shot flag of the record and clear it."""
        with self._guard:
            rec = self._record(pid)
            value = bool(getattr(rec, name))
            setattr(rec, name, False)
        return value

    def _wake(self, account_id: int, pid: int, at: float | None = None) -> None:
        with self._guard:
            if self._closed:
                return
            worker = self._workers.get(account_id)
            if worker is None:
                worker = self._workers[account_id] = _Worker(self, account_id)
        worker.wake(pid, self.clock() if at is None else at)

    def _lock_for(self, pid: int) -> threading.RLock:
        with self._guard:
            return self._record(pid).lock

    def _forget(self, pid: int) -> None:
        with self._guard:
            self._record(pid).forget()

    def _retry_later(self, pid: int) -> float:
        with self._guard:
            rec = self._record(pid)
            n, rec.failures = rec.failures, rec.failures + 1
        return self.clock() + Backoff(self.policy.retry_delay, self.policy.max_retry_delay).nth(n)

    def _moved(self, pid: int) -> None:
        with self._guard:
            rec = self._record(pid)
            rec.last_move = self.clock()
            rec.failures = 0

    def _note(
        self,
        p: Protection,
        kind: str,
        message: str = "",
        *,
        event: SafetyEvent | None = None,
        notify: bool = True,
        **fields: object,
    ) -> Protection:
        """Journal and store a change of the safety stop; ``event`` moves its state (the table's way)."""
        if event is not None:
            current = self.store.get(p.id).safety_state
            fields["safety_state"] = next_state(current, event, p.id)
        p = self.store.update_safety(p.id, kind=kind, message=message, **fields)
        if notify:
            self.hooks.changed(p.id)
        return p

    def _strategy(self, kind: SafetyKind, broker: Broker) -> SafetyStrategy | None:
        return strategy_for(kind, broker, self.policy.limit_percent, self.policy.market_protection)

    def _others_exits(self, p: Protection) -> set[str]:
        """Orders that are other protections' exits: never the order this one's GTT fired into."""
        return {
            o.exit_order_id
            for o in self.store.protections(account_id=p.account_id)
            if o.id != p.id and o.exit_order_id
        }

    # ----------------------------------------------------------------- the worker's step

    def _step(self, pid: int) -> float | None:
        """Bring one protection's broker stop where it belongs. Returns when to look again (None: on news)."""
        with self._lock_for(pid):
            try:
                p = self.store.get(pid)
            except KeyError:
                self._forget(pid)
                return None
            with self._guard:
                exiting = self._record(pid).exiting
            if p.status in _ENDED:
                self._forget(pid)
                if p.safety_state not in _LIVE_AT_BROKER:
                    return None
            elif p.status is not Status.OPEN or exiting:
                return None  # TRIGGERED, EXITING, EXIT_FAILED: the exit path owns the broker stop now
            broker = self.hooks.broker_for(p.account_id)
            if broker is None:
                return self._retry_later(pid)  # logged out: the stop at the broker stays as it is
            kind = safety_kind_for(broker, p)
            if p.status in _ENDED:
                try:
                    return self._clean_up(p, broker, kind)
                except (AuthError, TemporaryError) as exc:
                    log.info("protection %s: taking the safety stop away failed (%s); retrying", pid, exc)
                    return self._retry_later(pid)
            strategy = self._strategy(kind, broker)
            if strategy is None:
                if p.safety_enabled and p.safety_state is not SafetyState.OFF:
                    self._note(
                        p,
                        "safety_unsupported",
                        "this broker or product has no safety stop",
                        event=SafetyEvent.SWITCH_OFF,
                    )
                return None
            try:
                if self._take_flag(pid, "check") and p.safety_order_id and p.safety_state in _CHECKED:
                    again = self._check_held(p, broker)
                    if again is not None:
                        return again
                    p = self.store.get(pid)
                    if p.status is not Status.OPEN:
                        return None
                return self._follow(p, broker, strategy)
            except NotInBookYet as exc:
                # Our own order id, answered by the broker: it exists. Kite's book trails new orders and
                # fills by 0.5-2 s (PROTOCOLS.md), so "Couldn't find that order_id" means "not yet".
                log.info("protection %s: %s; reading it again later", pid, exc)
                if isinstance(exc, FiredNotInBookYet):
                    self._fired_unread(pid, exc.order_id)
                self._flag(pid, "check")
                return self._retry_later(pid)
            except AuthError as exc:
                log.warning("protection %s: safety stop waits for a login (%s)", pid, exc)
                return self._retry_later(pid)
            except TemporaryError as exc:
                log.info("protection %s: safety stop call failed (%s); retrying", pid, exc)
                if isinstance(exc, AmbiguousError):
                    with self._guard:
                        rec = self._record(pid)
                        rec.suspect = True  # placed but not recorded? looked for first
                        rec.check = True  # moved or not? read back first
                return self._retry_later(pid)

    def _fired_unread(self, pid: int, order_id: str) -> None:
        """The GTT fired into ``order_id``, which the book does not list yet: recorded FIRED now, so that
        TrailStop's own exit keeps the GTT (Kite forgets a deleted one, and with it its order) and waits
        for its order instead of sending a second exit. Found by the chaos-safety run (seed 30297)."""
        p = self.store.get(pid)
        if p.status is Status.OPEN and p.safety_state is not SafetyState.FIRED and p.safety_order_id:
            self._note(p, "safety_fired", f"order {order_id} (not in the book yet)", event=SafetyEvent.FIRE)

    def _clean_up(self, p: Protection, broker: Broker, kind: SafetyKind) -> float | None:
        """An ended protection whose broker stop may still be there: it goes, or it could open a position.

        It ended while its stop was being placed or moved, or the app stopped before taking it away; a
        placement that never got recorded is looked for (tag, or GTT scan) first.
        """
        if not p.safety_order_id and p.safety_state in (SafetyState.PLACING, SafetyState.MOVING):
            held = p.safety_kind if p.safety_kind is not SafetyKind.NONE else kind
            if held is not SafetyKind.NONE:
                p = self._look_for_orphan(p, broker, held)
        if p.safety_order_id and p.safety_state in _LIVE_AT_BROKER:
            return self._take_away(p, "the protection ended")
        if p.safety_state in _LIVE_AT_BROKER:
            self._note(p, "safety_removed", "the protection ended", event=SafetyEvent.REMOVE)
        return None

    def _follow(self, p: Protection, broker: Broker, strategy: SafetyStrategy) -> float | None:
        kind = strategy.kind
        if not p.safety_enabled:
            if p.safety_state in _LIVE_AT_BROKER and p.safety_order_id:
                return self._take_away(p, "switched off", final=SafetyEvent.SWITCH_OFF)
            if p.safety_state is not SafetyState.OFF:
                self._note(p, "safety_off", event=SafetyEvent.SWITCH_OFF)
            return None
        with self._guard:
            suspect = self._record(p.id).suspect
        if suspect:
            p = self._look_for_orphan(p, broker, kind)
            self._flag(p.id, "suspect", False)
            if p.status is not Status.OPEN:
                return None
        if p.safety_state is SafetyState.FIRED:
            return None  # its order is working; the reconciler or TrailStop's exit settles it
        if p.paused:
            return None  # a paused protection keeps the broker stop where it is
        wanted = p.safety_target
        if wanted is None or p.stop is None:
            return None
        quantity = self._share(p, broker)
        held = p.safety_level if p.safety_order_id and p.safety_state.held else None
        if held is not None and p.safety_kind is not kind:
            return self._take_away(p, f"{p.safety_kind.value} is not this product's kind any more")
        if quantity <= 0:
            # Older protections on this position (or exits on their way) cover all of it: a broker stop
            # of its own would sell what theirs sell too. The reconciler looks at it again (safety_check).
            if held is not None:
                return self._take_away(p, "other protections on its position hold all of it")
            return None
        cap = broker.capabilities.modification_cap(kind)
        if self.policy.max_modifications is not None:
            cap = self.policy.max_modifications if cap is None else min(cap, self.policy.max_modifications)
        with self._guard:
            rec = self._record(p.id)
            last, force_replace, loosen = rec.last_move, rec.replace, rec.loosen
            rec.loosen = False
        decision = decide(
            side=p.side,
            wanted=wanted,
            held=held,
            held_quantity=p.safety_quantity,
            quantity=quantity,
            modifications=p.safety_modifications,
            cap=cap,
            last_move=last,
            now=self.clock(),
            threshold=threshold_for(
                p.stop,
                p.tick_size,
                p.safety_buffer_percent,
                p.safety_buffer_ticks,
                self.policy.threshold_fraction,
            ),
            policy=self.policy,
            loosen=loosen,
        )
        if force_replace and decision.move in (Move.MODIFY, Move.WAIT):
            decision = Decision(Move.REPLACE, wanted)
        if decision.move is Move.NONE:
            return None
        if decision.move is Move.WAIT:
            return decision.at
        if decision.move is Move.REPLACE:
            self._flag(p.id, "replace", False)
            again = self._take_away(p, "modification cap", replacing=True)
            p = self.store.get(p.id)
            if p.safety_state is not SafetyState.PLACING:
                return again  # it fired, or the cancel failed: the next step looks again
            decision = Decision(Move.PLACE, wanted)
        if decision.move is Move.PLACE:
            return self._place(p, broker, strategy, wanted, quantity)
        return self._modify(p, broker, strategy, wanted, quantity)

    def _share(self, p: Protection, broker: Broker) -> int:
        """The quantity its broker stop may hold: its share of the position (positions.allocate).

        Found by the chaos run with a position protected twice: the second protection, written while the
        app was down, placed a GTT for all 33 shares at start-up beside the first one's GTT for the same
        33; a price gap fired both and sold 66 of a 33-share long. Broker-held stops fire when TrailStop
        is not there to arbitrate, so the stops of the protections sharing one position must never add up
        to more than it: older protections (and exits on their way) take theirs first, as exits do.
        Alone on its position (the usual case) it holds its own quantity, and nothing is read.

        Not alone either once a twin's exit sold from the position since this protection was made: it may
        have sold all of it (the twin came first), and a stop for ``own`` on a flat position would open one
        nobody asked for. A read that may not show that exit's fill yet (positions.settling_exits) counts
        it as gone: the stop never holds more than may be left.
        """
        own = p.filled_quantity or p.quantity
        key = position_key(p)
        same = [o for o in self.store.live(p.account_id) if o.id != p.id and position_key(o) == key]
        exited = [
            o
            for o in self.store.ended_since(p.account_id, p.created_at)
            if o.id != p.id
            and o.status is Status.CLOSED
            and o.reason != "external"
            and position_key(o) == key
        ]
        if not same and not exited:
            return own
        as_of = datetime.now()
        positions = broker.positions()
        holdings = broker.holdings() if p.product is Product.CNC else []
        live = open_quantity(p, positions, holdings, broker.capabilities)
        gone = sum(exit_claim(o) for o in settling_exits(p, exited, LiveQuantity(live, as_of), POSITIONS_LAG))
        group = [p, *(o for o in same if o.status in (Status.OPEN, Status.TRIGGERED))]
        share = allocate(group, {key: live - gone}, exits_in_flight(same)).get(p.id, 0)
        if share < own:
            log.info(
                "protection %s: its safety stop holds %d of %d (position %d, shared with %s)",
                p.id,
                share,
                own,
                live,
                [o.id for o in same],
            )
        return share

    # ----------------------------------------------------------------- placing, moving, taking away

    def _last_price(self, p: Protection, broker: Broker) -> float | None:
        """The price "already crossed" is judged on: the feed's latest, except the first time after the
        start (or after the protection was first tracked), when a quote is read from the broker: a price
        the feed kept from before a restart or a reconnect can be far from the market, and a stop placed
        through the market fires at once beside TrailStop's own exit."""
        with self._guard:
            fresh = self._record(p.id).quote_first
        price = None if fresh else self.hooks.last_price(p)
        if price is not None and price > 0:
            return price
        key = p.instrument if "|" in p.instrument else f"{p.exchange}:{p.symbol}"
        try:
            price = broker.ltp([key]).get(key)
        except BrokerError as exc:
            log.info("protection %s: no last price for the safety stop (%s)", p.id, exc)
            return None
        if price is not None and price > 0:
            self._flag(p.id, "quote_first", False)
        return price

    def _crossed(self, p: Protection, level: float, last: float | None) -> bool:
        """The price is already at or through the level: a stop placed there would fire (or be refused)."""
        if last is None:
            return False
        return last <= level if p.side.is_long else last >= level

    def _place(
        self, p: Protection, broker: Broker, strategy: SafetyStrategy, level: float, quantity: int
    ) -> float | None:
        kind = strategy.kind
        last = self._last_price(p, broker)
        if (strategy.needs_last_price and last is None) or self._crossed(p, level, last):
            # TrailStop's own stop (above the safety level) is about to fire, or the price is unknown.
            return self._retry_later(p.id)
        # Persist before acting: a crash after the broker took it is found again (tag, or GTT scan).
        if (
            p.safety_state is not SafetyState.PLACING
            or p.safety_kind is not kind
            or p.safety_quantity != quantity
        ):
            # The quantity too: a stop sized to its share of a shared position is found by it after a crash.
            p = self._note(
                p,
                "safety_placing",
                event=SafetyEvent.PLACE,
                notify=False,
                safety_kind=kind,
                safety_quantity=quantity,
            )
        try:
            order_id, price = strategy.place(p, level, quantity, last)
        except (RejectedError, BrokerInputError, ValueError) as exc:
            return self._refused(p, kind, str(exc))
        p = self._note(
            p,
            "safety_placed",
            f"{kind.value} {order_id}",
            event=SafetyEvent.ACCEPTED,
            safety_kind=kind,
            safety_order_id=order_id,
            safety_level=level,
            safety_price=price,
            safety_quantity=quantity,
            safety_modifications=0,
        )
        log.info("protection %s: safety stop %s %s placed at %.2f", p.id, kind.value, order_id, level)
        self._moved(p.id)
        if p.status in _ENDED:
            # It ended while the order was on its way (the reconciler found the position flat): the new
            # stop must not outlive it. The worker may be stopping, so this cannot wait for a next step.
            return self._take_away(p, "the protection ended")
        if kind.is_order:
            # Recorded first, read back second: a failed read must not lead to a second order. Kite
            # may still reject an accepted order (margins, circuit limits): it is then missing.
            order = strategy.own_order(order_id)
            if order.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
                why = order.status_message or order.raw_status
                return self._refused(self.store.get(p.id), kind, why)
        with self._guard:
            self._record(p.id).refusals = 0
        return None

    def _refused(self, p: Protection, kind: SafetyKind, why: str) -> float | None:
        """The broker refused a new safety stop. Never retried blindly: an SL-M the exchange does not
        offer here becomes an SL at once; an order type refused outright, or refusals that keep coming,
        give the safety stop up with an alert (TrailStop's own stop still protects the position)."""
        type_refused = order_type_refused(why)
        if kind is SafetyKind.SL_M and type_refused:
            self._note(
                p,
                "safety_fallback",
                f"SL-M refused ({why}); a stop-loss limit order instead",
                event=SafetyEvent.LOST,
                safety_kind=SafetyKind.SL,
                safety_order_id=None,
            )
            log.info("protection %s: SL-M refused by the exchange (%s); placing an SL order", p.id, why)
            return self.clock()
        with self._guard:
            rec = self._record(p.id)
            rec.refusals += 1
            refusals = rec.refusals
        if type_refused or refusals >= self.policy.max_refusals:
            reason = f"the broker refused the {kind.value} safety stop: {why}"
            if not type_refused:
                reason += f" ({refusals} times in a row)"
            self._note(
                p,
                "safety_given_up",
                reason[:300],
                event=SafetyEvent.GIVE_UP,
                safety_enabled=False,
                safety_order_id=None,
            )
            with self._guard:
                self._record(p.id).refusals = 0
            log.warning("protection %s: safety stop given up: %s", p.id, reason)
            self.hooks.gave_up(p.id, reason)
            return None
        self._note(
            p,
            "safety_missing",
            f"the broker refused it: {why}",
            event=SafetyEvent.LOST,
            safety_order_id=None,
        )
        return self._retry_later(p.id)

    def _modify(
        self, p: Protection, broker: Broker, strategy: SafetyStrategy, level: float, quantity: int
    ) -> float | None:
        order_id = p.safety_order_id
        assert order_id is not None
        last = self._last_price(p, broker)
        if self._crossed(p, level, last) or (strategy.needs_last_price and last is None):
            return self._retry_later(p.id)
        self._note(p, "safety_moving", event=SafetyEvent.MOVE)
        try:
            price = strategy.modify(p, order_id, level, quantity, last)
        except (RejectedError, BrokerInputError) as exc:
            # Refused: it fired or was cancelled meanwhile, or the cap was reached. Look, then decide.
            log.info("protection %s: moving the safety stop was refused (%s)", p.id, exc)
            p = self._note(p, "safety_move_refused", str(exc)[:200], event=SafetyEvent.SETTLED, notify=False)
            return self._recheck(p, broker, exc)
        except TemporaryError:
            self._note(p, "safety_moving", event=SafetyEvent.SETTLED, notify=False)
            raise
        self._note(
            p,
            "safety_moved",
            f"{p.safety_level} -> {level}",
            event=SafetyEvent.SETTLED,
            safety_level=level,
            safety_quantity=quantity,
            safety_price=price,
            safety_modifications=p.safety_modifications + 1,
        )
        self._moved(p.id)
        return None

    def _recheck(self, p: Protection, broker: Broker, exc: BrokerError) -> float | None:
        state = self._broker_state(p, broker)
        if state is None:
            self._note(p, "safety_missing", str(exc)[:200], event=SafetyEvent.LOST, safety_order_id=None)
            return self._retry_later(p.id)
        live, fired = state
        if fired is not None:
            self._settle_fired(p, fired)
            return None
        if live:
            # Still there and refused: the cap (or a limit we do not know). Cancel and re-place it.
            self._flag(p.id, "replace")
            return self.clock()
        self._note(p, "safety_missing", str(exc)[:200], event=SafetyEvent.LOST, safety_order_id=None)
        return self._retry_later(p.id)

    def _take_away(
        self,
        p: Protection,
        why: str,
        *,
        replacing: bool = False,
        final: SafetyEvent = SafetyEvent.REMOVE,
    ) -> float | None:
        """Cancel the SL-M or delete the GTT; ``replacing``: a new one is placed right after (PLACING)."""
        broker = self.hooks.broker_for(p.account_id)
        order_id = p.safety_order_id
        if broker is None or order_id is None:
            return self._retry_later(p.id) if order_id else None
        strategy = self._strategy(p.safety_kind, broker)
        if isinstance(strategy, GTTStrategy):
            # A GTT that fired while nobody watched (the app was down, the feed missed the gap) is the exit,
            # not something to delete: Kite lets a triggered GTT be deleted and then forgets it, and the sale
            # it made was recorded as "closed outside" (found by make chaos-safety). Read it first.
            state = self._broker_state(p, broker)
            if state is not None and state[1] is not None:
                self._settle_fired(self.store.get(p.id), state[1])
                return None
        self._note(p, "safety_moving", event=SafetyEvent.MOVE, notify=False)
        try:
            if strategy is not None:
                strategy.cancel(order_id)
        except (RejectedError, BrokerInputError) as exc:
            self._note(p, "safety_moving", event=SafetyEvent.SETTLED, notify=False)
            state = self._broker_state(p, broker)
            if state is not None and state[1] is not None:
                self._settle_fired(self.store.get(p.id), state[1])
                return None
            if state is not None and state[0]:
                log.warning("protection %s: the safety stop could not be taken away (%s)", p.id, exc)
                return self._retry_later(p.id)
        except TemporaryError:
            self._note(p, "safety_moving", event=SafetyEvent.SETTLED, notify=False)
            raise
        if replacing:
            self._note(
                p,
                "safety_replacing",
                why,
                event=SafetyEvent.REPLACE,
                safety_order_id=None,
                safety_modifications=0,
            )
        else:
            self._note(p, "safety_removed", why, event=final, safety_order_id=None)
            log.info("protection %s: safety stop %s taken away (%s)", p.id, order_id, why)
        return None

    # ----------------------------------------------------------------- reading the broker

    def _read(self, p: Protection, broker: Broker) -> Reading | None:
        """The recorded broker stop, read back (None: nothing recorded, or no way to reach it)."""
        strategy = self._strategy(p.safety_kind, broker)
        if not p.safety_order_id or strategy is None:
            return None
        return strategy.read(p, p.safety_order_id, lambda: self._others_exits(p))

    def _broker_state(self, p: Protection, broker: Broker) -> tuple[bool, Order | None] | None:
        """(still live, the order it fired into) of the recorded broker stop; None when it is gone unfired."""
        reading = self._read(p, broker)
        if reading is None:
            return None
        if reading.live:
            return True, None
        return None if reading.fired is None else (False, reading.fired)

    def _look_for_orphan(
        self,
        p: Protection,
        broker: Broker,
        kind: SafetyKind,
        *,
        read_order: Callable[[str], Order] | None = None,
        settle: bool = True,
    ) -> Protection:
        """After a crash or an ambiguous reply: a broker stop we placed but did not record is adopted.

        Adopted means recorded (id, kind, level, quantity, journalled) first; one that fired is then
        settled (``settle``; the reconciler settles it itself). ``read_order`` reads the order a GTT fired
        into (default: the worker's read, which looks again later when the book does not list it yet).
        """
        if p.safety_order_id and p.safety_state in (SafetyState.PLACED, SafetyState.MOVING):
            state = self._broker_state(p, broker)
            if state is None:
                return self._note(
                    p, "safety_missing", "not at the broker", event=SafetyEvent.LOST, safety_order_id=None
                )
            if state[1] is not None:
                self._settle_fired(p, state[1])
                return self.store.get(p.id)
            if p.safety_state is SafetyState.MOVING:
                return self._note(p, "safety_checked", event=SafetyEvent.SETTLED, notify=False)
            return p
        strategy = self._strategy(kind, broker)
        if strategy is None:
            return p
        # Not ours: a stop another protection holds or held (an ended one too: a twin on the same position
        # closed by its GTT keeps that GTT's id), nor one that fired into another protection's exit. Found by
        # the chaos run: a twin whose exit waited for the first one's took the first one's fired GTT (ended,
        # so no longer "live") for its own unrecorded stop, and closed with the first one's order as its exit.
        others = [x for x in self.store.protections(account_id=p.account_id) if x.id != p.id]
        others += [x for x in self.store.live() if x.account_id != p.account_id]
        search = Search(
            owned={x.safety_order_id for x in others if x.safety_order_id},
            read_order=read_order or strategy.own_order,
            quantities=(p.filled_quantity or p.quantity, p.safety_quantity),
            others_exits={x.exit_order_id for x in others if x.exit_order_id},
        )
        found = strategy.find_unrecorded(p, search)
        if found is None:
            return p
        if found.fired is not None and not kind.is_order:
            log.warning("protection %s: unrecorded GTT %s found fired at the broker", p.id, found.order_id)
        # Recorded before anything is settled: the journal and the row name the stop (and through it the
        # order it fired into) as this protection's, whatever happens next. Found by make chaos-safety
        # (seed 30300): settled unrecorded, it closed as "external", a GTT of unknown origin.
        p = self._note(
            p,
            "safety_adopted",
            found.message,
            event=SafetyEvent.ACCEPTED,
            safety_kind=kind,
            safety_order_id=found.order_id,
            safety_level=found.level,
            safety_price=found.price,
            safety_quantity=found.quantity,
            safety_modifications=found.modifications,
        )
        if found.fired is not None and settle:
            self._settle_fired(p, found.fired)
            return self.store.get(p.id)
        return p

    # ----------------------------------------------------------------- the broker stop fired

    def _settle_fired(self, p: Protection, order: Order) -> None:
        """The broker stop fired into ``order``: CLOSED (reason "safety stop") once it filled; else FIRED."""
        if order.status is OrderStatus.COMPLETE and p.status is Status.OPEN:
            try:
                close_by_safety_stop(self.store, p.id, order)
            except (ConcurrentTransition, IllegalTransition) as exc:
                log.info("protection %s: safety fill not applied (%s)", p.id, exc)
                return
            log.info("protection %s: the broker-held safety stop filled at %.2f", p.id, order.average_price)
            self.hooks.disarm(p.id)
            self._forget(p.id)
            self.hooks.changed(p.id)
            return
        if order.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            # It fired, but its order failed: nothing holds the position at the broker any more.
            why = f"its order {order.order_id} was {order.raw_status.lower()}: {order.status_message or ''}"
            self._note(p, "safety_missing", why, event=SafetyEvent.LOST, safety_order_id=None)
            self._wake(p.account_id, p.id)
            return
        if p.safety_state is not SafetyState.FIRED:
            self._note(
                p,
                "safety_fired",
                f"order {order.order_id} {order.raw_status}",
                event=SafetyEvent.FIRE,
                safety_order_id=p.safety_order_id,
            )
        self.hooks.reconcile(p.account_id)

    def _check_soon(self, pid: int) -> None:
        try:
            p = self.store.get(pid)
        except KeyError:
            return
        self._flag(pid, "check")
        self.track(p)

    # ----------------------------------------------------------------- the reconciler's questions

    def fired_order(self, p: Protection, broker: Broker) -> Order | None:
        """For a position found flat: the filled order the broker stop fired into, if it did.

        Raises the broker's error when the stop cannot be read: "it did not fire" would be a guess, and
        the protection would be recorded as closed outside TrailStop while its own stop closed it.
        """
        order = self.sold_by_stop(p, broker)
        return order if order is not None and order.status is OrderStatus.COMPLETE else None

    def sold_by_stop(self, p: Protection, broker: Broker) -> Order | None:
        """The order this protection's broker stop fired into (filled, or still working), if it did.

        A stop already taken away counts too: a GTT deleted for TrailStop's own exit may have fired just
        before the delete, unseen (the price gapped through it and came back, the book lagged). Kite then
        forgets the GTT, and only its order, in the book, says so. Found by make chaos-safety (c80044e,
        protection 44): that GTT sold the shares, the own exit was refused ("Insufficient holdings"), and
        the protection was recorded as closed outside TrailStop. Raises the broker's error when unreadable.
        """
        if not p.safety_order_id and p.safety_state not in _UNRECORDED and not _taken_away(p):
            return None
        with self._lock_for(p.id):
            p = self.store.get(p.id)
            if not p.safety_order_id and p.safety_state in _UNRECORDED:
                # Placed, then a crash before the reply was stored: it may be what closed the position.
                held = p.safety_kind if p.safety_kind is not SafetyKind.NONE else safety_kind_for(broker, p)
                if held is SafetyKind.NONE:
                    return None
                p = self._look_for_orphan(p, broker, held, settle=False)
            if not p.safety_order_id:
                return self._fired_before_removal(p, broker) if _taken_away(p) else None
            state = self._broker_state(p, broker)
            return state[1] if state is not None else None

    def _fired_before_removal(self, p: Protection, broker: Broker) -> Order | None:
        """The order a stop taken away (no id recorded any more) fired into before it went, if it did."""
        strategy = self._strategy(p.safety_kind, broker)
        if isinstance(strategy, GTTStrategy):
            # The untagged LIMIT order of the GTT's side, quantity and price, placed after the protection.
            order = strategy.fired_in_book(p, self._others_exits(p))
        elif isinstance(strategy, SLOrderStrategy):
            order = broker.find_order_by_tag(p.safety_tag)  # cancelled after it filled (part of) it
        else:
            return None
        if order is None or order.status is OrderStatus.REJECTED:
            return None
        if order.status is OrderStatus.CANCELLED and order.filled_quantity <= 0:
            return None
        if order.status is OrderStatus.TRIGGER_PENDING:
            return None  # an SL-M still waiting is no sale (a cancelled one reads CANCELLED)
        return order

    def _check_held(self, p: Protection, broker: Broker) -> float | None:
        """Read the recorded broker stop back. Returns when to step again (None: go on following)."""
        reading = self._read(p, broker)
        if reading is None:
            return None
        if reading.rejected is not None and p.safety_state is SafetyState.PLACED:
            # Accepted, then refused by the exchange (an SL-M on options or BSE: 16052), found by a
            # later read because the book lagged the placement: handled as a refusal at placement.
            return self._refused(p, p.safety_kind, reading.rejected)
        fired = reading.fired
        if fired is None and p.safety_state is SafetyState.FIRED and reading.order is not None:
            fired = reading.order  # a stop order known to have fired: its own order says how it ended
        if fired is not None:
            self._settle_fired(p, fired)
        elif not reading.live or p.safety_state is SafetyState.FIRED:
            self._note(p, "safety_missing", reading.status, event=SafetyEvent.LOST, safety_order_id=None)
        elif (reading.level, reading.quantity) != (p.safety_level, p.safety_quantity):
            self._note(
                p,
                "safety_checked",
                "the broker holds another level or quantity",
                safety_level=reading.level,
                safety_quantity=reading.quantity,
            )
        return None

    # ----------------------------------------------------------------- TrailStop's own exit

    def prepare_exit(self, p: Protection, broker: Broker, quantity: int) -> ExitPlan:
        """Before TrailStop's own exit of ``quantity`` (0: the position is already flat): never two exits.

        SL-M: turned into the exit (modified to MARKET, and to ``quantity``). GTT: deleted first; if it has
        already fired, its order is the exit. Runs on the executor's thread, urgent, under the lock.
        """
        if not p.safety_order_id and p.safety_state not in _UNRECORDED:
            return PROCEED
        self._flag(p.id, "exiting")
        with self._lock_for(p.id):
            p = self.store.get(p.id)
            if not p.safety_order_id and p.safety_state in _UNRECORDED:
                # Placed but not recorded (an ambiguous reply or a crash; FIRED: found fired by a version
                # that did not record its id): find it before exiting.
                kind = safety_kind_for(broker, p)
                p = self._exit_call(
                    lambda: self._look_for_orphan(
                        p, broker, kind, read_order=lambda oid: self._read_fired_order(broker, oid)
                    )
                )
                if p.status is Status.CLOSED:
                    return ExitPlan(p.exit_order_id, fired=True)
            if not p.safety_order_id:
                return PROCEED
            strategy = self._strategy(p.safety_kind, broker)
            if isinstance(strategy, SLOrderStrategy):
                return self._exit_via_stop_order(p, strategy, quantity)
            if isinstance(strategy, GTTStrategy):
                return self._exit_around_gtt(p, strategy, quantity)
            return ExitPlan(blocked="the broker-held GTT cannot be reached through this account")

    @property
    def _exit_backoff(self) -> Backoff:
        """The pauses between broker calls on the exit path: short, doubling, at most 2 s."""
        return Backoff(self.policy.exit_retry_delay, 2.0)

    def _exit_call(self, fn: Callable[[], T]) -> T:
        # An ambiguous reply is not retried blindly: the caller reads the order back first.
        return call_with_retries(
            fn,
            attempts=self.policy.exit_attempts,
            backoff=self._exit_backoff,
            sleep=self._sleep,
            give_up=lambda exc: isinstance(exc, AmbiguousError),
            # Said in the log: a burst of 5xx replies can hold an exit here for seconds (seen in a chaos
            # run as an exit that went out 11 s after its trigger with nothing logged in between).
            on_retry=lambda attempt, exc: log.info("exit-path broker call failed (%s); retrying", exc),
        )

    def _exit_via_stop_order(self, p: Protection, strategy: SLOrderStrategy, quantity: int) -> ExitPlan:
        broker = strategy.broker
        order_id = p.safety_order_id
        assert order_id is not None
        failures = 0  # temporary errors in a row: each waits longer (the exit path's backoff)
        for attempt in range(self.policy.exit_attempts):
            # The first look is one read: if the book cannot say (unreadable, lagging), the SL-M is modified
            # to MARKET at once, since the broker answers a modify of our own order whatever its reads say
            # (found by make chaos-safety: order replies spoilt for seconds held the exit past its budget).
            # Only a refusal needs the order read, and then it is read until it can be.
            quick = attempt == 0 and quantity > 0
            order = self._read_stop_once(p, broker, order_id) if quick else None
            if not quick:
                order = self._read_fired_order(broker, order_id)
            if order is not None:
                if order.status is OrderStatus.COMPLETE or order.status is OrderStatus.OPEN:
                    return self._adopt(p, order, fired=order.order_type is not OrderType.MARKET)
                if order.is_final:  # cancelled or rejected: nothing at the broker
                    self._note(
                        p,
                        "safety_removed",
                        f"the SL-M was {order.raw_status.lower()}",
                        event=SafetyEvent.REMOVE,
                        safety_order_id=None,
                    )
                    return PROCEED
                if quantity <= 0:
                    return self._cancel_for_exit(p, strategy, order)
            try:
                broker.modify_order(
                    order_id,
                    order_type=OrderType.MARKET,
                    quantity=quantity if order is None or quantity != order.quantity else None,
                    urgent=True,
                )
            except (RejectedError, BrokerInputError) as exc:
                # Refused: it triggered meanwhile (look again), or the cap: cancel it and exit as usual.
                before = order.status if order is not None else OrderStatus.TRIGGER_PENDING
                again = self._read_after_refusal(broker, order_id, before)
                if again.status in (OrderStatus.OPEN, OrderStatus.COMPLETE) or again.is_final:
                    continue
                log.warning("protection %s: the SL-M could not be turned into the exit (%s)", p.id, exc)
                return self._cancel_for_exit(p, strategy, again)
            except AmbiguousError:
                continue  # look at the order again: it may have been modified
            except TemporaryError:
                self._sleep(self._exit_backoff.nth(failures))
                failures += 1
                continue
            self._note(p, "safety_to_exit", f"SL-M {order_id} modified to MARKET", event=SafetyEvent.TO_EXIT)
            log.info("protection %s: exit by turning the safety SL-M %s into a MARKET order", p.id, order_id)
            return ExitPlan(order_id)
        return ExitPlan(blocked="the broker-held SL-M could not be turned into the exit")

    def _read_stop_once(self, p: Protection, broker: Broker, order_id: str) -> Order | None:
        """Our SL-M as the book has it now; None when the book cannot say (nothing is retried here)."""
        try:
            return broker.order(order_id)
        except (TemporaryError, BrokerInputError) as exc:
            log.info("protection %s: SL-M %s not readable now (%s); modified unread", p.id, order_id, exc)
            return None

    def _cancel_for_exit(self, p: Protection, strategy: SLOrderStrategy, order: Order) -> ExitPlan:
        try:
            self._exit_call(lambda: strategy.cancel(order.order_id, urgent=True))
        except (RejectedError, BrokerInputError):
            again = self._read_after_refusal(strategy.broker, order.order_id, order.status)
            if again.status in (OrderStatus.OPEN, OrderStatus.COMPLETE):
                return self._adopt(p, again, fired=True)
            if not again.is_final:
                return ExitPlan(blocked="the broker-held SL-M could not be cancelled")
        except TemporaryError as exc:
            return ExitPlan(blocked=f"the broker-held SL-M could not be cancelled: {exc}")
        self._note(
            p,
            "safety_removed",
            "cancelled for TrailStop's own exit",
            event=SafetyEvent.REMOVE,
            safety_order_id=None,
        )
        return PROCEED

    def _exit_around_gtt(self, p: Protection, strategy: GTTStrategy, quantity: int) -> ExitPlan:
        """Delete the GTT first; a GTT that fired (before, or just as it was deleted) is the exit.

        ``quantity`` 0 (the position already reads flat): something sold it, and the GTT is the likeliest,
        whatever the prices say (a gap through it may have come back unseen): its order is looked for over
        the whole window before the position is taken for closed outside TrailStop."""
        broker, gtt = strategy.broker, strategy.gtt
        gtt_id = p.safety_order_id
        assert gtt_id is not None
        delete = p.safety_state is not SafetyState.FIRED
        failures = 0  # temporary errors in a row: each waits longer (the exit path's backoff)
        for _ in range(self.policy.exit_attempts):
            if delete:
                try:
                    strategy.cancel(gtt_id, urgent=True)
                except (RejectedError, BrokerInputError) as exc:
                    log.info("protection %s: deleting the GTT was refused (%s)", p.id, exc)
                except AmbiguousError:
                    pass  # it may be deleted: the read below says
                except TemporaryError:
                    self._sleep(self._exit_backoff.nth(failures))
                    failures += 1
                    continue
            # Read it back. A broker that keeps deleted GTTs says whether it fired first; for one that
            # forgets them (Kite), the order a GTT placed just before the delete would be in the book.
            try:
                g: Gtt | None = self._exit_call(lambda: gtt.gtt(gtt_id))
            except GttNotFound:
                g = None
            if g is not None and g.is_live:
                delete = True
                continue  # still active: the delete did not happen; try again
            if g is not None and g.order_id and g.status is not GttStatus.REJECTED:
                return self._adopt(p, self._read_fired_order(broker, g.order_id), fired=True)
            known_fired = p.safety_state is SafetyState.FIRED
            fired = None if g is not None else self._exit_call(lambda: self._fired_in_book(p, strategy))
            suspect = known_fired or quantity <= 0
            if fired is None and g is None and (suspect or self._may_have_fired(p, broker)):
                fired = self._wait_for_gtt_order(p, strategy)
            if fired is not None:
                return self._adopt(p, fired, fired=True)
            if known_fired:
                # It was read as triggered before: its order exists, the book just does not show it (or Kite
                # no longer lists the GTT). Our own exit now could sell a second time (found by make
                # chaos-safety: recorded "closed outside" after the GTT's sale, with a lagging book the
                # latent double exit). The exit waits, TRIGGERED, and is tried again.
                raise TemporaryError(f"the fired GTT {gtt_id}'s order is not listed yet")
            self._note(
                p,
                "safety_removed",
                "GTT deleted for TrailStop's own exit",
                event=SafetyEvent.REMOVE,
                safety_order_id=None,
            )
            return PROCEED
        return ExitPlan(blocked="the broker-held GTT could not be deleted; it still protects the position")

    def _lagging_reads(self) -> Iterator[None]:
        """Pauses (backing off) over ``fired_lookup_window``: the order book can trail a fill by seconds."""
        for _ in polls(Backoff(0.2, 1.0), self.policy.fired_lookup_window, sleep=self._sleep):
            yield

    def _read_after_refusal(self, broker: Broker, order_id: str, before: OrderStatus) -> Order:
        """The order after a modify or cancel was refused: the refusal says it moved on (it filled,
        most often) before a lagging book does, so read until the book shows the change."""
        order: Order | None = None
        for _ in self._lagging_reads():
            order = self._exit_call(lambda: broker.order(order_id))
            if order.status is not before:
                return order
        return order or self._exit_call(lambda: broker.order(order_id))

    def _read_fired_order(self, broker: Broker, order_id: str) -> Order:
        """An order the broker named (a GTT's, or our SL-M); a lagging book may not know it for a moment."""
        for _ in self._lagging_reads():
            try:
                return self._exit_call(lambda: broker.order(order_id))
            except BrokerInputError as exc:
                log.info("order %s of a fired GTT not readable yet (%s)", order_id, exc)
        return self._exit_call(lambda: broker.order(order_id))

    def _may_have_fired(self, p: Protection, broker: Broker) -> bool:
        """Whether the price reached the GTT's trigger (unknown counts as yes).

        The broker's own last price is asked first: the feed's can trail it (found by the chaos run: the
        price gapped through the GTT while its delete was on its way, the feed had not delivered the gap,
        the book did not list the fired order yet, and a second exit went out). Either price at or through
        the trigger counts: a gap that came back leaves the feed's price as the only witness.
        """
        level = p.safety_level
        if level is None:
            return True
        key = p.instrument if "|" in p.instrument else f"{p.exchange}:{p.symbol}"
        try:
            fresh = broker.ltp([key]).get(key)
        except BrokerError as exc:
            log.info("protection %s: no fresh price for the fired-GTT check (%s)", p.id, exc)
            fresh = None
        prices = [x for x in (fresh, self.hooks.last_price(p)) if x is not None and x > 0]
        if fresh is None or not prices:
            return True
        return any(x <= level if p.side is Side.BUY else x >= level for x in prices)

    def _wait_for_gtt_order(self, p: Protection, strategy: GTTStrategy) -> Order | None:
        """Look for the order a crossed, now forgotten GTT placed, while the order book catches up.

        Found in a chaos run with the simulator's book_lag fault: the GTT fired as the price gapped through
        it, the delete went through, the book did not list the fired order yet, and a second exit went out.
        """
        for _ in self._lagging_reads():
            fired = self._exit_call(lambda: self._fired_in_book(p, strategy))
            if fired is not None:
                return fired
        return None

    def _fired_in_book(self, p: Protection, strategy: GTTStrategy) -> Order | None:
        return strategy.fired_in_book(p, self._others_exits(p))

    def _adopt(self, p: Protection, order: Order, *, fired: bool) -> ExitPlan:
        """The order the broker stop fired into becomes the exit; a resting LIMIT is pushed to MARKET."""
        if (
            order.status is OrderStatus.OPEN
            and order.order_type in (OrderType.LIMIT, OrderType.SL)
            and order.filled_quantity == 0
        ):
            broker = self.hooks.broker_for(p.account_id)
            if broker is not None:
                try:
                    broker.modify_order(order.order_id, order_type=OrderType.MARKET, urgent=True)
                except BrokerError as exc:
                    log.info("protection %s: the fired order stays a LIMIT order (%s)", p.id, exc)
        self._note(
            p,
            "safety_fired" if fired else "safety_to_exit",
            f"order {order.order_id} is the exit",
            event=SafetyEvent.FIRE if fired else SafetyEvent.TO_EXIT,
        )
        return ExitPlan(order.order_id, fired=fired)


__all__ = [
    "PROCEED",
    "SAFETY_STOP_REASON",
    "Decision",
    "ExitPlan",
    "Move",
    "SafetyConfig",
    "SafetyHooks",
    "SafetyPolicy",
    "SafetyStopManager",
    "decide",
    "gtt_limit_price",
    "order_type_refused",
    "safety_kind_for",
    "slm_unavailable",
    "threshold_for",
]
