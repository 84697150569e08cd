"""FileRules: the ``--baskets`` file's timed exits and stops on the underlying, applied to every protection of
that account and instrument, those protected later included (``--auto-protect`` adopts positions as they
open).

Each pass runs on its own one-thread pool, never on the event loop's thread: it asks the broker for the
underlying's last price, and setting a stop on the underlying waits for the feed to disarm the protection.
A protection that already has an exit time or a stop on the underlying keeps it (a restart finds both
stored). Something that cannot be applied yet (the underlying not in the instrument list before its daily
download, no price, a broker-held safety stop) is logged once and tried again at the next pass.

A stop on the underlying is set once the protection is OPEN, from the underlying's price then: until that
pass (at most a second), the option trails on its own price.
"""

from __future__ import annotations

import logging
from datetime import time

from PySide6.QtCore import QObject, QThreadPool, QTimer

from trailstop_gui.models.domain import Protection, Status
from trailstop_gui.models.store import AccountRecord
from trailstop_gui.services.basket_file import RulesFile, TimedExitSpec, UnderlyingSpec, find_account
from trailstop_gui.services.brokers.errors import BrokerError
from trailstop_gui.services.instruments import InstrumentService, master_key
from trailstop_gui.services.logged_task import LoggedTask
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService

log = logging.getLogger("trailstop.file_rules")

CHECK_INTERVAL_MS = 1000
INDEX_TICK = 0.05  # an index's master row has no tick size; its stops sit on NSE's usual grid


