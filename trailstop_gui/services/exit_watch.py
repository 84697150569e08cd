"""FillWatcher: one thread that watches every accepted exit until it is final, apart from the senders.

A sending thread places an exit and hands it here at once, so that a slow fill never holds a thread an
exit still waiting to be sent needs (issue 13 item 7: four pool threads each waiting up to 60 s for a fill
queued the eighth exit of one tick behind them). Each watch polls its child orders (a sliced exit has
several) every ``poll_interval``, sooner when an order update arrives, and asks
:func:`exit_decisions.next_watch_step` what to do; any step other than waiting goes back to the runner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trailstop_gui.services.brokers.base import Broker, Order
from trailstop_gui.services.brokers.errors import AuthError, BrokerError
from trailstop_gui.services.exit_decisions import Step, WatchStep, next_watch_step

log = logging.getLogger("trailstop.exit")


@dataclass
class ExitWatch:
    """One accepted exit being watched: its protection, its child orders and what is known of them."""

    protection_id: int
    broker: Broker
    expected: int  # the exit's whole quantity, over every child
    children: dict[str, Order | None]  # order id -> latest state read (None: not readable yet)
    deadline: float
    next_poll: float = 0.0
    paused: bool = False  # an action for it (re-price, cancel, the rest) is running in the pool
    progress_at: dict[str, float] = field(default_factory=dict)  # when each child last filled something
    last_filled: dict[str, int] = field(default_factory=dict)
    reprices: dict[str, int] = field(default_factory=dict)
    cancelled_by_us: set[str] = field(default_factory=set)
    resized: bool = False  # a refused delivery sale was sent again once, sized to the shares left

    def add(self, order_ids: list[str], now: float) -> None:
        for order_id in order_ids:
            self.children.setdefault(order_id, None)
            self.progress_at.setdefault(order_id, now)

    def resting_for(self, now: float) -> dict[str, float]:
        return {oid: now - since for oid, since in self.progress_at.items()}


StepHandler = Callable[[ExitWatch, WatchStep], None]
EndHandler = Callable[[ExitWatch, str], None]


class FillWatcher:
    """Polls every watched exit on one thread; ``on_step`` gets each decision other than "wait"."""

    def __init__(
        self,
        on_step: StepHandler,
        on_expired: EndHandler,
        *,
        poll_interval: float,
        rest_timeout: float,
        stopping: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        run_thread: bool = True,
    ) -> None:
        """``run_thread=False``: no thread of its own; the caller polls with :meth:`poll_due` (tests do,
        with an injected ``clock``, so that nothing waits in real time)."""
        self._on_step = on_step
        self._on_expired = on_expired
        self._poll_interval = poll_interval
        self._rest_timeout = rest_timeout
        self._stopping = stopping
        self._clock = clock
        self._cond = threading.Condition()
        self._watches: dict[int, ExitWatch] = {}
        self._thread: threading.Thread | None = None
        self._run_thread = run_thread

    # ----------------------------------------------------------------- any thread

    def watch(self, watch: ExitWatch) -> None:
        with self._cond:
            watch.paused = False
            watch.next_poll = self._clock()
            self._watches[watch.protection_id] = watch
            if self._run_thread and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="exit-fills", daemon=True)
                self._thread.start()
            self._cond.notify()

    def resume(self, watch: ExitWatch) -> None:
        """An action for ``watch`` finished: poll it again now."""
        self.watch(watch)

    def forget(self, protection_id: int) -> None:
        with self._cond:
            self._watches.pop(protection_id, None)

    def wake(self, order_id: str) -> None:
        """An order update arrived: poll the exit it belongs to now, not at its next turn."""
        with self._cond:
            for watch in self._watches.values():
                if order_id in watch.children:
                    watch.next_poll = self._clock()
                    self._cond.notify()

    def watching(self, protection_id: int) -> bool:
        with self._cond:
            return protection_id in self._watches

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ----------------------------------------------------------------- the watcher thread

    def poll_due(self) -> int:
        """Poll every watch that is due now, on the caller's thread; returns how many were."""
        with self._cond:
            due, _wait = self._due()
        for watch in due:
            self._poll_guarded(watch)
        return len(due)

    def _due(self) -> tuple[list[ExitWatch], float]:
        """The watches due now, and how long until the next one is (call with the lock held)."""
        now = self._clock()
        active = [w for w in self._watches.values() if not w.paused]
        due = [w for w in active if w.next_poll <= now]
        return due, min((w.next_poll - now for w in active), default=self._poll_interval * 4)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping.is_set():
                    return
                due, wait = self._due()
                if not due:
                    self._cond.wait(max(wait, 0.001))
                    continue
            for watch in due:
                self._poll_guarded(watch)

    def _poll_guarded(self, watch: ExitWatch) -> None:
        try:
            self._poll(watch)
        except Exception:
            # One exit's odd reply must not end the watching of every other.
            log.exception("protection %s: watching the exit failed", watch.protection_id)
            with self._cond:
                watch.next_poll = self._clock() + self._poll_interval

    def _poll(self, watch: ExitWatch) -> None:
        for order_id, known in list(watch.children.items()):
            if known is not None and known.is_final:
                continue
            try:
                order = watch.broker.order(order_id)
            except (AuthError, BrokerError) as exc:
                # Not readable now (a network error, or not in a lagging book yet): next turn.
                log.debug("protection %s: reading exit %s failed (%s)", watch.protection_id, order_id, exc)
                continue
            watch.children[order_id] = order
            if order.filled_quantity != watch.last_filled.get(order_id, 0):
                watch.last_filled[order_id] = order.filled_quantity
                watch.progress_at[order_id] = self._clock()
        now = self._clock()
        step = next_watch_step(
            watch.children,
            expected=watch.expected,
            resting_for=_resting(watch, now),
            reprices=watch.reprices,
            rest_timeout=self._rest_timeout,
            cancelled_by_us=watch.cancelled_by_us,
        )
        if self._stopping.is_set():
            return
        if step.step is Step.WAIT:
            if now > watch.deadline:
                self.forget(watch.protection_id)
                self._on_expired(watch, "not final in time; the reconciler takes over")
                return
            with self._cond:
                watch.next_poll = now + self._poll_interval
            return
        with self._cond:
            if step.step in (Step.CLOSE, Step.FAIL):
                self._watches.pop(watch.protection_id, None)
            else:
                watch.paused = True
        self._on_step(watch, step)


def _resting(watch: ExitWatch, now: float) -> dict[str, float]:
    """How long each working child has rested: a partly filled one since its last fill; one that has
    filled nothing is given three times as long (a slow exchange is not a stuck order)."""
    resting: dict[str, float] = {}
    for order_id, since in watch.progress_at.items():
        order = watch.children.get(order_id)
        waited = now - since
        resting[order_id] = waited if order is not None and order.filled_quantity > 0 else waited / 3
    return resting
