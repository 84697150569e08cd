"""AccountSession without a network: its state machine, the token's life in the keyring, login's checks,
the order-route check that never raises, and the market protection held to each broker's maximum."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, UPSTOX_CAPABILITIES, SessionInfo
from trailstop_gui.services.brokers.errors import AuthError
from trailstop_gui.services.brokers.feed_loop import FeedState
from trailstop_gui.services.brokers.kite import KiteBroker
from trailstop_gui.services.brokers.order_route import OrderRoute, RouteCheck, RouteKind, RouteState
from trailstop_gui.services.brokers.paper import PaperBroker
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints, SessionState, not_watched_reason


def make_session(
    store: ProtectionStore, broker: str = "kite", *, token: str | None = None, mode: str = "live"
) -> AccountSession:
    account = store.add_account(broker, broker.title(), user_id="AB1234", api_key="key", mode=mode)
    secrets = SecretStore()
    if token is not None:
        secrets.set(account.id, "access_token", token)
    return AccountSession(account, secrets)


class Rest:
    """Stands in for the broker adapter: records what the session asks of it."""

    def __init__(self, broker: str = "kite") -> None:
        self.capabilities = KITE_CAPABILITIES if broker == "kite" else UPSTOX_CAPABILITIES
        self.tokens: list[str | None] = []
        self.market_protection: list[float] = []
        self.exchanged: list[tuple[str, ...]] = []
        self.route_check: RouteCheck | Exception = RouteCheck(RouteState.OK, "fine")
        self.routes: list[tuple[OrderRoute, str | None]] = []

    def set_access_token(self, token: str | None) -> None:
        self.tokens.append(token)

    def set_market_protection(self, percent: float) -> None:
        self.market_protection.append(percent)

    def exchange_token(self, request_token: str, secret: str) -> SessionInfo:
        self.exchanged.append((request_token, secret))
        return SessionInfo(access_token="fresh-token", user_id="AB1234", user_name="A B", broker="kite")

    def exchange_code(self, code: str, secret: str, redirect: str) -> SessionInfo:
        self.exchanged.append((code, secret, redirect))
        return SessionInfo(access_token="fresh-token", user_id="AB1234", user_name="A B", broker="upstox")

    def check_order_route(self) -> RouteCheck:
        if isinstance(self.route_check, Exception):
            raise self.route_check
        return self.route_check

    def set_order_route(self, route: OrderRoute, password: str | None) -> None:
        self.routes.append((route, password))


class Loop:
    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


class Feed:
    def __init__(self) -> None:
        self.loop = Loop()


def test_only_a_live_feed_means_watched() -> None:
    assert not_watched_reason(SessionState.LIVE) is None
    assert not_watched_reason("live") is None
    assert not_watched_reason(SessionState.LOGIN_NEEDED) == "login needed"
    assert not_watched_reason(SessionState.STALE) == "feed down"
    assert not_watched_reason(SessionState.RECONNECTING) == "feed down"
    assert not_watched_reason(SessionState.CONNECTING) == "connecting"
    assert not_watched_reason(SessionState.LOGGED_OUT) == "account offline"
    # A state this build does not know is never taken for a live feed.
    assert not_watched_reason("half-open") == "account offline"


def test_simulator_endpoints_come_from_its_info_line() -> None:
    info = {
        "kite": {"api_root": "http://k", "login_url": "http://k/login", "ws_url": "ws://k/ws"},
        "upstox": {"api_root": "http://u", "order_root": "http://u/hft", "dialog_url": "http://u/dialog"},
    }
    assert Endpoints.for_simulator(info, "kite") == Endpoints(
        api_root="http://k", login_url="http://k/login", ws_url="ws://k/ws"
    )
    assert Endpoints.for_simulator(info, "upstox") == Endpoints(
        api_root="http://u", order_root="http://u/hft", login_url="http://u/dialog"
    )


def test_an_unknown_broker_is_refused_naming_the_field(store: ProtectionStore) -> None:
    account = store.add_account("angel", "Angel One")
    with pytest.raises(ValueError, match="broker: kite or upstox"):
        AccountSession(account, SecretStore())


def test_a_stored_token_survives_a_restart(store: ProtectionStore) -> None:
    fresh = make_session(store)
    assert fresh.state is SessionState.LOGGED_OUT and not fresh.has_token()
    assert fresh.broker_if_ready() is None
    restarted = make_session(store, token="kept-token")
    assert restarted.state is SessionState.CONNECTING
    assert restarted.token() == "kept-token"
    assert restarted.broker_if_ready() is restarted.broker


def test_a_paper_account_sends_orders_to_the_paper_broker_and_reads_from_the_real_one(
    store: ProtectionStore,
) -> None:
    session = make_session(store, mode="paper", token="t")
    assert isinstance(session.rest, KiteBroker)
    assert isinstance(session.broker, PaperBroker)
    assert session.broker_if_ready() is session.broker
    assert session.order_protocol() is None  # paper orders never reach the broker: no order stream


def test_login_needed_forgets_the_token_stops_the_feed_and_is_said_once(
    qtbot: QtBot, store: ProtectionStore
) -> None:
    session = make_session(store, token="old-token")
    rest = Rest()
    session.rest = rest
    feed = Feed()
    session.feed = feed  # type: ignore[assignment]
    states: list[tuple[int, str]] = []
    session.state_changed.connect(lambda account_id, state: states.append((account_id, state)))
    session.mark_login_needed("token expired")
    session.mark_login_needed("and again")
    assert states == [(session.account_id, "login needed")]
    assert session.state is SessionState.LOGIN_NEEDED
    assert session.token() is None and rest.tokens == [None]
    assert feed.loop.stopped == 1
    assert session.broker_if_ready() is None


@pytest.mark.parametrize(
    ("feed_state", "session_state"),
    [
        (FeedState.CONNECTING, SessionState.CONNECTING),
        (FeedState.LIVE, SessionState.LIVE),
        (FeedState.STALE, SessionState.STALE),
        (FeedState.RECONNECTING, SessionState.RECONNECTING),
    ],
)
def test_feed_states_become_session_states(
    qtbot: QtBot, store: ProtectionStore, feed_state: FeedState, session_state: SessionState
) -> None:
    session = make_session(store)
    states: list[str] = []
    session.state_changed.connect(lambda _account_id, state: states.append(state))
    session._on_feed_state(feed_state.value, "")
    session._on_feed_state(feed_state.value, "")  # the same state again is no news
    assert session.state is session_state
    assert states == [session_state.value]


def test_a_stopped_feed_changes_nothing_and_login_needed_sticks(qtbot: QtBot, store: ProtectionStore) -> None:
    session = make_session(store, token="t")
    session.rest = Rest()
    session._on_feed_state(FeedState.LIVE.value, "")
    session._on_feed_state(FeedState.STOPPED.value, "")
    assert session.state is SessionState.LIVE
    session._on_feed_state(FeedState.LOGIN_NEEDED.value, "403 from the ticker")
    assert session.state is SessionState.LOGIN_NEEDED and session.token() is None
    # A late LIVE from the old socket must not revive an account whose token was refused.
    session._on_feed_state(FeedState.LIVE.value, "")
    assert session.state is SessionState.LOGIN_NEEDED


def test_login_without_the_api_secret_names_what_is_missing(qtbot: QtBot, store: ProtectionStore) -> None:
    session = make_session(store)
    rest = Rest()
    session.rest = rest
    with pytest.raises(AuthError, match="API secret is missing"):
        session.complete_login({"request_token": "rt"})
    assert rest.exchanged == [] and session.token() is None
    assert session.state is SessionState.LOGGED_OUT


@pytest.mark.parametrize(("broker", "missing"), [("kite", "request token"), ("upstox", "code")])
def test_a_redirect_without_its_token_is_refused(
    qtbot: QtBot, store: ProtectionStore, broker: str, missing: str
) -> None:
    session = make_session(store, broker)
    session.secrets.set(session.account_id, "api_secret", "s3cret")
    rest = Rest(broker)
    session.rest = rest
    with pytest.raises(AuthError, match=f"no {missing}"):
        session.complete_login({"status": "success"})
    assert rest.exchanged == [] and session.token() is None


@pytest.mark.parametrize(
    ("broker", "params", "exchanged"),
    [
        ("kite", {"request_token": "rt"}, ("rt", "s3cret")),
        ("upstox", {"code": "c0de"}, ("c0de", "s3cret", "")),
    ],
)
def test_a_login_stores_the_token_and_says_so(
    qtbot: QtBot, store: ProtectionStore, broker: str, params: dict[str, str], exchanged: tuple[str, ...]
) -> None:
    session = make_session(store, broker)
    session.secrets.set(session.account_id, "api_secret", "s3cret")
    rest = Rest(broker)
    session.rest = rest
    states: list[str] = []
    session.state_changed.connect(lambda _a, state: states.append(state))
    with qtbot.waitSignal(session.logged_in, timeout=1000) as logged_in:
        info = session.complete_login(params)
    assert info.access_token == "fresh-token"
    assert rest.exchanged == [exchanged]
    assert session.token() == "fresh-token" and rest.tokens == ["fresh-token"]
    assert logged_in.args == [session.account_id]
    assert states == ["connecting"]


@pytest.mark.parametrize(
    ("broker", "asked", "sent"), [("kite", 150, 100), ("upstox", 40, 25), ("upstox", -1, -1)]
)
def test_market_protection_is_held_to_the_brokers_maximum(
    qtbot: QtBot, store: ProtectionStore, broker: str, asked: float, sent: float
) -> None:
    session = make_session(store, broker)
    rest = Rest(broker)
    session.rest = rest
    session.set_market_protection(asked)
    assert rest.market_protection == [sent]


def test_the_order_route_check_never_raises(qtbot: QtBot, store: ProtectionStore) -> None:
    session = make_session(store)
    rest = Rest()
    session.rest = rest
    assert session.check_order_route().state is RouteState.LOGIN_NEEDED  # no token: nothing is sent
    session.secrets.set(session.account_id, "access_token", "t")
    assert session.check_order_route() == RouteCheck(RouteState.OK, "fine")
    rest.route_check = ConnectionResetError("proxy closed the socket")
    check = session.check_order_route()
    assert check.state is RouteState.UNKNOWN and "ConnectionResetError" in check.message
    assert "proxy closed" not in check.message  # only the type: a message may carry the proxy's address


def test_a_paper_account_needs_no_route(qtbot: QtBot, store: ProtectionStore) -> None:
    session = make_session(store, mode="paper")
    rest = Rest()
    session.rest = rest
    rest.route_check = AssertionError("a paper account must not probe the broker")
    assert session.check_order_route().state is RouteState.OK


def test_a_proxy_route_takes_its_password_from_the_keyring(qtbot: QtBot, store: ProtectionStore) -> None:
    session = make_session(store)
    rest = Rest()
    session.rest = rest
    session.secrets.set(session.account_id, "route_password", "pw")
    direct = OrderRoute()
    session.apply_order_route(direct)
    assert rest.routes == [(direct, None)]  # a direct route never reads the password
    proxy = OrderRoute(RouteKind.SOCKS5, "127.0.0.1", 1080, "trader")
    session.apply_order_route(proxy)
    assert rest.routes[-1] == (proxy, "pw")
    assert session.order_route is proxy
