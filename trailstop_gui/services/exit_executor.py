"""ExitExecutor: idempotent exit orders on a QThreadPool, with retry, tag look-up and fill confirmation.

The path for one protection, already TRIGGERED and committed by whoever decided the exit:

    (recovering? look the tag up first) -> live net quantity -> place MARKET exit with the protection's tag
      -> EXITING (exit order id stored) -> fill seen (order update or polling) -> CLOSED with the exit price

- Temporary errors and 429s are retried with backoff. After an ambiguous failure (timeout, reset) the order
  may be at the broker, so the tag is looked up before anything is sent again.
- The exit quantity is the protection's share of the live open quantity (positions.exit_share: other
  protections on the position and exits already sent take theirs first; one exit job per position at a
  time): an exit never flips a position. A flat position (read twice, some seconds apart: positions lag a
  fresh fill) closes the protection (reason external) without sending anything.
- A permanent rejection ends in EXIT_FAILED with an alert; ``retry`` sends it again on the trader's word.
- With a broker-held safety stop (services/safety_stop.py), the safety manager is asked first: an SL-M
  becomes the exit (modified to MARKET), a GTT is deleted first, and a stop that already fired is the
  exit. Never two exits for one position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from trailstop_gui.models.domain import Protection, Status
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore
from trailstop_gui.services.brokers.base import Broker, Order, OrderRequest, OrderStatus, OrderType
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    AuthError,
    BrokerError,
    RateLimitedError,
    TemporaryError,
)
from trailstop_gui.services.brokers.feed_loop import OrderUpdate
from trailstop_gui.services.positions import PositionKey, exit_share, open_quantity, position_key
from trailstop_gui.services.safety_stop import SAFETY_STOP_REASON, SafetyStopManager

log = logging.getLogger("trailstop.exit")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    initial_delay: float = 0.2
    max_delay: float = 5.0
    fill_timeout: float = 60.0  # how long to watch an accepted exit before handing it to the reconciler
    poll_interval: float = 0.25
    flat_confirm: float = 2.0  # a flat position is read again this much later before it counts as flat


class ExitSignals(QObject):
    """A QRunnable is not a QObject: its reports travel through this one."""

    exit_placed = Signal(int, str)  # protection id, order id
    exit_filled = Signal(int, float)  # protection id, average price
    exit_failed = Signal(int, str)  # protection id, why
    closed_externally = Signal(int)  # protection id: the position was already flat
    login_needed = Signal(int)  # account id: an exit waits for a new login
    job_finished = Signal(int)  # protection id


class TriggerGate:
    """Lets an exit job read the live position while the trigger is still being committed.

    The job may fetch positions at once, but it places nothing until ``open()``: TRIGGERED must be on disk
    first. ``close()`` (the commit failed: another thread got there first) ends the job without an order.
    """

    def __init__(self, protection: Protection) -> None:
        self.protection = protection
        self._event = threading.Event()
        self.committed = False

    def open(self) -> None:
        self.committed = True
        self._event.set()

    def close(self) -> None:
        self._event.set()

    def wait(self, timeout: float = 10.0) -> bool:
        return self._event.wait(timeout) and self.committed


class _ExitJob(QRunnable):
    def __init__(
        self, executor: ExitExecutor, protection_id: int, recover: bool, gate: TriggerGate | None
    ) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self.executor = executor
        self.protection_id = protection_id
        self.recover = recover
        self.gate = gate

    def run(self) -> None:
        # Runnables catch their own exceptions: nothing may die silently in a pool.
        try:
            # One exit job per position at a time: the next one sizes itself on what the last one left.
            with self.executor._position_lock(self.protection_id):
                if self.gate is not None:
                    self.executor._run_gated_job(self.gate)
                else:
                    self.executor._run_job(self.protection_id, self.recover)
        except Exception as exc:
            log.exception("protection %s: exit job crashed", self.protection_id)
            self.executor.signals.exit_failed.emit(self.protection_id, f"internal error: {exc}")
        finally:
            self.executor._job_done(self.protection_id)


class ExitExecutor:
    """Sends exits for TRIGGERED protections, at most one job per protection at a time."""

    def __init__(
        self,
        store: ProtectionStore,
        broker_for: Callable[[int], Broker | None],
        *,
        policy: RetryPolicy | None = None,
        max_threads: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.broker_for = broker_for
        self.policy = policy or RetryPolicy()
        self.signals = ExitSignals()
        self.pool = QThreadPool()
        # Several exits may race a fast market; each is one protection's own job, so order does not matter.
        self.pool.setMaxThreadCount(max_threads)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._position_locks: dict[PositionKey, threading.Lock] = {}
        self._fill_events: dict[str, threading.Event] = {}
        self._updates: dict[str, OrderUpdate] = {}
        # Set at shutdown: jobs stop waiting for fills (the reconciler finishes them at the next start).
        self.stopping = threading.Event()
        # The broker-held safety stops, consulted before every exit (set by the ProtectionService).
        self.safety: SafetyStopManager | None = None

    # ----------------------------------------------------------------- public, any thread

    def submit(self, protection_id: int, *, recover: bool = False) -> bool:
        """Start the exit job of a TRIGGERED (or, with ``recover``, EXITING) protection.

        ``recover`` looks the tag up before placing anything: after a crash or a reconnect the exit may
        already be at the broker. Returns False when a job for it is already running.
        """
        with self._lock:
            if protection_id in self._in_flight:
                return False
            self._in_flight.add(protection_id)
        self.pool.start(_ExitJob(self, protection_id, recover, None))
        return True

    def submit_gated(self, protection: Protection) -> TriggerGate | None:
        """Start the exit of a protection whose TRIGGERED is being committed right now (the tick path).

        The job reads the live position while the caller commits; it places the order only after the
        caller's ``gate.open()``. Returns None when a job for it is already running.
        """
        gate = TriggerGate(protection)
        with self._lock:
            if protection.id in self._in_flight:
                return None
            self._in_flight.add(protection.id)
        self.pool.start(_ExitJob(self, protection.id, False, gate))
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
        """Order updates from the feed wake a job waiting for its fill (any thread)."""
        with self._lock:
            self._updates[update.order_id] = update
            event = self._fill_events.get(update.order_id)
        if event is not None:
            event.set()

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
        self.pool.waitForDone(timeout_ms)

    # ----------------------------------------------------------------- the job (pool thread)

    def _position_lock(self, protection_id: int) -> threading.Lock:
        key = position_key(self.store.get(protection_id))
        with self._lock:
            return self._position_locks.setdefault(key, threading.Lock())

    def _job_done(self, protection_id: int) -> None:
        with self._lock:
            self._in_flight.discard(protection_id)
        self.signals.job_finished.emit(protection_id)

    def _run_job(self, pid: int, recover: bool) -> None:
        p = self.store.get(pid)
        broker = self.broker_for(p.account_id)
        if broker is None:
            log.warning("protection %s: no connected broker for account %s", pid, p.account_id)
            self.signals.login_needed.emit(p.account_id)
            return
        try:
            if p.status is Status.EXITING and p.exit_order_id:
                self._watch_fill(p, broker, p.exit_order_id)
                return
            if p.status is not Status.TRIGGERED:
                log.info("protection %s: is %s, no exit to send", pid, p.status.value)
                return
            if recover and self._adopt_existing(p, broker):
                return
            self._place(p, broker)
        except TemporaryError as exc:
            self._fail(pid, f"the broker could not be reached: {exc}")
        except AuthError as exc:
            # The exit stays TRIGGERED: the reconciler finishes it after the next login.
            log.warning("protection %s: exit waits for a new login (%s)", pid, exc)
            self.store.journal("exit_waiting_login", protection_id=pid, message=str(exc))
            self.signals.login_needed.emit(p.account_id)

    def _run_gated_job(self, gate: TriggerGate) -> None:
        p = gate.protection
        broker = self.broker_for(p.account_id)
        try:
            live = self._live_quantity(p, broker) if broker is not None else None
            if not gate.wait():
                return  # the trigger was not committed: someone else owns this exit
            p = self.store.get(p.id)
            if broker is None or live is None:
                self.signals.login_needed.emit(p.account_id)
                return
            if p.status is not Status.TRIGGERED:
                return
            self._place(p, broker, live)
        except TemporaryError as exc:
            gate.wait()
            if gate.committed:
                self._fail(p.id, f"the broker could not be reached: {exc}")
        except AuthError as exc:
            log.warning("protection %s: exit waits for a new login (%s)", p.id, exc)
            if gate.wait() and gate.committed:
                self.store.journal("exit_waiting_login", protection_id=p.id, message=str(exc))
            self.signals.login_needed.emit(p.account_id)

    def _live_quantity(self, p: Protection, broker: Broker) -> int:
        positions = self._call(p, broker.positions, "read positions")
        holdings = self._call(p, broker.holdings, "read holdings") if p.product.value == "CNC" else []
        return open_quantity(p, positions, holdings, broker.capabilities)

    def _adopt_existing(self, p: Protection, broker: Broker) -> bool:
        """After a crash or an ambiguous failure: is an exit with our tag already at the broker?"""
        existing = self._call(p, lambda: broker.find_order_by_tag(p.exit_tag), "look up the exit tag")
        if existing is None or existing.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
            return False
        log.info(
            "protection %s: exit %s already at the broker (%s)", p.id, existing.order_id, existing.status
        )
        p = self._to_exiting(p, existing.order_id)
        self._watch_fill(p, broker, existing.order_id, known=existing)
        return True

    def _place(self, p: Protection, broker: Broker, live: int | None = None) -> None:
        if live is None:
            live = self._live_quantity(p, broker)
        if live <= 0:
            # A positions endpoint may lag a fresh fill: "flat" (no exit sent, the safety stop taken away)
            # only when a second read, some seconds on, agrees.
            self._sleep(self.policy.flat_confirm)
            live = self._live_quantity(p, broker)
        # Its share of the position: other protections on it and exits on their way take theirs first.
        share = exit_share(p, self.store.live(p.account_id), live)
        if share is None:
            log.info("protection %s: exits on their way take the position's %d; this exit waits", p.id, live)
            return  # stays TRIGGERED: the reconciler resumes it once those exits are settled
        quantity = share
        if self.safety is not None:
            plan = self.safety.prepare_exit(p, broker, max(quantity, 0))
            if plan.blocked:
                self._fail(p.id, plan.blocked)
                return
            if plan.order_id:
                # The broker-held stop is (or became) the exit: watch it, send nothing.
                reason = SAFETY_STOP_REASON if plan.fired else None
                p = self._to_exiting(p, plan.order_id, quantity if quantity > 0 else None, reason=reason)
                self._watch_fill(p, broker, plan.order_id)
                return
        if quantity <= 0:
            self.store.transition(p.id, Status.CLOSED, reason="external", price=None)
            log.info("protection %s: position already flat; no exit sent", p.id)
            self.signals.closed_externally.emit(p.id)
            return
        request = OrderRequest(
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
        policy = self.policy
        delay = policy.initial_delay
        for attempt in range(1, policy.attempts + 1):
            try:
                order_id = broker.place_order(request)
            except AmbiguousError as exc:
                log.warning("protection %s: exit attempt %d ambiguous (%s)", p.id, attempt, exc)
                if self._adopt_existing(p, broker):
                    return
            except TemporaryError as exc:
                log.warning("protection %s: exit attempt %d failed (%s)", p.id, attempt, exc)
                if isinstance(exc, RateLimitedError) and exc.retry_after:
                    # An exit waits at most max_delay, whatever the header asked (issue 13 item 10).
                    delay = min(policy.max_delay, max(delay, exc.retry_after))
            except AuthError:
                raise
            except BrokerError as exc:
                self._fail(p.id, f"the broker rejected the exit: {exc}")
                return
            else:
                p = self._to_exiting(p, order_id, quantity)
                self._watch_fill(p, broker, order_id)
                return
            if attempt < policy.attempts:
                if self.stopping.is_set():
                    log.info("protection %s: shutting down; the exit is retried at the next start", p.id)
                    return
                self._sleep(delay)
                delay = min(policy.max_delay, delay * 2)
        self._fail(p.id, f"the exit could not be sent after {policy.attempts} attempts")

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
        self.signals.exit_placed.emit(p.id, order_id)
        return p

    def _watch_fill(self, p: Protection, broker: Broker, order_id: str, known: Order | None = None) -> None:
        """Wait for the exit to be final: an order update wakes us at once, polling covers a silent feed."""
        event = threading.Event()
        with self._lock:
            self._fill_events[order_id] = event
        try:
            deadline = time.monotonic() + self.policy.fill_timeout
            order = known
            while order is None or not order.is_final:
                if self.stopping.is_set():
                    log.info(
                        "protection %s: shutting down; exit %s is finished at the next start", p.id, order_id
                    )
                    return
                if time.monotonic() > deadline:
                    log.warning(
                        "protection %s: exit %s not final yet; the reconciler takes over", p.id, order_id
                    )
                    return
                event.wait(self.policy.poll_interval)
                event.clear()
                try:
                    order = broker.order(order_id)
                except TemporaryError as exc:
                    log.info("protection %s: reading exit %s failed (%s)", p.id, order_id, exc)
        finally:
            with self._lock:
                self._fill_events.pop(order_id, None)
                self._updates.pop(order_id, None)
        if order.status is OrderStatus.COMPLETE:
            self.store.transition(
                p.id,
                Status.CLOSED,
                reason=p.reason or "stop",
                exit_price=order.average_price or None,
                exit_quantity=order.filled_quantity or p.exit_quantity,
                price=order.average_price,
            )
            log.info("protection %s: exit filled at %.2f", p.id, order.average_price)
            self.signals.exit_filled.emit(p.id, order.average_price)
        else:
            why = order.status_message or order.raw_status
            self._fail(p.id, f"the exit order was {order.status.value.lower()}: {why}")

    def _fail(self, pid: int, why: str) -> None:
        try:
            self.store.transition(pid, Status.EXIT_FAILED, reason=why[:200])
        except (ConcurrentTransition, IllegalTransition) as exc:
            log.warning("protection %s: could not record the failure (%s)", pid, exc)
        log.error("protection %s: %s", pid, why)
        self.signals.exit_failed.emit(pid, why)

    def _call(self, p: Protection, fn: Callable[[], T], what: str) -> T:
        """A read with the same retry policy as the exit itself."""
        delay = self.policy.initial_delay
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return fn()
            except TemporaryError as exc:
                if attempt == self.policy.attempts:
                    raise
                log.info("protection %s: %s failed (%s); retrying", p.id, what, exc)
                self._sleep(delay)
                delay = min(self.policy.max_delay, delay * 2)
        raise AssertionError("unreachable")
