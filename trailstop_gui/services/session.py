"""One broker account: its endpoints, login state, access token, REST adapter and feed.

The token lives in the keyring (SecretStore) and is read back at start, so a token still valid survives
a restart. When the broker refuses it, the session turns "login needed", its feed stops, and the
protections stay as they are in the database until a new login rebuilds the feed with the new token.
"""

from __future__ import annotations

import enum
import logging
import secrets as random_tokens
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal

from trailstop_gui.models.store import AccountRecord, ProtectionStore
from trailstop_gui.services.brokers.base import Broker, SessionInfo
from trailstop_gui.services.brokers.errors import AuthError
from trailstop_gui.services.brokers.feed_loop import Backoff, FeedProtocol, FeedState, OrderUpdate
from trailstop_gui.services.brokers.form_login import submit_login_form
from trailstop_gui.services.brokers.kite import KiteBroker
from trailstop_gui.services.brokers.kite_feed import KITE_WS_URL, KiteFeed
from trailstop_gui.services.brokers.order_route import (
    OrderRoute,
    RouteCheck,
    RouteState,
    order_call_check,
)
from trailstop_gui.services.brokers.upstox import UpstoxBroker
from trailstop_gui.services.brokers.upstox_feed import UpstoxFeed, UpstoxPortfolioFeed
from trailstop_gui.services.feed_worker import FeedWorker, TriggerHandler, TriggersHandler
from trailstop_gui.services.secrets import SecretStore

log = logging.getLogger("trailstop.session")

# How long a REST call may take before the client gives up (the adapters' default): an order whose answer
# comes later may still have been placed, and the exit looks it up by its tag.
REQUEST_TIMEOUT = 7.0


class SessionState(enum.StrEnum):
    LOGGED_OUT = "logged out"
    CONNECTING = "connecting"
    LIVE = "live"
    STALE = "stale"
    RECONNECTING = "reconnecting"
    LOGIN_NEEDED = "login needed"


# Why an account's protections are not watched right now, in a trader's words (LIVE: they are). Only a live
# feed runs the engine: in every other state no stop trails or fires, whatever the table last showed.
_NOT_WATCHED = {
    SessionState.LOGGED_OUT: "account offline",
    SessionState.CONNECTING: "connecting",
    SessionState.STALE: "feed down",
    SessionState.RECONNECTING: "feed down",
    SessionState.LOGIN_NEEDED: "login needed",
}


def not_watched_reason(state: SessionState | str) -> str | None:
    """Why protections of an account in ``state`` are not watched, or None while its feed is live."""
    try:
        return _NOT_WATCHED.get(SessionState(state))
    except ValueError:
        return "account offline"


@dataclass(frozen=True)
class Endpoints:
    """Where an account's broker lives: the real hosts, or the simulator's."""

    api_root: str | None = None  # None: the SDK's default host
    order_root: str | None = None
    login_url: str | None = None  # Kite's login page, Upstox's authorisation dialog
    ws_url: str | None = None  # Kite's ticker; Upstox's feed URL comes from its authorise call

    @classmethod
    def for_simulator(cls, info: dict[str, Any], broker: str) -> Endpoints:
        """From the simulator's JSON line (or ``GET /_sim/info``)."""
        section = info[broker]
        if broker == "kite":
            return cls(api_root=section["api_root"], login_url=section["login_url"], ws_url=section["ws_url"])
        return cls(
            api_root=section["api_root"], order_root=section["order_root"], login_url=section["dialog_url"]
        )