class FileRules(QObject):
    """Applies a rules file's timed exits and stops on the underlying, now and as protections appear."""

    def __init__(
        self,
        service: ProtectionService,
        rules: RulesFile,
        *,
        square_off: SquareOffService | None,
        underlying: UnderlyingService | None,
        instruments: InstrumentService | None = None,
        interval_ms: int = CHECK_INTERVAL_MS,
    ) -> None:
        super().__init__()
        self.service = service
        self.store = service.store
        self.rules = rules
        self.square_off = square_off
        self.underlying = underlying
        self.instruments = instruments or InstrumentService(service.store)
        self._done: set[tuple[str, int]] = set()  # ("exit" | "underlying", protection id)
        self._told: set[tuple[object, ...]] = set()  # problems logged once
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(1)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.check_soon)
        if square_off is not None:
            square_off.pending_time = self.pending_exit_time

    def check_accounts(self) -> None:
        """Every entry names a loaded account; ValueError (naming it) before anything is applied."""
        accounts = self._accounts()
        for spec in self.rules.timed_exits:
            find_account(spec.account, accounts, f"timed exit {spec.exchange}:{spec.symbol}")
        for rule in self.rules.underlying_rules:
            find_account(rule.account, accounts, f"underlying rule {rule.exchange}:{rule.symbol}")
        if self.rules.underlying_rules and self.underlying is None:
            raise ValueError("underlying_rules: the underlying service is not running")
        if self.rules.timed_exits and self.square_off is None:
            raise ValueError("timed_exits: the square-off service is not running")

    def start(self) -> None:
        for session in list(self.service.sessions.values()):
            if self.rules.underlying_rules and session.has_token():
                self.instruments.ensure(session)  # the underlyings are looked up in the master
        self._timer.start()
        self.check_soon()

    def shutdown(self) -> None:
        self._timer.stop()
        self.pool.waitForDone(10_000)
        self.instruments.wait_for_done(10_000)

    def check_soon(self) -> None:
        if self.pool.activeThreadCount() == 0:
            self.pool.start(LoggedTask(self.apply_now, "applying the rules file", log))

    def apply_now(self) -> list[tuple[str, int]]:
        """One pass; returns what it set, as (kind, protection id). Blocking: not on the event loop."""
        applied: list[tuple[str, int]] = []
        accounts = self._accounts()
        for spec in self.rules.timed_exits:
            for p in self._matching(spec, accounts, (Status.PENDING, Status.OPEN), "exit"):
                if self._set_exit_time(p, spec):
                    applied.append(("exit", p.id))
        for rule in self.rules.underlying_rules:
            for p in self._matching(rule, accounts, (Status.OPEN,), "underlying"):
                if self._set_underlying(p, rule):
                    applied.append(("underlying", p.id))
        return applied

    def pending_exit_time(self, p: Protection) -> time | None:
        """The file's time for a protection its passes have not reached yet (None once they have).

        A protection appears (adopted by --auto-protect) up to a pass before its time is stored; a
        square-off check in between must take this time, not the MIS setting's: with the setting at 15:00
        and the file at 15:25, a position adopted at 15:10 would otherwise be exited at once.
        """
        if ("exit", p.id) in self._done:
            return None  # stored, or found with a time of its own: that (or the trader's change) holds
        accounts = self._accounts()
        for spec in self.rules.timed_exits:
            if (p.exchange.upper(), p.symbol.upper()) != (spec.exchange, spec.symbol):
                continue
            try:
                account = find_account(spec.account, accounts, f"{spec.exchange}:{spec.symbol}")
            except ValueError:
                continue  # told by the pass
            if account.id == p.account_id:
                return spec.at
        return None

    # ----------------------------------------------------------------- each kind

    def _set_exit_time(self, p: Protection, spec: TimedExitSpec) -> bool:
        assert self.square_off is not None
        try:
            if self.square_off.times.get(p.id) is not None:
                return False  # its own time, set before (by the trader, or by this file before a restart)
            self.square_off.set_exit_time(p.id, spec.at)
        finally:
            # Only now: until the time is stored, pending_exit_time answers it for the square-off checks.
            self._done.add(("exit", p.id))
        log.info("protection %s (%s:%s): exits at %s IST (rules file)", p.id, p.exchange, p.symbol, spec.at)
        return True

    def _set_underlying(self, p: Protection, rule: UnderlyingSpec) -> bool:
        assert self.underlying is not None
        if self.underlying.rule(p.id) is not None:
            self._done.add(("underlying", p.id))
            return False
        what = f"protection {p.id} ({p.exchange}:{p.symbol}): stop on {rule.underlying_exchange}:"
        what += rule.underlying_symbol
        if p.safety_enabled:
            self._tell(("safety", p.id), f"{what}: not set, it holds a broker-held safety stop")
            return False
        session = self.service.sessions.get(p.account_id)
        broker = session.broker_if_ready() if session is not None else None
        if session is None or broker is None:
            return False  # not logged in yet: the next pass
        record = self.store.instruments_repo.find(
            master_key(session.account), rule.underlying_exchange, rule.underlying_symbol
        )
        if record is None:
            self.instruments.ensure(session)
            self._tell(("master", p.id), f"{what}: not in the account's instrument list (yet)")
            return False
        key = InstrumentService.quote_key(session.account, record)
        try:
            price = broker.ltp([key]).get(key)
        except BrokerError as exc:
            self._tell(("price", p.id), f"{what}: no price for it yet ({exc})")
            return False
        if price is None or not price > 0:
            self._tell(("price", p.id), f"{what}: no price for it yet")
            return False
        if rule.rule is not None and p.rule != rule.rule:
            self.service.modify_rule(p.id, rule.rule)
        try:
            self.underlying.set_underlying(
                p.id,
                instrument=record.engine_instrument,
                symbol=record.symbol,
                exchange=record.exchange,
                view=rule.view,
                tick_size=record.tick_size if record.tick_size > 0 else INDEX_TICK,
                reference=float(price),
            )
        except (ValueError, KeyError) as exc:
            self._tell(("refused", p.id), f"{what}: refused: {exc}")
            return False
        self._done.add(("underlying", p.id))
        log.info("%s (%s view) from %s (rules file)", what, rule.view.value, price)
        return True

    # ----------------------------------------------------------------- helpers

    def _accounts(self) -> list[AccountRecord]:
        return [session.account for session in list(self.service.sessions.values())]

    def _matching(
        self,
        spec: TimedExitSpec | UnderlyingSpec,
        accounts: list[AccountRecord],
        statuses: tuple[Status, ...],
        kind: str,
    ) -> list[Protection]:
        try:
            account = find_account(spec.account, accounts, f"{spec.exchange}:{spec.symbol}")
        except ValueError as exc:
            self._tell(("account", spec.account), str(exc))
            return []
        return [
            p
            for p in self.store.protections(list(statuses), account.id)
            if (p.exchange.upper(), p.symbol.upper()) == (spec.exchange, spec.symbol)
            and (kind, p.id) not in self._done
        ]

    def _tell(self, key: tuple[object, ...], message: str) -> None:
        if key not in self._told:
            self._told.add(key)
            log.warning("%s", message)
