"""HostEnvironmentSession: the environment's proxies and CA bundle as requests takes them, read once per
host instead of on every request (the exit's own milliseconds); ~/.netrc never replaces the SDK's header."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from trailstop_gui.services.brokers.http_session import HostEnvironmentSession
from trailstop_gui.services.brokers.kite import KiteBroker, _screen_response
from trailstop_gui.services.brokers.order_route import OrderRoute, RouteKind

ORDERS = "https://api.kite.trade/orders/regular"


def settings(session: requests.Session, url: str = ORDERS, proxies: dict[str, str] | None = None) -> object:
    return session.merge_environment_settings(url, dict(proxies or {}), None, True, None)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"HTTPS_PROXY": "http://proxy.local:3128"},
        {"https_proxy": "http://proxy.local:3128", "NO_PROXY": "api.kite.trade"},
        {"HTTPS_PROXY": "http://proxy.local:3128", "NO_PROXY": "other.example"},
        {"REQUESTS_CA_BUNDLE": "/etc/ssl/corp.pem"},
        {"CURL_CA_BUNDLE": "/etc/ssl/curl.pem"},
    ],
)
def test_the_environment_gives_what_requests_gives(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert settings(HostEnvironmentSession()) == settings(requests.Session())
    routed = {"https": "http://route.local:8080"}  # an order route's own proxy comes first, as in requests
    assert settings(HostEnvironmentSession(), proxies=routed) == settings(requests.Session(), proxies=routed)


def test_the_environment_is_read_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    session = HostEnvironmentSession()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    first = settings(session)
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.local:3128")
    assert settings(session, ORDERS.replace("regular", "amo")) == first  # the same host: kept
    assert settings(session, "https://kite.zerodha.com/connect/login")["proxies"] == {  # type: ignore[index]
        "https": "http://elsewhere.local:3128"
    }


def test_netrc_never_replaces_the_sdks_authorization(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.kite.trade login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    request = requests.Request("POST", ORDERS, data={"tag": "TS1"}, headers={"Authorization": "token k:t"})
    assert requests.Session().prepare_request(request).headers["Authorization"].startswith("Basic ")
    assert HostEnvironmentSession().prepare_request(request).headers["Authorization"] == "token k:t"


def test_both_kite_clients_use_it_and_screen_replies() -> None:
    broker = KiteBroker("key", access_token="token", root="http://127.0.0.1:9")
    broker.set_order_route(OrderRoute(RouteKind.HTTP, "proxy.local", 3128))
    for client in (broker._kite, broker._orders):
        assert isinstance(client.reqsession, HostEnvironmentSession)
        assert client.reqsession.hooks["response"] == [_screen_response]
    assert broker._orders is not broker._kite


def test_a_capture_is_no_request_and_its_call_is_sent_only_for_the_same_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What requests would have sent, worked out without going through ``Session.request`` (nothing that
    counts or sends requests sees a capture); sent as prepared only when the SDK asks for the same."""
    session = HostEnvironmentSession()
    through: list[str] = []
    sent: list[requests.PreparedRequest] = []
    original = requests.Session.request

    def counted(self: requests.Session, method: str, url: str, *args: object, **kwargs: object) -> object:
        through.append(url)
        return original(self, method, url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(requests.Session, "request", counted)
    monkeypatch.setattr(session, "send", lambda prepared, **_: sent.append(prepared) or "reply")
    arguments: dict[str, object] = dict(
        data={"quantity": 3, "tag": "TS42"}, headers={"Authorization": "token k:t"}, timeout=7.0, proxies={}
    )
    call = session.capture(lambda: session.request("POST", ORDERS, **arguments))
    assert call is not None and through == [] and sent == []
    reference = requests.Session().prepare_request(
        requests.Request("POST", ORDERS, data=arguments["data"], headers=arguments["headers"])  # type: ignore[arg-type]
    )
    assert (call.prepared.method, call.prepared.url, call.prepared.body) == ("POST", ORDERS, reference.body)
    assert call.prepared.headers == reference.headers
    with session.sending(call):
        assert session.request("POST", ORDERS, **arguments) == "reply"
    assert sent == [call.prepared] and through == []
    with session.sending(call):  # another body: prepared anew, through requests as usual
        session.request("POST", ORDERS, **dict(arguments, data={"quantity": 2, "tag": "TS42"}))
    assert through == [ORDERS] and sent[-1] is not call.prepared