class AccountSession(QObject):
    """Login state, token, REST adapter and feed of one account."""

    state_changed = Signal(int, str)  # account id, SessionState value
    logged_in = Signal(int)
    # What a real order call (an exit, a safety stop, an entry) found about the route, from any thread:
    # the IP refused, or the call accepted (the route works). The route monitor shows it.
    order_route_answered = Signal(int, object)  # account id, RouteCheck

    def __init__(
        self,
        account: AccountRecord,
        secrets: SecretStore,
        endpoints: Endpoints | None = None,
        *,
        watchdog: float = 5.0,
        backoff: Callable[[], Backoff] = Backoff,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        super().__init__()
        if account.broker not in ("kite", "upstox"):
            raise ValueError(f"broker: kite or upstox, got {account.broker!r}")
        self.account = account
        self.secrets = secrets
        self.endpoints = endpoints or Endpoints()
        self.state = SessionState.LOGGED_OUT
        self.feed: FeedWorker | None = None
        self._watchdog = watchdog
        self._backoff = backoff
        self._request_timeout = request_timeout
        self._lock = threading.Lock()
        token = secrets.get(account.id, "access_token")
        # ``rest`` is the real broker account: login, token, feed. ``broker`` is where orders go: the same
        # account, or, in paper mode, a PaperBroker filling locally at the live feed's prices.
        self.rest: Any = self._make_broker(token)
        self.broker: Any = self._make_paper() if account.is_paper else self.rest
        self.order_route = OrderRoute()
        if token:
            self.state = SessionState.CONNECTING

    @property
    def account_id(self) -> int:
        return self.account.id

    @property
    def label(self) -> str:
        return f"{self.account.label} ({self.account.user_id or self.account.broker})"

    def _make_broker(self, token: str | None) -> Broker:
        e = self.endpoints
        rest: KiteBroker | UpstoxBroker
        timeout = self._request_timeout
        if self.account.broker == "kite":
            rest = KiteBroker(
                self.account.api_key,
                access_token=token,
                root=e.api_root,
                login_uri=e.login_url,
                timeout=timeout,
            )
        else:
            rest = UpstoxBroker(
                self.account.api_key,
                access_token=token,
                api_root=e.api_root,
                order_root=e.order_root,
                dialog_url=e.login_url,
                timeout=timeout,
            )
        rest.order_route_observer = self._on_order_route_answer
        return rest

    def _make_paper(self) -> Broker:
        from trailstop_gui.services.brokers.paper import PaperBroker

        return PaperBroker(
            account=f"account-{self.account.id}",
            quote=self._live_quote,
            price_broker=self.rest,
            feed_capabilities=self.rest.capabilities,
            user_name=f"{self.account.label} (paper)",
        )

    def _live_quote(self, instrument: object) -> tuple[float, float | None, float | None] | None:
        feed = self.feed
        quote = feed.latest_quote(instrument) if feed is not None else None  # type: ignore[arg-type]
        return None if quote is None else (quote.ltp, quote.bid, quote.ask)

    def set_market_protection(self, percent: float) -> None:
        """The trader's market protection for this account's MARKET and SL-M orders (exits included):
        -1 for the broker's automatic value, else a percentage, held to the broker's own maximum
        (Kite 100, Upstox 25)."""
        if percent != -1:
            percent = min(percent, self.rest.capabilities.max_market_protection)
        self.rest.set_market_protection(percent)

    def token(self) -> str | None:
        return self.secrets.get(self.account.id, "access_token")

    def has_token(self) -> bool:
        return bool(self.token())

    def broker_if_ready(self) -> Broker | None:
        """The REST adapter, unless the session needs a login first."""
        return self.broker if self.has_token() and self.state is not SessionState.LOGIN_NEEDED else None

    # ----------------------------------------------------------------- login

    def login_url(self, state: str | None = None) -> str:
        if self.account.broker == "kite":
            return str(self.rest.login_url())
        return str(
            self.rest.authorization_url(self.account.redirect_url, state or random_tokens.token_hex(8))
        )

    def complete_login(self, redirect_params: dict[str, str]) -> SessionInfo:
        """Exchange the redirect's request token (Kite) or code (Upstox) for an access token. Blocking."""
        secret = self.secrets.get(self.account.id, "api_secret")
        if not secret:
            raise AuthError("the API secret is missing: add it in the account settings")
        if self.account.broker == "kite":
            request_token = redirect_params.get("request_token")
            if not request_token:
                raise AuthError("the login redirect carried no request token")
            info: SessionInfo = self.rest.exchange_token(request_token, secret)
        else:
            code = redirect_params.get("code")
            if not code:
                raise AuthError("the login redirect carried no code")
            info = self.rest.exchange_code(code, secret, self.account.redirect_url)
        self.secrets.set(self.account.id, "access_token", info.access_token)
        self.rest.set_access_token(info.access_token)
        log.info("%s: logged in as %s", self.account.label, info.user_id)
        self._set_state(SessionState.CONNECTING)
        self.logged_in.emit(self.account.id)
        return info

    def login_with_password(self, user_id: str, password: str) -> SessionInfo:
        """Submit the broker's login form directly (the simulator's demo user), then exchange. Blocking."""
        params = submit_login_form(self.login_url(), user_id, password)
        return self.complete_login(params)

    def mark_login_needed(self, why: str = "") -> None:
        """The broker refused the token: forget it, stop the feed, keep every protection as it is."""
        with self._lock:
            if self.state is SessionState.LOGIN_NEEDED:
                return
            self.state = SessionState.LOGIN_NEEDED
        log.warning("%s: login needed%s", self.account.label, f" ({why})" if why else "")
        self.secrets.delete(self.account.id, "access_token")
        self.rest.set_access_token(None)
        feed = self.feed
        if feed is not None:
            feed.loop.stop()
        self.state_changed.emit(self.account.id, SessionState.LOGIN_NEEDED.value)

    # ----------------------------------------------------------------- order route

    def apply_order_route(self, route: OrderRoute) -> None:
        """Send this account's order calls through ``route`` (its proxy password from the keyring)."""
        password = None if route.is_direct else self.secrets.get(self.account.id, "route_password")
        self.rest.set_order_route(route, password)
        self.order_route = route
        log.info("%s: order route %s", self.account.label, route.describe())

    def _on_order_route_answer(self, refusal: Any | None) -> None:
        """On the thread that made the order call: a refusal of the IP, or None (the call was accepted)."""
        check = order_call_check(self.rest.display_name, self.order_route, refusal)
        self.order_route_answered.emit(self.account.id, check)

    def check_order_route(self) -> RouteCheck:
        """Exercise an order endpoint harmlessly through the route. Blocking: never on the GUI thread."""
        if self.account.is_paper:
            return RouteCheck(RouteState.OK, "paper trading: orders never leave this machine")
        if not self.has_token() or self.state is SessionState.LOGIN_NEEDED:
            return RouteCheck(RouteState.LOGIN_NEEDED, "log in first to check the order route")
        try:
            check: RouteCheck = self.rest.check_order_route()
        except Exception as exc:  # a probe must never take the caller down
            log.warning("%s: order route check failed: %s", self.account.label, type(exc).__name__)
            return RouteCheck(RouteState.UNKNOWN, f"the check itself failed ({type(exc).__name__})")
        log.info("%s: order route check: %s: %s", self.account.label, check.state.value, check.message)
        return check

    # ----------------------------------------------------------------- feed

    def feed_protocol(self) -> FeedProtocol:
        if self.account.broker == "kite":
            return KiteFeed(self.account.api_key, self.token, self.endpoints.ws_url or KITE_WS_URL)
        return UpstoxFeed(self.token, self.endpoints.api_root or "https://api.upstox.com")

    def order_protocol(self) -> FeedProtocol | None:
        """Upstox pushes order updates on a stream of their own; Kite's come with the ticker's text messages.

        Paper orders never reach the broker, so a paper account has no order stream to listen to.
        """
        if self.account.broker == "kite" or self.account.is_paper:
            return None
        return UpstoxPortfolioFeed(self.token, self.endpoints.api_root or "https://api.upstox.com")

    def start_feed(
        self,
        store: ProtectionStore,
        on_trigger: TriggerHandler,
        on_order_update: Callable[[OrderUpdate], None] | None = None,
        on_connected: Callable[[bool], None] | None = None,
        on_triggers: TriggersHandler | None = None,
    ) -> FeedWorker:
        """Build a new FeedWorker with the current token and start it (the old one, if any, is stopped).

        ``on_connected`` runs on every (re)connect; it is attached before the thread starts, so the first
        connect cannot be missed.
        """
        self.stop_feed()
        feed = FeedWorker(
            self.feed_protocol(),
            store,
            on_trigger,
            on_order_update=on_order_update,
            on_triggers=on_triggers,
            on_tick=getattr(self.broker, "on_tick", None) if self.account.is_paper else None,
            order_protocol=self.order_protocol(),
            watchdog=self._watchdog,
            backoff=self._backoff(),
            name=f"feed-{self.account.id}",
        )
        feed.state_changed.connect(self._on_feed_state)
        if on_connected is not None:
            feed.connected.connect(on_connected)
        self.feed = feed
        feed.start()
        feed.wait_ready()
        return feed

    def stop_feed(self) -> None:
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.stop_feed()

    def _on_feed_state(self, state: str, why: str) -> None:
        feed_state = FeedState(state)
        if feed_state is FeedState.LOGIN_NEEDED:
            self.mark_login_needed(why)
            return
        if feed_state is FeedState.STOPPED:
            return
        mapped = {
            FeedState.CONNECTING: SessionState.CONNECTING,
            FeedState.LIVE: SessionState.LIVE,
            FeedState.STALE: SessionState.STALE,
            FeedState.RECONNECTING: SessionState.RECONNECTING,
        }[feed_state]
        if self.state is SessionState.LOGIN_NEEDED:
            return
        self._set_state(mapped)

    def _set_state(self, state: SessionState) -> None:
        with self._lock:
            changed = state is not self.state
            self.state = state
        if changed:
            self.state_changed.emit(self.account.id, state.value)
