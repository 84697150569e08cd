"""SquareOffService: exits protections at their square-off time (IST) through the same path as a fired stop.

Each check runs on its own one-thread pool (the GUI thread never waits on the broker's calendar): for every
OPEN, unpaused protection with a square-off time (its own, or the MIS setting for MIS protections), on a day
its exchange is open, once the time has come, ``ProtectionService.exit_now`` commits TRIGGERED (reason
"square-off HH:MM") and hands the exit to the executor. The commit is the once-only guard: a second check,
a stop firing at the same moment, or a restart finds the protection TRIGGERED and sends nothing more.

Which days are open: an Upstox account's published sessions (holidays, half days) when one is logged in
(exchange facts, so they hold for a Kite account's protections as well); otherwise weekdays. A calendar
that cannot be read falls back to weekdays too: a missed square-off leaves the broker's own MIS square-off
(with its fee), a square-off on an unannounced holiday is refused by the broker and alerted.
"""

from __future__ import annotations

import logging
import threading
import time as monotonic_time
from collections.abc import Callable
from datetime import date, datetime, time

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from trailstop_gui.models.basket_store import BasketStatus
from trailstop_gui.models.domain import Product, Protection, Status
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.square_off import (
    IST,
    MarketSession,
    format_exit_time,
    parse_exit_time,
    square_off_due,
    to_ist,
    weekday_session,
)
from trailstop_gui.models.store import ConcurrentTransition
from trailstop_gui.models.timed_exit_store import TimedExitStore
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.brokers.calendar import as_calendar_broker
from trailstop_gui.services.brokers.errors import BrokerError
from trailstop_gui.services.logged_task import LoggedTask
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.settings import load_settings

log = logging.getLogger("trailstop.square_off")

CHECK_INTERVAL_MS = 1000
CALENDAR_RETRY_SECONDS = 30.0
# Upstox names F&O segments NFO/BFO as Kite does; a protection's exchange is looked up as it is stored.
FALLBACK_EXCHANGE = {"NFO": "NSE", "BFO": "BSE"}


def _now_ist() -> datetime:
    return datetime.now(IST)


