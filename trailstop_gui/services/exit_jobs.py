"""ExitJobs: idempotent exit orders with retry, tag look-up and fill confirmation; no Qt.

``ExitExecutor`` (services/exit_executor.py) runs these jobs on the design card's QThreadPool and turns
their events into signals; tests drive ExitJobs directly with plain threads (:class:`ThreadRunner`).

The path for one protection, already TRIGGERED and committed by whoever decided the exit:

    (recovering? look the tag up first) -> live net quantity -> place MARKET exit with the protection's tag
      -> EXITING (exit order id stored) -> handed to the FillWatcher -> every child final -> CLOSED

- Sending is apart from watching: a pool thread places the exit and hands it to the one FillWatcher
  thread (services/exit_watch.py), so an exit never queues behind other exits' fill waits.
- Temporary errors and 429s are retried with backoff; when they outlast the attempts the protection stays
  TRIGGERED (an alert says so) and the reconciler sends it again later. EXIT_FAILED is for a broker's
  refusal only.
- After an ambiguous failure (the reply was lost: the order may be at the broker) the tag is looked up,
  and the order-update stream watched, for ``lookup_window`` seconds with backoff; the live quantity is
  read again each time. Nothing is sent while the book or the position shows the exit happened; a resend
  is the last resort, journalled as such (decisions: services/exit_decisions.py).
- The exit quantity is the protection's share of the live open quantity (positions.exit_share: other
  protections on the position and exits already sent take theirs first; one sending job per position at a
  time): an exit never flips a position. A twin whose exit filled a moment ago still takes its quantity
  until the figure is known to show that fill (positions.settling_exits); an exit whose share depends on
  it waits, and goes on by itself once a read would show it. A flat position (read twice, some seconds
  apart: positions lag a fresh fill) closes the protection (reason external) without sending anything.
- An exit above the exchange's freeze quantity is refused: it is sent again sliced by the broker (Kite
  autoslice, Upstox ``slice``), and every child order is watched; the exit is filled when all are.
- A market-protected exit can fill partly and leave the rest OPEN: the watcher re-prices the rest (modify
  to MARKET), then cancels it and places what is left (live quantity re-read first).
- With a broker-held safety stop (services/safety_stop.py), the safety manager is asked first: an SL-M
  becomes the exit (modified to MARKET), a GTT is deleted first, and a stop that already fired is the
  exit. Never two exits for one position.
- "Closed outside" (a flat position, or a refused delivery exit with no shares left) only when no order
  of the protection's own sold it: an earlier send of its exit, or the order its safety stop fired into
  (one already taken away too). Such an order is the exit: its fill is recorded, or it is watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from trailstop_gui.models.domain import Product, Protection, Side, Status
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import ConcurrentTransition, JournalEntry, ProtectionStore
from trailstop_gui.services.brokers.base import (
    Broker,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    SlicingBroker,
    as_preparing_broker,
    as_slicing_broker,
    latest_with_tag,
)
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    AuthError,
    BrokerError,
    TemporaryError,
    UnregisteredIPError,
)
from trailstop_gui.services.brokers.feed_loop import OrderUpdate
from trailstop_gui.services.exit_decisions import (
    Ambiguity,
    Step,
    WatchStep,
    after_ambiguous,
    is_freeze_refusal,
    is_no_slicing_refusal,
    totals,
    usable_exit,
)
from trailstop_gui.services.exit_send_log import ExitSendLog
from trailstop_gui.services.exit_watch import ExitWatch, FillWatcher
from trailstop_gui.services.holdings import blocked_by_working_sales, delivery_shares
from trailstop_gui.services.position_book import POSITIONS_LAG, PositionBook
from trailstop_gui.services.positions import (
    LiveQuantity,
    PositionKey,
    exit_claim,
    exit_share,
    open_quantity,
    position_key,
    position_name,
    same_instrument,
    settling_exits,
)
from trailstop_gui.services.retry import Backoff, call_with_retries
from trailstop_gui.services.safety_stop import SAFETY_STOP_REASON, SafetyStopManager

log = logging.getLogger("trailstop.exit")

T = TypeVar("T")


# How many times an exit that filled less than its protection covers is topped up (_short_of_protected).
MAX_TOP_UPS = 2


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    initial_delay: float = 0.2
    max_delay: float = 5.0
    fill_timeout: float = 60.0  # how long to watch an accepted exit before handing it to the reconciler
    poll_interval: float = 0.25
    flat_confirm: float = 2.0  # a flat position is read again this much later before it counts as flat
    # After an ambiguous failure: how long the tag is looked for (the book may trail a fill by seconds)
    # before anything is sent again, and the first pause between looks (doubling, at most 2 s).
    lookup_window: float = 3.0
    lookup_delay: float = 0.25
    # A partly filled exit whose rest shows no progress this long is re-priced, then cancelled and replaced.
    rest_timeout: float = 3.0
    # How far a positions read may trail a fill (position_book.POSITIONS_LAG): a twin's exit that filled
    # less than this before a read may be missing from it (positions.settling_exits).
    positions_lag: float = POSITIONS_LAG

    @property
    def backoff(self) -> Backoff:
        """Pauses between attempts to send (and to read around a send)."""
        return Backoff(self.initial_delay, self.max_delay)

    @property
    def lookup_backoff(self) -> Backoff:
        """Pauses between looks for a lost exit."""
        return Backoff(self.lookup_delay, 2.0)


class ExitEvents(Protocol):
    """What the exit jobs report; ``exit_executor.ExitSignals`` turns these into Qt signals for the views."""

    def exit_placed(self, protection_id: int, order_id: str) -> None: ...
    def exit_filled(self, protection_id: int, price: float) -> None: ...
    def exit_failed(self, protection_id: int, why: str) -> None: ...  # refused: EXIT_FAILED
    def exit_delayed(self, protection_id: int, why: str) -> None: ...  # stays TRIGGERED
    def closed_externally(self, protection_id: int) -> None: ...  # the position was already flat
    def login_needed(self, account_id: int) -> None: ...
    def job_finished(self, protection_id: int) -> None: ...


class JobRunner(Protocol):
    """Runs sending work on threads of its own (the executor's QThreadPool; plain threads in tests)."""

    def start(self, work: Callable[[], None]) -> None: ...
    def wait_done(self, timeout: float) -> bool: ...


class ThreadRunner:
    """A JobRunner on plain Python threads, for running :class:`ExitJobs` without Qt."""

    def __init__(self, max_threads: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="exit-send")
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()

    def start(self, work: Callable[[], None]) -> None:
        future = self._pool.submit(work)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def wait_done(self, timeout: float) -> bool:
        with self._lock:
            futures = set(self._futures)
        _, running = wait(futures, timeout=timeout)
        return not running


class TriggerGate:
    """Lets an exit job read the live position while the trigger is still being committed.

    The job may fetch positions at once, but it places nothing until ``open()``: TRIGGERED must be on disk
    first. ``close()`` (the commit failed: another thread got there first) ends the job without an order.

    ``committing()``: the committing thread has written its rows and is about to wait for the disk. The
    job works its exit out then (``wait_committing``), not before. Started earlier, it took the interpreter
    as the pool thread started and held it for its 1-2 ms of sizing while the commit waited behind it (on
    the tick path in one exit of three, bench/tick_to_exit_stages.py: "submitted -> job" negative); during
    the fsync the committing thread holds no interpreter lock, so the two now overlap as meant.
    """

    # Journalled in the TRIGGERED commit itself (TransitionRequest.events): the "an exit may be at the
    # broker" marker that the job's first attempt would otherwise commit on its own, one fsync later.
    commit_events = (("exit_sending", "attempt 1, marked with the trigger's commit"),)

    def __init__(self, protection: Protection) -> None:
        self.protection = protection
        self._event = threading.Event()
        self._committing = threading.Event()
        self.committed = False

    def committing(self) -> None:
        self._committing.set()

    def open(self) -> None:
        self.committed = True
        self._committing.set()
        self._event.set()

    def close(self) -> None:
        self._committing.set()
        self._event.set()

    def wait_committing(self, timeout: float = 10.0) -> None:
        """Until the commit is under way (or over): a job that waits longer goes on anyway."""
        self._committing.wait(timeout)

    def wait(self, timeout: float = 10.0) -> bool:
        return self._event.wait(timeout) and self.committed


@dataclass
class _Prepared:
    """An exit worked out while its trigger was being committed: its share and the order to send, and
    the twins' exits that filled a moment ago whose fills the live figure may not show yet."""

    share: int | None
    request: OrderRequest | None
    settling: list[Protection] = field(default_factory=list)


@dataclass
class _Marker:
    """Whether an "exit_sending" marker is on disk that no attempt has used yet (the gate's commit)."""

    pending: bool = False


class _TagWatch:
    """Order updates carrying one exit tag, seen on the stream while its job looks for a lost order."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.updates: dict[str, OrderUpdate] = {}


class ExitJobs:
    """Sends exits for TRIGGERED protections, at most one job (or watch) per protection at a time.

    Qt-free: ``runner`` gives the sending threads and ``events`` hears the outcomes; ``ExitExecutor``
    runs it on the design card's QThreadPool and turns the events into signals.
    """

    def __init__(
        self,
        store: ProtectionStore,
        broker_for: Callable[[int], Broker | None],
        *,
        events: ExitEvents,
        runner: JobRunner,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.store = store
        self.broker_for = broker_for
        self.policy = policy or RetryPolicy()
        self.events = events
        # Sending threads only: fills are watched on the FillWatcher's own thread, so a slow fill never
        # keeps another exit from being sent.
        self.runner = runner
        self._sleep = sleep
        self._clock = clock
        self._now = now  # wall clock, as the store's closed_at (a twin's exit fill: settling_exits)
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        # Waiting exits to send again later (due on ``clock``, timer), and ones to run again as soon as
        # their running job ends (a resume that came while it ran).
        self._resumes: dict[int, tuple[float, threading.Timer]] = {}
        self._rerun: set[int] = set()
        self._position_locks: dict[PositionKey, threading.Lock] = {}
        self._tags: dict[str, _TagWatch] = {}  # exit tags of the jobs running now
        self._tag_owner: dict[str, int] = {}  # exit tag -> protection id
        self._unconfirmed: set[int] = set()  # a reply was lost and the order never showed up (yet)
        self._ip_refused: set[int] = set()  # exits whose "this IP is refused" alert went out already
        # Set at shutdown: jobs stop waiting for fills (the reconciler finishes them at the next start).
        self.stopping = threading.Event()
        self.watcher = FillWatcher(
            self._on_watch_step,
            self._on_watch_expired,
            poll_interval=self.policy.poll_interval,
            rest_timeout=self.policy.rest_timeout,
            stopping=self.stopping,
            clock=clock,
        )
        # The broker-held safety stops, consulted before every exit (set by the ProtectionService).
        self.safety: SafetyStopManager | None = None
        # Each account's live position book (services/position_book.py; set by the ProtectionService):
        # an exit is sized from it when it vouches for the position, else from a positions read.
        self.book_for: Callable[[int], PositionBook | None] = lambda _account_id: None
        # When this process's exit requests ended, for the next start (services/exit_send_log.py; set by
        # the runtime): a restart whose previous process had no request in the air looks for a lost exit
        # only over what is left of the window since its last request ended.
        self.send_log: ExitSendLog | None = None

    # ----------------------------------------------------------------- public, any thread

    def submit(self, protection_id: int, *, recover: bool = False) -> bool:
        """Start the exit job of a TRIGGERED (or, with ``recover``, EXITING) protection.

        ``recover`` looks the tag up before placing anything: after a crash or a reconnect the exit may
        already be at the broker. Returns False when a job for it is already running (or watching).
        """
        if not self._claim(protection_id):
            return False
        self._start(protection_id, lambda: self._run_job(protection_id, recover))
        return True

    def submit_gated(self, protection: Protection) -> TriggerGate | None:
        """Start the exit of a protection whose TRIGGERED is being committed right now (the tick path).

        The job reads the live position while the caller commits; it places the order only after the
        caller's ``gate.open()``. Returns None when a job for it is already running.
        """
        gate = TriggerGate(protection)
        if not self._claim(protection.id):
            return None
        # Its position from the row in hand: the job takes the position's lock without reading it again.
        key = position_key(protection)
        self._start(protection.id, lambda: self._run_gated_job(gate), key)
        return gate

    def retry(self, protection_id: int) -> bool:
        """The trader's retry of an EXIT_FAILED protection: back to TRIGGERED, then the usual path."""
        self.store.transition(protection_id, Status.TRIGGERED, expected=Status.EXIT_FAILED, reason="retry")
        return self.submit(protection_id, recover=True)

    def withdraw(self, protection_id: int) -> None:
        """The trader removes a TRIGGERED protection whose exit never went out (e.g. no connected broker).

        Under the lock no job can start meanwhile, and a job started later reads EXIT_FAILED and sends
        nothing; a job already running is refused (ValueError): its exit may be on its way.
        """
        if protection_id in self._unconfirmed or self._sent_since_trigger(protection_id):
            # A reply was lost (or the app died while sending): the exit may be at the broker.
            raise ValueError("remove: an exit may already be at the broker; Retry looks it up first")
        with self._lock:
            if protection_id in self._in_flight:
                raise ValueError("remove: the exit is being sent right now; wait for its answer")
            self.store.transition(
                protection_id,
                Status.EXIT_FAILED,
                expected=Status.TRIGGERED,
                reason="exit withdrawn by the trader",
            )

    def on_order_update(self, update: OrderUpdate) -> None:
        """Order updates from the feed wake the watch of their exit, or a job looking for a lost one."""
        with self._lock:
            tag_watch = self._tags.get(update.tag) if update.tag else None
            if tag_watch is not None:
                tag_watch.updates[update.order_id] = update
        if tag_watch is not None:
            tag_watch.event.set()
        self.watcher.wake(update.order_id)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._in_flight)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.busy():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def shutdown(self, timeout_ms: int = 10_000) -> None:
        self.runner.wait_done(timeout_ms / 1000)
        if self.stopping.is_set():
            self.watcher.stop(timeout_ms / 1000)

    # ----------------------------------------------------------------- bookkeeping

    def _start(self, protection_id: int, work: Callable[[], bool], key: PositionKey | None = None) -> None:
        self.runner.start(lambda: self._run_task(protection_id, work, key))

    def _run_task(self, protection_id: int, work: Callable[[], bool], key: PositionKey | None = None) -> None:
        """One unit of sending work; catches its own exceptions (nothing dies silently in a pool).
        ``key``: the protection's position when the caller knows it (else it is read)."""
        handed_off = False
        try:
            # One sending job per position at a time: the next one sizes itself on what the last one left
            # (an exit handed to the watcher counts as in flight: positions.exit_share).
            with self._position_lock(protection_id, key):
                handed_off = work()
        except TemporaryError as exc:
            # A follow-up of a watched exit (a refused delivery sale sized again, the rest of a partly
            # filled one) could not reach the broker; the first send's job handles its own. The protection
            # stays as it is: every reconcile resumes an exit in flight, its tag looked up first.
            self._delay_for(protection_id, exc, "a follow-up order of the exit was not sent")
        except AuthError as exc:
            # The same with the token expired (chaos seed 31021: a refused delivery exit's fresh positions
            # read met an expired token and the job "crashed"): it is finished after the next login.
            log.warning("protection %s: exit waits for a new login (%s)", protection_id, exc)
            self.store.journal("exit_waiting_login", protection_id=protection_id, message=str(exc))
            self.events.login_needed(self.store.get(protection_id).account_id)
        except Exception as exc:
            log.exception("protection %s: exit job crashed", protection_id)
            self.events.exit_failed(protection_id, f"internal error: {exc}")
        finally:
            if not handed_off:
                self._job_done(protection_id)

    def _claim(self, protection_id: int) -> bool:
        with self._lock:
            if protection_id in self._in_flight:
                return False
            self._in_flight.add(protection_id)
            return True

    def _position_lock(self, protection_id: int, key: PositionKey | None = None) -> threading.Lock:
        if key is None:
            key = position_key(self.store.get(protection_id))
        with self._lock:
            return self._position_locks.setdefault(key, threading.Lock())

    def _job_done(self, protection_id: int) -> None:
        with self._lock:
            self._in_flight.discard(protection_id)
            for tag in [t for t, owner in self._tag_owner.items() if owner == protection_id]:
                self._tags.pop(tag, None)
                self._tag_owner.pop(tag, None)
            rerun = protection_id in self._rerun
            self._rerun.discard(protection_id)
        self.events.job_finished(protection_id)
        if rerun:
            self._resume_now(protection_id)

    def _resume_now(self, protection_id: int) -> None:
        """Send a waiting (TRIGGERED) exit again: at once, or when the job running for it ends (it may
        have sized itself before what it waited for happened)."""
        with self._lock:
            self._resumes.pop(protection_id, None)
            if self.stopping.is_set():
                return
            if protection_id in self._in_flight:
                self._rerun.add(protection_id)
                return
        if self.store.get(protection_id).status is Status.TRIGGERED:
            self.submit(protection_id, recover=True)

    def _resume_later(self, protection_id: int, delay: float) -> None:
        """Send a waiting exit again ``delay`` seconds from now (the earliest of the times asked for)."""
        due = self._clock() + delay
        with self._lock:
            if self.stopping.is_set():
                return
            pending = self._resumes.get(protection_id)
            if pending is not None:
                if pending[0] <= due:
                    return
                pending[1].cancel()
            timer = threading.Timer(delay, lambda: self._resume_now(protection_id))
            timer.daemon = True
            self._resumes[protection_id] = (due, timer)
        timer.start()

    def _listen_for(self, p: Protection) -> _TagWatch:
        """Collect the stream's updates carrying this exit's tag while its job and watch run."""
        with self._lock:
            watch = self._tags.get(p.exit_tag)
            if watch is None:
                watch = self._tags[p.exit_tag] = _TagWatch()
            self._tag_owner[p.exit_tag] = p.id
            return watch

    # ----------------------------------------------------------------- the jobs (pool threads)

    def _run_job(self, pid: int, recover: bool) -> bool:
        p = self.store.get(pid)
        broker = self.broker_for(p.account_id)
        if broker is None:
            log.warning("protection %s: no connected broker for account %s", pid, p.account_id)
            self.events.login_needed(p.account_id)
            return False
        self._listen_for(p)
        try:
            if p.status is Status.EXITING and p.exit_order_id:
                return self._watch_existing(p, broker)
            if p.status is not Status.TRIGGERED:
                log.info("protection %s: is %s, no exit to send", pid, p.status.value)
                return False
            if recover:
                found = self._exit_orders(p, broker)
                if found:
                    return self._adopt(p, broker, found)
                marker = self._unresolved_marker(pid)
                if pid in self._unconfirmed or marker is not None:
                    # An exit may have gone out (a lost reply, or a crash just after sending) and the book
                    # may not list it yet: look for it over the window before sending anything; what of
                    # the window passed since the previous process's requests ended counts.
                    live = self._read_live(p, broker)
                    already = 0.0 if pid in self._unconfirmed else self._quiet_since(marker)
                    log.info(
                        "protection %s: an exit may be at the broker; looking for it %.1f s more",
                        pid,
                        max(self.policy.lookup_window - already, 0.0),
                    )
                    return self._resolve_ambiguous(
                        p, broker, live, min(self._protected(p), live.quantity), already=already
                    )
            return self._place(p, broker)
        except TemporaryError as exc:
            self._delay_for(pid, exc)
        except AuthError as exc:
            # The exit stays TRIGGERED: the reconciler finishes it after the next login.
            log.warning("protection %s: exit waits for a new login (%s)", pid, exc)
            self.store.journal("exit_waiting_login", protection_id=pid, message=str(exc))
            self.events.login_needed(p.account_id)
        return False

    def _run_gated_job(self, gate: TriggerGate) -> bool:
        p = gate.protection
        broker = self.broker_for(p.account_id)
        if broker is not None:
            self._listen_for(p)
        marker = _Marker()
        try:
            # Worked out while TRIGGERED is being committed: the live quantity (from the position book, no
            # round trip, when it is fresh), the share and the order itself. Nothing is sent before the gate.
            gate.wait_committing()
            live = self._exit_quantity(p, broker) if broker is not None else None
            # (the order down to its request bytes, where the broker can: PreparingBroker)
            prepared = self._prepare(p, live, broker) if live is not None and live.quantity > 0 else None
            if not gate.wait():
                return False  # the trigger was not committed: someone else owns this exit
            marker.pending = True  # the commit carried the "exit_sending" marker
            p = self.store.get(p.id)
            if broker is None or live is None:
                self.events.login_needed(p.account_id)
                return False
            if p.status is not Status.TRIGGERED:
                return False
            return self._place(p, broker, live, prepared=prepared, marker=marker)
        except TemporaryError as exc:
            gate.wait()
            if gate.committed:
                self._delay_for(p.id, exc)
        except AuthError as exc:
            log.warning("protection %s: exit waits for a new login (%s)", p.id, exc)
            if gate.wait() and gate.committed:
                self.store.journal("exit_waiting_login", protection_id=p.id, message=str(exc))
            self.events.login_needed(p.account_id)
        finally:
            if marker.pending:
                # The marker said an exit may be at the broker; none was sent: a later job need not look.
                self.store.journal(
                    "exit_not_sent", protection_id=p.id, message="nothing sent after the trigger"
                )
        return False

    def _prepare(self, p: Protection, live: LiveQuantity, broker: Broker | None = None) -> _Prepared:
        """The exit's share and order; with ``broker`` (a tick's exit, before its gate opens), the order
        is also worked out down to its request, so that only the sending is left once TRIGGERED is on
        disk (a broker that cannot does it all in place_order)."""
        # Live protections first, then the ended ones: a twin that closes in between is counted twice
        # (in flight, then settling: this exit waits), never missed. Only those that may share the
        # position (exit_share narrows them to it): this runs while the feed thread commits TRIGGERED,
        # and every row read here holds the interpreter that commit needs.
        others = self.store.live_like(
            p.account_id, p.product.value, p.side.value, instrument=p.instrument, name=position_name(p)
        )
        settling = self._settling(p, live)
        taken = sum(exit_claim(o) for o in settling)
        share = exit_share(p, others, live.quantity, settling=taken)
        request = self._exit_request(p, share) if share is not None and share > 0 else None
        preparing = as_preparing_broker(broker) if request is not None else None
        if preparing is not None and request is not None:
            preparing.prepare_order(request)
        return _Prepared(share, request, settling)

    def _settling(self, p: Protection, live: LiveQuantity) -> list[Protection]:
        """Twins whose exits filled so recently that ``live`` may not show it (positions.settling_exits)."""
        lag = self.policy.positions_lag
        # Only the rows that may share the position (settling_exits narrows them to it), as _prepare's
        # live_like: this runs twice before a tick's exit leaves, while the feed thread commits TRIGGERED.
        ended = self.store.ended_like(
            p.account_id,
            live.as_of - timedelta(seconds=lag),
            p.product.value,
            p.side.value,
            instrument=p.instrument,
            name=position_name(p),
        )
        return settling_exits(p, ended, live, lag)

    def _wait_for_settling(self, p: Protection, settling: list[Protection], live: int) -> None:
        """This exit waits until a read shows its twins' fills; then it goes on by itself."""
        lag = self.policy.positions_lag
        closed = [o.closed_at for o in settling if o.closed_at is not None]
        shown_at = max(closed, default=self._now()) + timedelta(seconds=lag)
        # Never longer than one lag from now (a wall clock set back must not hold it for long); a little
        # after the moment, so that the read is sent past it.
        delay = min(max((shown_at - self._now()).total_seconds(), 0.0), lag) + 0.05
        log.info(
            "protection %s: the position shows %d, but the exits of %s filled a moment ago and may not show"
            " yet; this exit waits %.1f s for a read that shows them",
            p.id,
            live,
            [o.id for o in settling],
            delay,
        )
        self.store.journal(
            "exit_waiting",
            protection_id=p.id,
            message=f"position {live}; waiting for the fills of {','.join(str(o.id) for o in settling)}"
            " to show",
        )
        self._resume_later(p.id, delay)

    @staticmethod
    def _protected(p: Protection) -> int:
        return p.filled_quantity or p.quantity

    def _sent_since_trigger(self, pid: int) -> bool:
        return self._unresolved_marker(pid) is not None

    def _unresolved_marker(self, pid: int) -> JournalEntry | None:
        """The last "exit_sending" marker since the protection last became TRIGGERED whose outcome is
        unknown (not followed by the broker's refusal or "nothing sent": ``exit_not_sent``), if any."""
        marker: JournalEntry | None = None
        kinds = ["transition", "exit_sending", "exit_not_sent"]
        for event in self.store.events(protection_id=pid, kinds=kinds):
            if event.kind == "exit_sending":
                marker = event
            elif event.kind == "exit_not_sent" or event.new == Status.TRIGGERED.value:
                marker = None
        return marker

    def _quiet_since(self, marker: JournalEntry | None) -> float:
        """Seconds of the lost-order window already behind us for ``marker``'s possible request: since
        the previous process's last request ended, when the marker is that process's (or older) and it
        had none in the air at the end; else 0 (the whole window from now, as after a lost reply)."""
        send_log = self.send_log
        if marker is None or send_log is None or marker.id > send_log.first_event_id:
            return 0.0  # this process's own marker: its request is tracked in-process
        quiet = send_log.seconds_quiet()
        return 0.0 if quiet is None else quiet

    def _live_quantity(self, p: Protection, broker: Broker) -> int:
        return self._read_live(p, broker).quantity

    def _read_live(self, p: Protection, broker: Broker) -> LiveQuantity:
        """A positions read (holdings too for delivery shares), as of when it was sent: the first attempt's
        moment, which is never later than the answer's."""
        as_of = self._now()
        positions = self._call(p, broker.positions, "read positions")
        holdings = self._call(p, broker.holdings, "read holdings") if p.product.value == "CNC" else []
        return LiveQuantity(open_quantity(p, positions, holdings, broker.capabilities), as_of)

    def _exit_quantity(self, p: Protection, broker: Broker) -> LiveQuantity:
        """The live open quantity for a first exit: the book's when it vouches for it, else REST's."""
        live = self._book_live(p)
        if live is not None:
            log.debug("protection %s: sized from the position book: %d", p.id, live.quantity)
            return live
        return self._bounded(p, self._read_live(p, broker))

    def _book_live(self, p: Protection) -> LiveQuantity | None:
        """The position book's figure for ``p`` when it vouches for it and shows every twin's exit that
        filled a moment ago; else None (a positions read)."""
        book = self.book_for(p.account_id)
        if book is None:
            return None
        figure = book.figure(p)
        if figure is None:
            log.info("protection %s: sized by a positions read: %s", p.id, book.why_not(p) or "changed")
            return None
        as_of = self._now() - timedelta(seconds=figure.read_age)
        live = LiveQuantity(figure.quantity, as_of, figure.fills)
        settling = self._settling(p, live)
        if settling:
            # A twin's exit the stream did not count, after the book's last read: the book cannot show
            # it until the next reconcile's read (up to 30 s); a positions read can, a lag after it.
            log.info("protection %s: the book does not show the exits of %s", p.id, [o.id for o in settling])
            return None
        return live

    def _bounded(self, p: Protection, live: LiveQuantity) -> LiveQuantity:
        """A read's quantity, never above what the order stream says when it saw a fill the read may
        still trail (a sale outside the app that positions do not show yet: the exit would flip it)."""
        book = self.book_for(p.account_id)
        bound = book.recent_fills_bound(p) if book is not None else None
        if bound is not None and bound < live.quantity:
            log.warning(
                "protection %s: positions show %d, the order stream %d: exiting the smaller",
                p.id,
                live.quantity,
                bound,
            )
            return live.with_quantity(bound)
        return live

    def _exit_orders(self, p: Protection, broker: Broker) -> list[Order]:
        """Every usable order at the broker carrying the exit tag (a sliced exit has several)."""
        orders = self._call(p, broker.orders, "read the order book")
        return [o for o in orders if o.tag == p.exit_tag and usable_exit(o)]

    def _place(
        self,
        p: Protection,
        broker: Broker,
        live: LiveQuantity | None = None,
        *,
        prepared: _Prepared | None = None,
        marker: _Marker | None = None,
    ) -> bool:
        if live is None:
            live = self._exit_quantity(p, broker)
        if live.quantity <= 0:
            # A positions endpoint may lag a fresh fill: "flat" (no exit sent, the safety stop taken away)
            # only when a second read, some seconds on, agrees. A sale outside the app that the order stream
            # saw is believed over a read that may still trail it: never a flip.
            self._sleep(self.policy.flat_confirm)
            live = self._bounded(p, self._read_live(p, broker))
        # Its share of the position: other protections on it and exits on their way take theirs first.
        if prepared is None or live.quantity <= 0:
            prepared = self._prepare(p, live)
        share = prepared.share
        if share is None:
            if prepared.settling:
                self._wait_for_settling(p, prepared.settling, live.quantity)
                return False  # stays TRIGGERED; a timer sends it again
            log.info(
                "protection %s: exits on their way take the position's %d; this exit waits",
                p.id,
                live.quantity,
            )
            # Stays TRIGGERED: it goes on when those exits fill (_resume_waiting), or at a reconcile.
            return False
        quantity = share
        if self.safety is not None:
            plan = self.safety.prepare_exit(p, broker, max(quantity, 0))
            if plan.blocked:
                self._fail(p.id, plan.blocked)
                return False
            if plan.order_id:
                # The broker-held stop is (or became) the exit: watch it, send nothing.
                reason = SAFETY_STOP_REASON if plan.fired else None
                p = self._to_exiting(p, plan.order_id, quantity if quantity > 0 else None, reason=reason)
                return self._hand_to_watcher(p, broker, [plan.order_id], quantity or self._protected(p))
        if quantity <= 0:
            own = self._own_sale(p, broker)
            if own is not None:
                return self._settle_own_sale(p, broker, *own)
            self.store.transition(p.id, Status.CLOSED, reason="external", price=None)
            log.info("protection %s: position already flat; no exit sent", p.id)
            self.events.closed_externally(p.id)
            return False
        request = prepared.request if prepared.request is not None else self._exit_request(p, quantity)
        ids = self._send(p, broker, request, live.quantity, recheck=True, marker=marker)
        if ids is None:
            return False
        if isinstance(ids, _Watched):
            return True
        if isinstance(ids, _Adopted):
            return self._adopt(p, broker, ids.orders)
        p = self._to_exiting(p, ids[0], quantity)
        return self._hand_to_watcher(p, broker, ids, quantity)

    def _exit_request(self, p: Protection, quantity: int) -> OrderRequest:
        return OrderRequest(
            symbol=p.symbol,
            exchange=p.exchange,
            instrument=p.engine_instrument,
            side=p.side.exit_side,
            quantity=quantity,
            product=p.product,
            order_type=OrderType.MARKET,
            tag=p.exit_tag,
            urgent=True,
        )

    def _send(
        self,
        p: Protection,
        broker: Broker,
        request: OrderRequest,
        live: int,
        *,
        sliced: bool = False,
        recheck: bool = False,
        marker: _Marker | None = None,
    ) -> list[str] | _Adopted | _Watched | None:
        """Place ``request`` with retries: the child order ids, the orders a lost reply left behind
        (``_Adopted``), ``_Watched`` when an order of the protection's own, found after a refusal, is
        watched instead, or None when the protection is left as it is (failed, delayed or held).
        ``recheck``: a refused delivery sale is sized again once on the shares still there."""
        policy = self.policy
        backoff = policy.backoff
        delay = backoff.initial
        unsliced = False  # sent plain again after "needs no slicing": no more switching
        last_error: TemporaryError | None = None
        for attempt in range(1, policy.attempts + 1):
            slicer = as_slicing_broker(broker) if sliced else None
            # Persist before acting: after a crash, this marker says an exit may be at the broker, so
            # the restart looks for it (book lag and all) before sending anything. The first attempt of a
            # tick's exit has it on disk already, committed with TRIGGERED (TriggerGate.commit_events).
            if marker is not None and marker.pending:
                marker.pending = False
            else:
                self.store.journal(
                    "exit_sending",
                    protection_id=p.id,
                    message=f"attempt {attempt}, quantity {request.quantity}{', sliced' if slicer else ''}",
                )
            try:
                ids = self._request(broker, request, slicer)
            except AmbiguousError as exc:
                log.warning("protection %s: exit attempt %d ambiguous (%s)", p.id, attempt, exc)
                book = self.book_for(p.account_id)
                if book is not None:
                    book.suspect(p)
                outcome, found, live_now = self._look_for_lost_exit(p, broker, live)
                if self.stopping.is_set() and outcome is not Ambiguity.ADOPT:
                    self._unconfirmed.add(p.id)
                    log.info(
                        "protection %s: shutting down; the lost exit is looked for at the next start", p.id
                    )
                    return None
                if outcome is Ambiguity.ADOPT:
                    return _Adopted(found)
                if outcome is Ambiguity.HOLD:
                    self._hold(p, "the position shows the exit although no order is listed yet")
                    return None
                if live_now is None or live_now.quantity <= 0:
                    self._hold(p, "the live position could not be read after a lost reply")
                    return None
                # The last resort: nothing anywhere after the whole window, and the position as it was.
                quantity = self._prepare(p, live_now).share or 0
                if quantity <= 0:
                    self._hold(p, "other exits on the position take what is left")
                    return None
                request = replace(request, quantity=quantity)
                live = live_now.quantity
                log.warning("protection %s: exit not found after a lost reply; sending it again", p.id)
                self.store.journal(
                    "exit_resent",
                    protection_id=p.id,
                    message=f"no order with tag {p.exit_tag} after {policy.lookup_window:.0f} s and the "
                    f"position still {live_now.quantity}: sent again (last resort), quantity {quantity}",
                )
                continue  # the look-up already waited
            except TemporaryError as exc:
                log.warning("protection %s: exit attempt %d failed (%s)", p.id, attempt, exc)
                # Not ambiguous: the broker turned it away, nothing is out there.
                self.store.journal("exit_not_sent", protection_id=p.id, message=str(exc)[:200])
                # A 429's Retry-After lengthens the pause, never past max_delay (issue 13 item 10).
                delay = backoff.honour(delay, exc)
                last_error = exc
                if isinstance(exc, UnregisteredIPError) and self._first_ip_refusal(p.id):
                    # The trader must act now (register the IP or set a route), not after every attempt.
                    why = f"the exit was not sent: {exc.alert_text}"
                    log.warning("protection %s: %s; retrying", p.id, why)
                    self.store.journal("exit_delayed", protection_id=p.id, message=why[:200])
                    self.events.exit_delayed(p.id, why)
            except AuthError:
                raise
            except BrokerError as exc:
                self.store.journal("exit_not_sent", protection_id=p.id, message=exc.message[:200])
                if (
                    not sliced
                    and not unsliced
                    and is_freeze_refusal(exc.message)
                    and as_slicing_broker(broker) is not None
                ):
                    # Above the exchange's freeze quantity: the broker slices it (at most 10 slices).
                    log.info("protection %s: exit above the freeze quantity; sending it sliced", p.id)
                    self.store.journal("exit_sliced", protection_id=p.id, message=exc.message[:200])
                    sliced = True
                    continue
                if sliced and not unsliced and is_no_slicing_refusal(exc.message):
                    # The freeze limit that refused the plain order no longer holds: nothing was placed,
                    # so the exit goes plain again, once (a second freeze refusal is then final).
                    log.info("protection %s: exit needs no slicing now; sending it plain", p.id)
                    self.store.journal("exit_unsliced", protection_id=p.id, message=exc.message[:200])
                    sliced, unsliced = False, True
                    continue
                if recheck and _delivery_sale(p) and not sliced:
                    recheck = False  # once: a second refusal of fewer shares is final
                    left = self._resize_after_refusal(p, broker, request.quantity, exc.message)
                    if left is not None and left <= 0:
                        return _Watched() if self._no_shares_left(p, broker) else None
                    if left is not None:
                        request = replace(request, quantity=left)
                        live = left
                        continue
                self._fail(p.id, f"the broker rejected the exit: {exc}")
                return None
            else:
                self._unconfirmed.discard(p.id)
                self._ip_refused.discard(p.id)
                book = self.book_for(p.account_id)
                if book is not None:
                    book.exit_sent(ids, p)
                return ids
            if attempt < policy.attempts:
                if self.stopping.is_set():
                    log.info("protection %s: shutting down; the exit is retried at the next start", p.id)
                    return None
                self._sleep(delay)
                delay = backoff.next(delay)
        why = f"the exit could not be sent after {policy.attempts} attempts"
        if isinstance(last_error, UnregisteredIPError):
            # Alerted at its first refusal already: logged and journalled only, not one alert per job.
            self._delay(p.id, f"{why}: {last_error.alert_text}", alert=False)
        else:
            self._delay(p.id, why)
        return None

    def _request(self, broker: Broker, request: OrderRequest, slicer: SlicingBroker | None) -> list[str]:
        """The exit request itself, bracketed in the send log (for the next start: when it ended)."""
        send_log = self.send_log
        if send_log is not None:
            send_log.sending()
        try:
            if slicer is not None:
                return slicer.place_sliced_order(request)
            return [broker.place_order(request)]
        finally:
            if send_log is not None:
                send_log.ended()

    def _look_for_lost_exit(
        self, p: Protection, broker: Broker, live_before: int, *, already: float = 0.0
    ) -> tuple[Ambiguity, list[Order], LiveQuantity | None]:
        """Look the tag up (book and stream) and re-read the position, with backoff, until decided;
        ``already``: seconds of the window that passed since the request could last have been answered."""
        tag_watch = self._listen_for(p)
        started = self._clock() - max(already, 0.0)
        backoff = self.policy.lookup_backoff
        pause = backoff.initial
        while True:
            try:
                found = self._exit_orders(p, broker)
            except TemporaryError:
                found = []
            if not found:
                found = self._from_stream(p, broker, tag_watch)
            try:
                live_now: LiveQuantity | None = self._read_live(p, broker)
            except TemporaryError:
                live_now = None
            outcome = after_ambiguous(
                found[0] if found else None,
                live_before=live_before,
                live_now=live_now.quantity if live_now is not None else None,
                elapsed=self._clock() - started,
                window=self.policy.lookup_window,
            )
            if outcome is not Ambiguity.KEEP_LOOKING or self.stopping.is_set():
                if outcome is Ambiguity.KEEP_LOOKING:
                    outcome = Ambiguity.HOLD
                log.info("protection %s: after the lost reply: %s", p.id, outcome.value)
                return outcome, found, live_now
            # An update with our tag ends the pause at once.
            tag_watch.event.wait(pause)
            tag_watch.event.clear()
            pause = backoff.next(pause)

    def _from_stream(self, p: Protection, broker: Broker, tag_watch: _TagWatch) -> list[Order]:
        """Orders the update stream reported with our tag, read back one by one (the book may lag)."""
        with self._lock:
            order_ids = list(tag_watch.updates)
        orders: list[Order] = []
        for order_id in order_ids:
            try:
                order = broker.order(order_id)
            except BrokerError:
                continue
            if usable_exit(order):
                orders.append(order)
        return orders

    def _resolve_ambiguous(
        self, p: Protection, broker: Broker, live: LiveQuantity, quantity: int, *, already: float = 0.0
    ) -> bool:
        if quantity <= 0:
            return self._place(p, broker, live)
        outcome, found, _live_now = self._look_for_lost_exit(p, broker, live.quantity, already=already)
        if outcome is Ambiguity.ADOPT:
            return self._adopt(p, broker, found)
        if self.stopping.is_set():
            return False  # looked for again at the next start
        if outcome is Ambiguity.HOLD:
            self._hold(p, "the position shows the exit although no order is listed yet")
            return False
        self._unconfirmed.discard(p.id)
        return self._place(p, broker)

    def _adopt(self, p: Protection, broker: Broker, orders: list[Order]) -> bool:
        """An exit with our tag is already at the broker (after a crash or a lost reply): watch it."""
        latest = latest_with_tag(orders, p.exit_tag) or orders[0]
        log.info("protection %s: exit %s already at the broker (%s)", p.id, latest.order_id, latest.status)
        self._unconfirmed.discard(p.id)
        expected = sum(o.quantity for o in orders)
        p = self._to_exiting(p, orders[0].order_id, expected)
        return self._hand_to_watcher(p, broker, [o.order_id for o in orders], expected, known=orders)

    def _watch_existing(self, p: Protection, broker: Broker) -> bool:
        """An EXITING protection after a restart or a reconnect: watch every child of its exit again."""
        assert p.exit_order_id is not None
        children = {p.exit_order_id: None} | {o.order_id: o for o in self._exit_orders(p, broker)}
        expected = p.exit_quantity or self._protected(p)
        known = [o for o in children.values() if o is not None]
        ours = {e.new for e in self.store.events(protection_id=p.id, kinds=["exit_rest_cancelled"]) if e.new}
        return self._hand_to_watcher(p, broker, list(children), expected, known=known, cancelled=ours)

    def _to_exiting(
        self, p: Protection, order_id: str, quantity: int | None = None, reason: str | None = None
    ) -> Protection:
        try:
            p = self.store.transition(
                p.id,
                Status.EXITING,
                expected=Status.TRIGGERED,
                reason=reason,
                exit_order_id=order_id,
                exit_quantity=quantity,
            )
        except (ConcurrentTransition, IllegalTransition):
            p = self.store.get(p.id)
        self.store.journal("exit_placed", protection_id=p.id, new=order_id, message=f"quantity {quantity}")
        self.events.exit_placed(p.id, order_id)
        return p

    def _hand_to_watcher(
        self,
        p: Protection,
        broker: Broker,
        order_ids: list[str],
        expected: int,
        known: list[Order] | None = None,
        cancelled: set[str] | None = None,
    ) -> bool:
        if self.stopping.is_set():
            log.info("protection %s: shutting down; the exit is finished at the next start", p.id)
            return False
        now = self._clock()
        watch = ExitWatch(
            protection_id=p.id,
            broker=broker,
            expected=expected,
            children={},
            deadline=now + self.policy.fill_timeout,
        )
        watch.add(order_ids, now)
        watch.cancelled_by_us.update(cancelled or ())
        for order in known or []:
            if order.order_id in watch.children:
                watch.children[order.order_id] = order
                watch.last_filled[order.order_id] = order.filled_quantity
        if len(order_ids) > 1:
            self.store.journal(
                "exit_children", protection_id=p.id, message=f"{len(order_ids)} orders: {','.join(order_ids)}"
            )
        self.watcher.watch(watch)
        return True

    # ----------------------------------------------------------------- what the watcher decided

    def _on_watch_step(self, watch: ExitWatch, step: WatchStep) -> None:
        pid = watch.protection_id
        if step.step is Step.CLOSE:
            if self._short_of_protected(pid, step):
                self._check_rest_later(watch, step, self.policy.lookup_window)
                return
            self._close(pid, step)
            self._job_done(pid)
        elif step.step is Step.FAIL:
            if step.refused and not watch.resized and _delivery_sale(self.store.get(pid)):
                self._start(pid, lambda: self._after_delivery_refusal(watch, step))
            else:
                self._fail(pid, step.why)
                self._job_done(pid)
        elif step.step is Step.REPRICE and step.order_id:
            order_id = step.order_id
            self._start(pid, lambda: self._reprice(watch, order_id))
        elif step.step is Step.CANCEL and step.order_id:
            order_id = step.order_id
            self._start(pid, lambda: self._cancel_rest(watch, order_id))
        elif step.step is Step.PLACE_REST:
            self._start(pid, lambda: self._place_rest(watch, step))

    def _on_watch_expired(self, watch: ExitWatch, why: str) -> None:
        log.warning("protection %s: exit %s", watch.protection_id, why)
        self._job_done(watch.protection_id)

    def _close(self, pid: int, step: WatchStep) -> None:
        p = self.store.get(pid)
        price = step.price or None
        self.store.transition(
            pid,
            Status.CLOSED,
            reason=p.reason or "stop",
            exit_price=price,
            exit_quantity=step.quantity or p.exit_quantity,
            price=price,
        )
        log.info("protection %s: exit filled at %.2f", pid, step.price)
        self.events.exit_filled(pid, step.price)
        self._resume_waiting(p)

    # ----------------------------------------------------------------- an exit sized on a read that trailed

    def _short_of_protected(self, pid: int, step: WatchStep) -> bool:
        """The exit filled less than its protection covers, and may top it up (at most MAX_TOP_UPS times).

        An exit is min(protected, live open): when the live quantity came from a read that trailed the
        fills of the position's own entry (found by the chaos run: auto-protect grew a short to 30, a
        lagging read still said 10, the exit bought back 10 and left 20 open and unwatched for a minute),
        the rest of the position would be left naked. So the position is read again once the read can
        show this exit's fill, and what is still open of this protection's part is exited as well.
        """
        p = self.store.get(pid)
        if p.status is not Status.EXITING or not 0 < step.quantity < self._protected(p):
            return False
        done = self.store.events(protection_id=pid, kinds=["exit_topped_up", "exit_short"])
        return sum(e.kind == "exit_topped_up" for e in done) < MAX_TOP_UPS

    @staticmethod
    def _added_since_exit(p: Protection, broker: Broker) -> int:
        """What the trader's own orders added to the position after this exit left: a long's buys (a
        short's sells) whose last update (their fill) is later than the exit's first order, by the broker's
        own clock on both sides. Never the rest of a position the exit's read trailed: those shares were
        there before it left.

        Found by the chaos run (make test, baskets): a basket exited a delivery holding the trader had sold
        part of and was buying back; the exit sold the 2 left, the buy-back of 3 filled after it, and the
        top-up sold those 3 as well: shares bought after the exit, which nobody asked TrailStop to sell.
        The brokers' order times have whole seconds: a fill in the exit's own second counts as before it
        (the top-up's own case, a read trailing a fill just before the crossing), and one of unknown time
        as after; so does every fill when the book does not list this exit (yet), or not when it left.
        By the times, not by the list's order: Kite does not promise GET /orders in time order (Kite forum,
        kite.trade/forum/discussion/comment/51372); its order_timestamp and exchange_update_timestamp
        ("Kite Connect 3.1 - Changes") are "YYYY-MM-DD HH:MM:SS", IST.
        """
        orders = broker.orders()
        sent = [t for o in orders if o.tag == p.exit_tag and (t := o.placed_at or o.updated_at) is not None]
        left_at = min(sent) if sent else None
        delivery = p.product is Product.CNC
        added = 0
        for o in orders:
            if (
                o.side is not p.side
                or o.tag == p.exit_tag
                or o.filled_quantity <= 0
                or o.product is not p.product
            ):
                continue
            if not (
                o.symbol == p.symbol if delivery else same_instrument(p, o.instrument, o.symbol, o.exchange)
            ):
                continue
            filled_at = o.updated_at or o.placed_at
            if filled_at is None or left_at is None or filled_at > left_at:
                added += o.filled_quantity
        return added

    def _check_rest_later(
        self, watch: ExitWatch, step: WatchStep, delay: float, first: int | None = None
    ) -> None:
        """Read the position again ``delay`` seconds on, off the pool (nothing holds a sender meanwhile)."""
        pid = watch.protection_id
        if first is None:
            self.store.journal(
                "exit_short",
                protection_id=pid,
                message=f"filled {step.quantity} of {self._protected(self.store.get(pid))}; the position "
                f"is read again in {delay:.0f} s",
            )

        def check() -> None:
            if not self.stopping.is_set():
                self._start(pid, lambda: self._check_rest(watch, step, first))

        timer = threading.Timer(delay, check)
        timer.daemon = True
        timer.start()

    def _check_rest(self, watch: ExitWatch, step: WatchStep, first: int | None) -> bool:
        """What is left of this protection's part, read once the read shows the exit's fill: exit it, or
        close on what filled. Two reads ``flat_confirm`` apart must both show it (as for a flat position),
        unless the position book, which saw the fill on the stream, vouches for the position."""
        pid = watch.protection_id
        p = self.store.get(pid)
        if p.status is not Status.EXITING:
            return False
        vouched = self._book_live(p)
        try:
            if vouched is not None:
                live = vouched
            elif _delivery_sale(p):
                as_of = self._now()  # a working sale's shares are not ours
                live = LiveQuantity(self._delivery_sellable(p, watch.broker), as_of)
            else:
                live = self._bounded(p, self._read_live(p, watch.broker))
        except TemporaryError as exc:
            log.info("protection %s: reading the position for the rest failed (%s)", pid, exc)
            self._check_rest_later(watch, step, self.policy.flat_confirm, first)
            return True
        # A twin's exit that filled a moment ago takes its quantity until the read shows it (None: the
        # share depends on whether it does; nothing more is sent, as when other exits are on their way).
        share = min(self._protected(p) - step.quantity, self._prepare(p, live).share or 0)
        if share > 0 and vouched is None and first is None:
            self._check_rest_later(watch, step, self.policy.flat_confirm, share)
            return True
        rest = min(share, first) if first is not None and vouched is None else share
        if rest > 0:
            try:
                added = self._added_since_exit(p, watch.broker)
            except TemporaryError as exc:
                log.info("protection %s: reading the orders for the rest failed (%s)", pid, exc)
                self._check_rest_later(watch, step, self.policy.flat_confirm, first)
                return True
            if added > 0:
                log.info("protection %s: %d bought outside since its exit left; not sold", pid, added)
            rest = min(rest, live.quantity - added)
        if rest <= 0:
            self._close(pid, step)
            return False
        expected = step.quantity + rest
        # Persist before acting: after a crash the watch expects the rest (and looks for it by its tag).
        p = self.store.update(
            pid,
            kind="exit_topped_up",
            exit_quantity=expected,
            message=(
                f"filled {step.quantity} of {self._protected(p)}; the position still holds {live.quantity}: "
                f"exiting the rest, {rest}"
            ),
        )
        log.warning(
            "protection %s: exit filled %d, the position still holds %d; exiting %d more",
            pid,
            step.quantity,
            live.quantity,
            rest,
        )
        ids = self._send(p, watch.broker, self._exit_request(p, rest), live.quantity)
        if ids is None or isinstance(ids, _Watched):  # no recheck here: never _Watched
            return False
        if isinstance(ids, _Adopted):
            ids = [o.order_id for o in ids.orders]
        watch.expected = expected
        watch.deadline = self._clock() + self.policy.fill_timeout
        watch.add(list(ids), self._clock())
        self.store.journal("exit_children", protection_id=pid, message=f"rest placed: {','.join(ids)}")
        self.watcher.watch(watch)
        return True

    def _resume_waiting(self, p: Protection) -> None:
        """Exits that waited for this one (their share of the position was in its flight) go on now, not
        at the next reconcile (up to 30 s): until then their broker-held stops stayed live on a position
        that may be flat (found by the chaos run: a short's GTT left on it after its twin's exit). A read
        that may not show this exit's fills yet does not size them: this one is CLOSED a moment ago, so it
        still takes its quantity (positions.settling_exits), and they wait for a read that shows it."""
        key = position_key(p)
        waiting = [
            o.id
            for o in self.store.live(p.account_id)
            if o.id != p.id and o.status is Status.TRIGGERED and position_key(o) == key
        ]
        for pid in waiting:
            self._resume_now(pid)

    def _reprice(self, watch: ExitWatch, order_id: str) -> bool:
        """The rest of a protected exit rests at its old protection price: make it MARKET again."""
        pid = watch.protection_id
        watch.reprices[order_id] = watch.reprices.get(order_id, 0) + 1
        watch.progress_at[order_id] = self._clock()
        try:
            watch.broker.modify_order(order_id, order_type=OrderType.MARKET, urgent=True)
            self.store.journal("exit_repriced", protection_id=pid, new=order_id, message="rest re-priced")
        except (TemporaryError, AuthError) as exc:
            log.info("protection %s: re-pricing exit %s failed (%s)", pid, order_id, exc)
        except BrokerError as exc:
            # Refused (it filled meanwhile, or the modification limit): cancel the rest next.
            log.info("protection %s: re-pricing exit %s refused (%s)", pid, order_id, exc)
            watch.reprices[order_id] = 1_000
        self.watcher.resume(watch)
        return True

    def _cancel_rest(self, watch: ExitWatch, order_id: str) -> bool:
        pid = watch.protection_id
        # Ours from the moment it is asked for (a cancel whose reply is lost still is ours), and on disk
        # first: after a restart the watch must still know it was ours, not the trader's.
        watch.cancelled_by_us.add(order_id)
        watch.progress_at[order_id] = self._clock()
        self.store.journal("exit_rest_cancelled", protection_id=pid, new=order_id)
        try:
            watch.broker.cancel_order(order_id, urgent=True)
        except BrokerError as exc:
            log.info("protection %s: cancelling the rest of exit %s failed (%s)", pid, order_id, exc)
        self.watcher.resume(watch)
        return True

    def _place_rest(self, watch: ExitWatch, step: WatchStep) -> bool:
        """Part of the exit never filled (cancelled rest, or refused above the freeze quantity)."""
        pid = watch.protection_id
        p = self.store.get(pid)
        try:
            live = self._live_quantity(p, watch.broker)
        except TemporaryError as exc:
            log.info("protection %s: reading the position for the rest failed (%s)", pid, exc)
            self.watcher.resume(watch)
            return True
        quantity = min(step.quantity, live)
        if quantity <= 0:
            # The position is flat: what filled is the whole exit.
            self.watcher.forget(pid)
            filled = sum(o.filled_quantity for o in watch.children.values() if o is not None)
            prices = [o for o in watch.children.values() if o is not None and o.filled_quantity]
            average = sum(o.filled_quantity * o.average_price for o in prices) / filled if filled else 0.0
            self._close(pid, WatchStep(Step.CLOSE, quantity=filled, price=average))
            return False
        self.store.journal(
            "exit_rest", protection_id=pid, message=f"placing the rest: {quantity} (live {live})"
        )
        ids = self._send(p, watch.broker, self._exit_request(p, quantity), live, sliced=step.sliced)
        if ids is None or isinstance(ids, _Watched):  # no recheck here: never _Watched
            self.watcher.forget(pid)
            return False
        if isinstance(ids, _Adopted):
            ids = [o.order_id for o in ids.orders]
        watch.add(list(ids), self._clock())
        self.store.journal("exit_children", protection_id=pid, message=f"rest placed: {','.join(ids)}")
        self.watcher.resume(watch)
        return True

    # ----------------------------------------------------------------- refused delivery sales

    def _delivery_available(self, p: Protection, broker: Broker) -> int:
        """After the broker refused a delivery sale: the shares this exit may still sell.

        The refusal usually means the exit was sized on a read that did not show the whole story: the
        trader sold the shares outside TrailStop a moment ago (positions trail a fill), or has a sale of
        them still working (it blocks them, and neither positions nor Kite's holdings show it until it
        fills). So, one ``flat_confirm`` later, positions, holdings and the order book are read again.
        """
        self._sleep(self.policy.flat_confirm)
        available = self._delivery_sellable(p, broker)
        return exit_share(p, self.store.live(p.account_id), available) or 0

    def _delivery_sellable(self, p: Protection, broker: Broker) -> int:
        """The delivery shares of ``p``'s stock a sale may take now: positions and holdings, less what the
        trader's own working sales block (neither positions nor Kite's holdings show those until they fill).
        """
        positions = self._call(p, broker.positions, "read positions")
        holdings = self._call(p, broker.holdings, "read holdings")
        orders = self._call(p, broker.orders, "read the order book")
        shares = delivery_shares(p.instrument, p.symbol, p.exchange, positions, holdings)
        ours = [o.exit_tag for o in self.store.live(p.account_id) if o.exit_tag]
        blocked = blocked_by_working_sales(
            p.instrument, p.symbol, p.exchange, orders, holdings, ignore_tags=ours
        )
        return shares.sellable_besides(broker.capabilities.broker, blocked)

    def _resize_after_refusal(self, p: Protection, broker: Broker, tried: int, why: str) -> int | None:
        """How much to send again after a refused delivery sale: None to fail (the refusal is not about
        the shares: sending the same again would be refused again), 0 when none are left, else fewer."""
        available = self._delivery_available(p, broker)
        quantity = min(tried, available)
        if quantity >= tried:
            return None
        self.store.journal(
            "exit_resized",
            protection_id=p.id,
            message=f"refused ({why[:120]}); {available} shares left to sell, "
            f"{'none sent' if quantity <= 0 else f'sending {quantity}'}",
        )
        log.warning("protection %s: delivery exit of %d refused; %d shares left", p.id, tried, available)
        return quantity

    def _after_delivery_refusal(self, watch: ExitWatch, step: WatchStep) -> bool:
        """A delivery exit the broker refused (REJECTED): sized again once on the shares still there."""
        pid = watch.protection_id
        p = self.store.get(pid)
        watch.resized = True
        quantity = self._resize_after_refusal(p, watch.broker, step.quantity, step.why)
        if quantity is None:
            self._fail(pid, step.why)
            return False
        if quantity <= 0:
            return self._no_shares_left(p, watch.broker, step.filled, step.price)
        ids = self._send(p, watch.broker, self._exit_request(p, quantity), quantity)
        if ids is None or isinstance(ids, _Watched):  # no recheck here: never _Watched
            return False
        if isinstance(ids, _Adopted):
            ids = [o.order_id for o in ids.orders]
        watch.expected = step.filled + quantity
        watch.add(list(ids), self._clock())
        self.store.journal("exit_children", protection_id=pid, message=f"resized: {','.join(ids)}")
        self.watcher.watch(watch)
        return True

    def _no_shares_left(self, p: Protection, broker: Broker, filled: int = 0, price: float = 0.0) -> bool:
        """The shares a refused delivery exit was to sell are gone: what filled is the exit; else an order
        of the protection's own that sold them (:meth:`_own_sale`); with neither, closed outside.
        Returns True when an order of its own still working was handed to the watcher."""
        if filled > 0:
            self._close(p.id, WatchStep(Step.CLOSE, quantity=filled, price=price))
            return False
        own = self._own_sale(p, broker)
        if own is not None:
            return self._settle_own_sale(p, broker, *own)
        self.store.transition(p.id, Status.CLOSED, reason="external", price=None)
        log.info("protection %s: no delivery shares left to sell; closed outside TrailStop", p.id)
        self.events.closed_externally(p.id)
        return False

    # ----------------------------------------------------------------- the protection's own sales

    def _own_sale(self, p: Protection, broker: Broker) -> tuple[list[Order], str] | None:
        """Before "closed outside": the orders of this protection's own that sold (or are selling) its
        position, with the reason they close it with: an earlier send of its exit (its tag), or the order
        its broker-held stop fired into, a stop already taken away too (safety_stop.sold_by_stop).

        Found by make chaos-safety (c80044e, protection 44, Kite CNC with a GTT): the GTT fired unseen just
        before TrailStop deleted it for its own exit; the exit was refused ("Insufficient holdings ...:
        available 0"), the fresh read found no shares left, and the GTT's sale was recorded as a sale
        from outside: wrong journal and P&L, and the stock could be protected and sold again. The broker's
        errors propagate (after the usual retries): "nothing of ours sold" would be a guess.
        """
        sold = [
            o
            for o in self._exit_orders(p, broker)
            if o.status is OrderStatus.COMPLETE or o.filled_quantity > 0 or not o.is_final
        ]
        if sold:
            return sold, p.reason or "stop"
        safety = self.safety
        if safety is None:
            return None
        stop = self._call(p, lambda: safety.sold_by_stop(p, broker), "read the safety stop's orders")
        if stop is not None:
            return [stop], SAFETY_STOP_REASON
        return None

    def _settle_own_sale(self, p: Protection, broker: Broker, orders: list[Order], reason: str) -> bool:
        """The protection's own orders are its exit: closed with their fill when final, else watched
        (True: handed to the watcher)."""
        ids = ", ".join(o.order_id for o in orders)
        self.store.journal(
            "exit_own_sale", protection_id=p.id, message=f"sold by its own order {ids} ({reason})"
        )
        log.warning("protection %s: its position was sold by its own order %s (%s)", p.id, ids, reason)
        total = totals(orders)
        first = orders[0]
        if total.all_final:
            self.store.transition(
                p.id,
                Status.CLOSED,
                reason=reason,
                price=total.average_price or None,
                exit_order_id=first.order_id,
                exit_price=total.average_price or None,
                exit_quantity=total.filled or None,
            )
            log.info("protection %s: exit filled at %.2f", p.id, total.average_price)
            self.events.exit_filled(p.id, total.average_price)
            return False
        expected = sum(o.quantity for o in orders)
        if p.status is Status.TRIGGERED:
            p = self._to_exiting(p, first.order_id, expected, reason=reason)
        else:
            p = self.store.update(
                p.id, kind="exit_adopted", exit_order_id=first.order_id, exit_quantity=expected, reason=reason
            )
        return self._hand_to_watcher(p, broker, [o.order_id for o in orders], expected, known=orders)

    # ----------------------------------------------------------------- outcomes

    def _fail(self, pid: int, why: str) -> None:
        """The broker refused the exit: EXIT_FAILED, an alert, and the trader's retry."""
        try:
            self.store.transition(pid, Status.EXIT_FAILED, reason=why[:200])
        except (ConcurrentTransition, IllegalTransition) as exc:
            log.warning("protection %s: could not record the failure (%s)", pid, exc)
        log.error("protection %s: %s", pid, why)
        self.events.exit_failed(pid, why)

    def _delay(self, pid: int, why: str, *, alert: bool = True) -> None:
        """A temporary failure: the protection stays TRIGGERED and the reconciler sends it again."""
        log.warning("protection %s: exit delayed: %s; the reconciler resumes it", pid, why)
        self.store.journal("exit_delayed", protection_id=pid, message=why[:200])
        if alert:
            self.events.exit_delayed(pid, why)

    def _delay_for(self, pid: int, exc: TemporaryError, what: str = "the exit was not sent") -> None:
        """A job (or its follow-up) ended on a temporary error: delayed, a refusal of the IP named."""
        if isinstance(exc, UnregisteredIPError):
            alert = self._first_ip_refusal(pid)
            self._delay(pid, f"{what}: {exc.alert_text}", alert=alert)
        else:
            self._delay(pid, f"the broker could not be reached: {exc}")

    def _first_ip_refusal(self, pid: int) -> bool:
        """Whether this is the first refusal of this exit for the IP it came from (until it is sent): its
        alert goes out once, not once per attempt or per job (the reconciler resumes it every 30 s)."""
        with self._lock:
            first = pid not in self._ip_refused
            self._ip_refused.add(pid)
        return first

    def _hold(self, p: Protection, why: str) -> None:
        """After a lost reply the exit may have happened: send nothing; the reconciler looks again."""
        self._unconfirmed.add(p.id)
        self.store.journal("exit_unconfirmed", protection_id=p.id, message=why)
        log.warning("protection %s: %s; nothing sent again", p.id, why)
        self.events.exit_delayed(p.id, why)

    def _call(self, p: Protection, fn: Callable[[], T], what: str) -> T:
        """A read with the same retry policy as the exit itself."""

        def retrying(_attempt: int, exc: TemporaryError) -> None:
            log.info("protection %s: %s failed (%s); retrying", p.id, what, exc)

        return call_with_retries(
            fn,
            attempts=self.policy.attempts,
            backoff=self.policy.backoff,
            sleep=self._sleep,
            on_retry=retrying,
        )


def _delivery_sale(p: Protection) -> bool:
    """An exit that sells delivery shares (a CNC long): the broker checks it against the demat."""
    return p.product is Product.CNC and p.side is Side.BUY


@dataclass(frozen=True)
class _Adopted:
    """The orders a lost reply turned out to have placed."""

    orders: list[Order]


@dataclass(frozen=True)
class _Watched:
    """A refused exit's shares were being sold by an order of the protection's own: that one is watched."""
