"""UnderlyingService: stops that trail and trigger on another instrument's price (models/underlying.py).

It keeps the rules (table ``underlying_rule``) and gives ProtectionService the engine's view of each
protection (``ProtectionService.engine_view``): every feed arms a protection with a rule on the underlying's
instrument, in the underlying's terms. The trigger, the exit and the reconciler are the ordinary ones: the
fired stop commits TRIGGERED and the executor exits the protection's own instrument (the option).

A protection with a stop on the underlying has no broker-held safety stop: its stop is a price of the
underlying, which an SL-M or GTT on the option cannot hold.
"""

from __future__ import annotations

import logging
import threading
import time

from trailstop_gui.models.domain import InstrumentId, Protection, Side, Status
from trailstop_gui.models.underlying import UnderlyingRule, engine_view, initial_stop
from trailstop_gui.models.underlying_store import UnderlyingStore
from trailstop_gui.services.protection_service import ProtectionService

log = logging.getLogger("trailstop.underlying")

DISARM_WAIT_SECONDS = 2.0


class UnderlyingService:
    """Set a protection's stop on its underlying; the view every feed arms it with."""

    def __init__(self, service: ProtectionService) -> None:
        self.service = service
        self.store = service.store
        self._lock = threading.Lock()
        self.rules = UnderlyingStore()
        self._rules: dict[int, UnderlyingRule] = self.rules.all()
        service.engine_view = self.view

    def rule(self, pid: int) -> UnderlyingRule | None:
        with self._lock:
            return self._rules.get(pid)

    def view(self, p: Protection) -> Protection:
        """What the engine watches for ``p``: ``p`` itself, or ``p`` on its underlying's prices."""
        with self._lock:
            rule = self._rules.get(p.id)
        return p if rule is None else engine_view(p, rule)

    def set_underlying(
        self,
        pid: int,
        *,
        instrument: InstrumentId,
        symbol: str,
        exchange: str,
        view: Side | str,
        tick_size: float,
        reference: float,
    ) -> Protection:
        """Trail and trigger ``pid`` on ``instrument`` from its price ``reference`` with the protection's own
        rule; ``view`` BUY protects against the underlying falling, SELL against it rising.

        Only for a PENDING or OPEN protection without a broker-held safety stop. An OPEN one's stop moves
        to the underlying's terms at once; a PENDING one's (an order just placed, from the order form)
        starts there when its entry fills (``Reconciler.apply_entry_state`` asks ``view``). Nothing is
        sent. Bad input raises ValueError naming the field.
        """
        rule = UnderlyingRule(instrument, symbol, exchange, Side.parse(view, "view"), tick_size, reference)
        p = self.store.get(pid)
        if p.status not in (Status.PENDING, Status.OPEN):
            raise ValueError(f"underlying: protection {pid} is {p.status.value}; only a live one can change")
        if p.safety_enabled:
            raise ValueError(
                "underlying: switch the broker-held safety stop off first (it would hold an option price "
                "while the stop is a price of the underlying)"
            )
        stop = initial_stop(p, rule)  # ValueError names the rule when the stop would be <= 0
        if p.status is Status.PENDING:
            return self._set_before_fill(p, rule, stop)
        paused = p.paused
        if not paused:
            self.service.pause(pid)  # the engine must not trail the option with the underlying's stop
            self._wait_disarmed(p)
        self.store.flush()  # a stop move of the option still pending must land before the new stop
        with self.rules.transaction():
            self.rules.put(pid, rule)
            self.store.update(
                pid,
                kind="underlying_set",
                message=f"trails on {rule.exchange}:{rule.symbol} ({rule.view.value} view) "
                f"from {rule.reference}",
                stop=stop,
                peak=rule.reference,
            )
        with self._lock:
            self._rules[pid] = rule
        log.info("protection %s: trails on %s:%s from %s, stop %s", pid, exchange, symbol, reference, stop)
        if not paused:
            return self.service.resume(pid)
        self.service.protection_changed.emit(pid)
        return self.store.get(pid)

    def _set_before_fill(self, p: Protection, rule: UnderlyingRule, stop: float) -> Protection:
        try:
            self._store_before_fill(p, rule, stop)
        except BaseException:
            with self._lock:
                self._rules.pop(p.id, None)
            raise
        log.info(
            "protection %s: will trail on %s:%s from %s", p.id, rule.exchange, rule.symbol, rule.reference
        )
        self.service.protection_changed.emit(p.id)
        return self.store.get(p.id)

    def _store_before_fill(self, p: Protection, rule: UnderlyingRule, stop: float) -> None:
        with self.rules.transaction():
            fresh = self.store.get(p.id)
            if fresh.status is not Status.PENDING:
                # Filled meanwhile: its stop is already the option's; set it as for any OPEN protection.
                raise ValueError(f"underlying: protection {p.id} filled meanwhile; set the rule again")
            self.rules.put(p.id, rule)
            with self._lock:
                # Inside the transaction: a fill committed right after it already sees the rule.
                self._rules[p.id] = rule
            self.store.journal(
                "underlying_set",
                protection_id=p.id,
                message=f"trails on {rule.exchange}:{rule.symbol} ({rule.view.value} view) from "
                f"{rule.reference} once the entry fills (stop {stop})",
            )

    def _wait_disarmed(self, p: Protection) -> None:
        session = self.service.sessions.get(p.account_id)
        feed = session.feed if session is not None else None
        if feed is None or not feed.isRunning():
            return
        deadline = time.monotonic() + DISARM_WAIT_SECONDS
        while p.id in feed.armed_ids() and time.monotonic() < deadline:
            time.sleep(0.01)