class SquareOffService(QObject):
    """Timed square-off for every account's protections; ``clock`` is injectable for tests."""

    square_off_sent = Signal(int)  # protection id: TRIGGERED committed, exit handed to the executor

    def __init__(
        self,
        service: ProtectionService,
        *,
        clock: Callable[[], datetime] = _now_ist,
        interval_ms: int = CHECK_INTERVAL_MS,
    ) -> None:
        super().__init__()
        self.service = service
        self.store = service.store
        self.times = TimedExitStore(service.store)
        self.clock = clock
        self.mis_time: time | None = self._mis_setting()
        self._calendar: dict[date, dict[str, MarketSession] | None] = {}
        self._calendar_failed_at: dict[date, float] = {}
        self._lock = threading.Lock()
        self.baskets: BasketService | None = None  # baskets with a square-off time, when wired
        # A time the protection is about to get (the --baskets file's, before its next pass stores it):
        # it counts as the protection's own, so that the MIS setting never exits it first.
        self.pending_time: Callable[[Protection], time | None] | None = None
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(1)  # checks never overlap
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.check_soon)

    def _mis_setting(self) -> time | None:
        text = load_settings(self.store).mis_square_off
        return parse_exit_time(text, "MIS square-off time") if text else None

    # ----------------------------------------------------------------- trader actions

    def set_exit_time(self, pid: int, at: time | str | None) -> time | None:
        """Give a protection its own square-off time (HH:MM IST), or None to take it away."""
        p = self.store.get(pid)
        if at is not None and p.status not in (Status.PENDING, Status.OPEN):
            raise ValueError(f"exit time: protection {pid} is {p.status.value}, not live")
        parsed = self.times.set(pid, at)
        self.service.protection_changed.emit(pid)
        return parsed

    def set_mis_default(self, at: time | str | None) -> None:
        """The MIS square-off setting as it is now (the settings dialog saves it; this applies it)."""
        self.mis_time = None if at in (None, "") else parse_exit_time(at, "MIS square-off time")

    def exit_time(self, p: Protection, own: dict[int, time] | None = None) -> time | None:
        """The protection's square-off time: its own (stored, or pending from the rules file), else the MIS
        setting for an MIS protection."""
        mine = own.get(p.id) if own is not None else self.times.get(p.id)
        if mine is None and self.pending_time is not None:
            mine = self.pending_time(p)
        if mine is not None:
            return mine
        return self.mis_time if p.product is Product.MIS else None

    # ----------------------------------------------------------------- running

    def start(self) -> None:
        self._timer.start()
        self.check_soon()

    def shutdown(self) -> None:
        self._timer.stop()
        self.pool.waitForDone(10_000)

    def check_soon(self) -> None:
        """Run one check on the square-off thread (skipped while one is still running)."""
        if self.pool.activeThreadCount() == 0:
            self.pool.start(LoggedTask(self.check_now, "square-off check", log))

    def check_now(self) -> list[int]:
        """Exit every protection whose square-off time has come; returns their ids. Blocking."""
        with self._lock:
            now = to_ist(self.clock())
            own = self.times.all()
            fired: list[int] = []
            # Nothing to do (the usual case: no times, the MIS setting off) reads no protections at all.
            wanted = self.store.protections([Status.OPEN]) if own or self.mis_time is not None else []
            for p in wanted:
                at = self.exit_time(p, own)
                if at is None or p.paused:
                    continue
                if not square_off_due(now, at, self._session(p, now.date())):
                    continue
                try:
                    self.service.exit_now(p.id, reason=f"square-off {format_exit_time(at)}")
                except (ConcurrentTransition, IllegalTransition) as exc:
                    log.info("square-off of %s skipped: %s", p.id, exc)  # a stop fired first
                    continue
                log.info("protection %s: square-off at %s IST", p.id, format_exit_time(at))
                fired.append(p.id)
                self.square_off_sent.emit(p.id)
            if self.baskets is not None:
                self._square_off_baskets(now, self.baskets)
            return fired

    def _square_off_baskets(self, now: datetime, baskets: BasketService) -> None:
        for basket in baskets.baskets.baskets([BasketStatus.ACTIVE]):
            at = basket.square_off
            if at is None:
                continue
            members = [self.store.get(pid) for pid in basket.members]
            exchange = members[0].exchange if members else "NSE"
            if not square_off_due(now, at, self._session_for(exchange, now.date())):
                continue
            if baskets.exit_basket(basket.id, f"square-off {format_exit_time(at)}") is not None:
                log.info("basket %s: square-off at %s IST", basket.id, format_exit_time(at))

    # ----------------------------------------------------------------- the calendar

    def _session(self, p: Protection, day: date) -> MarketSession | None:
        return self._session_for(p.exchange, day)

    def _session_for(self, exchange: str, day: date) -> MarketSession | None:
        sessions = self._published(day)
        if sessions is None:
            return weekday_session(day)
        exchange = exchange.upper()
        if exchange in sessions:
            return sessions[exchange]
        fallback = FALLBACK_EXCHANGE.get(exchange)
        return sessions.get(fallback) if fallback is not None else None

    def _published(self, day: date) -> dict[str, MarketSession] | None:
        """The day's sessions from a broker that publishes them, cached per day; None: none to ask."""
        if day in self._calendar:
            return self._calendar[day]
        failed_at = self._calendar_failed_at.get(day)
        if failed_at is not None and monotonic_time.monotonic() - failed_at < CALENDAR_RETRY_SECONDS:
            return None
        brokers = [session.broker_if_ready() for session in list(self.service.sessions.values())]
        publishers = [b for b in (as_calendar_broker(broker) for broker in brokers) if b is not None]
        if not publishers:
            return None  # not cached: an Upstox login later today brings the calendar
        for broker in publishers:
            try:
                sessions = broker.market_sessions(day)
            except BrokerError as exc:
                log.warning("market timings for %s unreadable (%s); taking weekdays as open", day, exc)
                continue
            self._calendar[day] = sessions
            return sessions
        self._calendar_failed_at[day] = monotonic_time.monotonic()
        return None
