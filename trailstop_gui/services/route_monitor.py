"""Order routes of every account: stored, applied to the sessions, checked at login and on demand.

A route is kept in the database's settings (``order_route.<account id>``; the window and ``--headless``
read the same store) and its proxy password in the keyring. A check exercises an order endpoint
harmlessly (see ``order_route.probe_order_route``): ``check_now`` is a coroutine on the qasync loop
whose blocking probe runs on a pool thread, never on the GUI thread. When a check fails on an account
that has live protections, an urgent alert says so: the window's banner and the tray show it, before
any stop fires into a refusal.

A route can break after its check (the IP changed mid-day, a tunnel died): every real order call tells
what it found (``AccountSession.order_route_answered``). A refusal of the IP marks the route refused at
once, as a failed check would, and starts a re-check; an accepted order call marks it working again.
And while an account has live protections, a proxy route (a tunnel that can die) and a route whose last
check failed (one the trader may have fixed) are checked again every few minutes, before a stop needs them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal, SignalInstance

from trailstop_gui.models.domain import Protection
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.async_calls import BlockingCalls
from trailstop_gui.services.brokers.order_route import (
    OrderRoute,
    RouteCheck,
    RouteKind,
    RouteState,
    RouteValidationError,
    validate_route,
)
from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession

# The route's data and its validation come with the monitor: the accounts dialog edits routes through
# these and never reaches into services/brokers/ (an import-linter contract).
__all__ = [
    "SETTING_PREFIX",
    "OrderRoute",
    "RouteCheck",
    "RouteKind",
    "RouteMonitor",
    "RouteState",
    "RouteValidationError",
    "load_route",
    "route_setting_key",
    "save_route",
    "validate_route",
]

log = logging.getLogger("trailstop.routes")

# At most one re-check per account this often (seconds) for the refusals of real order calls: an exit
# refused for its IP is retried 8 times in some seconds, and again at every reconcile.
RECHECK_GAP = 30.0

# How often a proxy route, or a route whose last check failed, is checked again while its account has
# live protections (milliseconds): an SSH tunnel dies quietly, and a fixed route should turn green.
PERIODIC_CHECK_MS = 5 * 60_000

SETTING_PREFIX = "order_route."


def route_setting_key(account_id: int) -> str:
    return f"{SETTING_PREFIX}{account_id}"


def load_route(store: ProtectionStore, account_id: int) -> OrderRoute:
    return OrderRoute.from_setting(store.settings_repo.get(route_setting_key(account_id)))


def save_route(
    store: ProtectionStore,
    secrets: SecretStore,
    account_id: int,
    route: OrderRoute,
    password: str | None = None,
) -> None:
    """Store ``route``. ``password``: None keeps the stored one, "" forgets it; a direct route forgets it."""
    store.settings_repo.set(route_setting_key(account_id), route.as_setting())
    if route.is_direct or not route.username or password == "":
        secrets.delete(account_id, "route_password")
    elif password:
        secrets.set(account_id, "route_password", password)


class RouteMonitor(QObject):
    """Applies each account's stored route to its session and reports every check."""

    route_checked = Signal(int, object)  # account id, RouteCheck
    # account id: its route failed and works again. The exits a refusal held back wait for the next
    # reconcile (up to 30 s); the runtime reconciles the account at once instead.
    route_restored = Signal(int)

    def __init__(
        self,
        store: ProtectionStore,
        secrets: SecretStore,
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.monotonic,
        periodic_check_ms: int = PERIODIC_CHECK_MS,
    ) -> None:
        super().__init__()
        self.store, self.secrets, self.notifier = store, secrets, notifier
        self.checks: dict[int, RouteCheck] = {}
        self._sessions: dict[int, AccountSession] = {}
        self._lock = threading.Lock()
        self._warned: set[int] = set()  # protections already warned about
        self.calls = BlockingCalls("route-check", workers=2)
        self._clock = clock
        self._checking: set[int] = set()  # accounts whose check is running
        self._check_again: set[int] = set()  # ... and must be checked again once it ends
        self._rechecked: dict[int, float] = {}  # account -> when a refused order call last re-checked it
        self.periodic = QTimer(self)
        self.periodic.setInterval(periodic_check_ms)
        self.periodic.timeout.connect(self.check_due)
        self.periodic.start()

    def attach(self, session: AccountSession) -> None:
        """Apply the stored route now; check it after every login, and now if a stored login is valid."""
        session.apply_order_route(load_route(self.store, session.account_id))
        self._sessions[session.account_id] = session
        session.logged_in.connect(self.check)
        session.order_route_answered.connect(self._on_order_route_answered)
        if session.has_token() and not session.account.is_paper:
            self.check(session.account_id)

    def set_route(self, account_id: int, route: OrderRoute, password: str | None = None) -> None:
        """Store a new route, apply it, and check it if the account is logged in."""
        save_route(self.store, self.secrets, account_id, route, password)
        session = self._sessions.get(account_id)
        if session is not None:
            session.apply_order_route(route)
            if session.has_token():
                self.check(account_id)

    def watch(self, protection_changed: SignalInstance) -> None:
        """Warn about a protection that becomes live on an account whose last check failed."""
        protection_changed.connect(self._on_protection_changed)

    def route(self, account_id: int) -> OrderRoute:
        return load_route(self.store, account_id)

    def check(self, account_id: int) -> None:
        """Start checking an account's route (after a login, a new route); ``route_checked`` reports it."""
        if account_id in self._sessions:
            self.calls.start(self.check_now(account_id))

    async def check_now(self, account_id: int) -> RouteCheck | None:
        """Check an account's route and return the answer (None: no such account); also reported by
        ``route_checked`` and, when it failed with live protections, by an alert."""
        session = self._sessions.get(account_id)
        if session is None:
            return None
        self._checking.add(account_id)
        try:
            check = await self.calls.run(session.check_order_route)
        except Exception as exc:  # the probe maps broker errors itself: this is a defect, said plainly
            log.error("order route check of account %s failed", account_id, exc_info=exc)
            check = RouteCheck(RouteState.UNKNOWN, f"the check failed ({type(exc).__name__})")
        finally:
            self._checking.discard(account_id)
        self._finished(account_id, check)
        if account_id in self._check_again:
            # An order call was refused while this check ran: its answer may predate the refusal.
            self._check_again.discard(account_id)
            self.check(account_id)
        return check

    def check_due(self) -> None:
        """The periodic check: every logged-in account with live protections whose route is a proxy, or
        whose last check failed (the probe runs on a pool thread, as every check's)."""
        for account_id, session in list(self._sessions.items()):
            if session.account.is_paper or not session.has_token() or account_id in self._checking:
                continue
            with self._lock:
                last = self.checks.get(account_id)
            if session.order_route.is_direct and (last is None or not last.failed):
                continue
            if self.store.live(account_id):
                self.check(account_id)

    def wait(self, timeout_ms: int = 30_000) -> bool:
        return self.calls.wait(timeout_ms)

    def shutdown(self) -> None:
        self.periodic.stop()
        self.calls.shutdown()

    def _on_order_route_answered(self, account_id: int, check: RouteCheck) -> None:
        """A real order call's answer (on this object's thread): a refusal of the IP marks the route
        refused now and re-checks it; an accepted call clears a failed state (the route works again)."""
        session = self._sessions.get(account_id)
        if session is None or session.account.is_paper:
            return
        with self._lock:
            last = self.checks.get(account_id)
        if not check.failed:
            if last is not None and last.state is not RouteState.OK:
                log.info("account %s: order route works again: %s", account_id, check.message)
                self._finished(account_id, check)
            return
        if last is None or last.state is not RouteState.REFUSED:
            log.warning("account %s: order route refused mid-session: %s", account_id, check.message)
            self._finished(account_id, check)
        self._recheck(account_id)

    def _recheck(self, account_id: int) -> None:
        """Check the route again after a refused order call, at most once per RECHECK_GAP: at once, or
        when the check running now ends (its probe may have gone out before the refusal)."""
        now = self._clock()
        if now - self._rechecked.get(account_id, -math.inf) < RECHECK_GAP:
            return
        self._rechecked[account_id] = now
        if account_id in self._checking:
            self._check_again.add(account_id)
        else:
            self.check(account_id)

    def _on_protection_changed(self, protection_id: int) -> None:
        try:
            p = self.store.get(protection_id)
        except KeyError:
            return
        check = self.checks.get(p.account_id)
        if check is None or not check.failed or protection_id in self._warned:
            return
        if any(live.id == protection_id for live in self.store.live(p.account_id)):
            self._warn(p.account_id, check, [p])

    def _finished(self, account_id: int, check: RouteCheck) -> None:
        with self._lock:
            previous = self.checks.get(account_id)
            self.checks[account_id] = check
        if not check.failed:
            self._warned -= {p.id for p in self.store.live(account_id)}
        elif live := self.store.live(account_id):
            if previous is not None and previous.state is check.state:
                # The same failure again (the re-check after a refused order, a repeated check): only
                # the protections not yet warned about, not one more urgent alert for the same trouble.
                live = [p for p in live if p.id not in self._warned]
            if live:
                self._warn(account_id, check, live)
        self.route_checked.emit(account_id, check)
        if previous is not None and previous.failed and not check.failed:
            self.route_restored.emit(account_id)

    def _warn(self, account_id: int, check: RouteCheck, live: list[Protection]) -> None:
        self._warned.update(p.id for p in live)
        session = self._sessions.get(account_id)
        label = session.label if session is not None else f"account {account_id}"
        symbols = ", ".join(sorted({p.symbol for p in live}))
        self.notifier.notify(
            Alert(
                AlertKind.ROUTE_FAILED,
                "Order route failed",
                f"{label}: {check.message}. Exits of {len(live)} live protection"
                f"{'s' if len(live) > 1 else ''} ({symbols}) would be refused until it works.",
                account_id=account_id,
            )
        )
