"""Order routes as data, and the brokers' "unregistered IP" refusal mapped to its own error."""

from __future__ import annotations

import pytest
from kiteconnect import exceptions as kex
from upstox_client.rest import ApiException

from trailstop_gui.services.brokers.errors import (
    AuthError,
    RejectedError,
    TemporaryError,
    UnregisteredIPError,
    is_unregistered_ip_refusal,
    map_kite_exception,
    map_upstox_exception,
)
from trailstop_gui.services.brokers.order_route import (
    OrderRoute,
    RouteKind,
    RouteState,
    RouteValidationError,
    parse_route,
    probe_order_route,
    validate_route,
)


@pytest.mark.parametrize(
    "text",
    [
        "IP (2402:e280:3d4a::1) is not allowed",  # the Kite reply quoted in public
        "IP (203.0.113.7) is not allowed",
        "Order requests from unregistered IP (203.0.113.7) are rejected",
        "Request from unregistered IPs will be rejected",
        "Your IP is not whitelisted for order placement",
        "IP address not registered",
    ],
)
def test_refusal_texts_are_recognised(text: str) -> None:
    assert is_unregistered_ip_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Insufficient funds. Required margin is 1200.00",
        "Order not found",
        "Market orders without market protection are not allowed via API.",
        "Trigger price is not allowed to be above LTP",  # a price rule, not an IP
        "SHIP is not allowed",  # a word that merely contains "ip"
    ],
)
def test_other_refusals_are_not_taken_for_an_ip_problem(text: str) -> None:
    assert not is_unregistered_ip_refusal(text)


@pytest.mark.parametrize("kind", [kex.PermissionException, kex.InputException, kex.TokenException])
def test_kite_refusal_is_unregistered_ip_whatever_its_class(kind: type[kex.KiteException]) -> None:
    error = map_kite_exception(kind("IP (203.0.113.7) is not allowed", code=403), order_call=True)
    assert isinstance(error, UnregisteredIPError) and isinstance(error, TemporaryError)
    assert not isinstance(error, AuthError)  # never "log in again" for an IP problem
    assert error.alert_text == "orders from this IP are refused by Zerodha: register it or set an order route"
    assert error.status == 403


def test_kite_read_with_that_text_stays_what_it_was() -> None:
    # Reads are not IP-checked; such a text there is not a route problem.
    error = map_kite_exception(kex.TokenException("IP (1.2.3.4) is not allowed", code=403), order_call=False)
    assert isinstance(error, AuthError)


def test_upstox_refusal_is_unregistered_ip() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = (
        b'{"status": "error", "errors": [{"errorCode": "X", "message": '
        b'"Order requests from unregistered IP (203.0.113.7) are rejected"}]}'
    )
    error = map_upstox_exception(exc, order_call=True)
    assert isinstance(error, UnregisteredIPError)
    assert error.alert_text == "orders from this IP are refused by Upstox: register it or set an order route"
    other = ApiException(status=403, reason="Forbidden")
    other.body = (
        b'{"status": "error", "errors": [{"errorCode": "X", "message": "Not allowed for this segment"}]}'
    )
    assert isinstance(map_upstox_exception(other, order_call=True), RejectedError)


def test_routes_parse_validate_and_describe_without_a_password() -> None:
    assert parse_route("") == parse_route("direct") == OrderRoute()
    socks = parse_route("socks5://127.0.0.1:1080")
    assert (socks.kind, socks.host, socks.port) == (RouteKind.SOCKS5, "127.0.0.1", 1080)
    assert socks.proxy_url() == "socks5h://127.0.0.1:1080"
    http = parse_route("http://trader@vps.example.com:3128")
    assert http.describe() == "HTTP trader@vps.example.com:3128"
    assert http.proxy_url("p@ss:word") == "http://trader:p%40ss%3Aword@vps.example.com:3128"
    assert http.requests_proxies("x") == {"http": http.proxy_url("x"), "https": http.proxy_url("x")}
    assert OrderRoute.from_setting(http.as_setting()) == http
    assert OrderRoute.from_setting({"kind": "socks5", "host": "", "port": 1}) == OrderRoute()
    assert OrderRoute.from_setting("garbage") == OrderRoute()
    v6 = validate_route("socks5", "[::1]", "1080")
    assert v6.proxy_url() == "socks5h://[::1]:1080"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("ftp", "h", 1), "kind"),
        (("socks5", "", 1080), "host"),
        (("socks5", "bad host!", 1080), "host"),
        (("http", "h", 0), "port"),
        (("http", "h", "eighty"), "port"),
        (("http", "h", 70000), "port"),
        (("http", "h", True), "port"),
    ],
)
def test_bad_routes_name_the_field(args: tuple[str, str, object], field: str) -> None:
    with pytest.raises(RouteValidationError) as caught:
        validate_route(*args)
    assert caught.value.field == field


def test_a_password_in_the_url_is_refused_and_not_echoed() -> None:
    with pytest.raises(RouteValidationError) as caught:
        parse_route("http://trader:hunter22@vps:3128")
    assert caught.value.field == "password" and "hunter22" not in str(caught.value)


def test_probe_reads_each_answer() -> None:
    route = parse_route("socks5://127.0.0.1:1080")

    def raising(exc: Exception):  # type: ignore[no-untyped-def]
        def call() -> None:
            raise exc

        return call

    refused = UnregisteredIPError("IP (1.2.3.4) is not allowed", broker="Zerodha")
    assert probe_order_route(raising(refused), "Zerodha", route).state is RouteState.REFUSED
    assert (
        probe_order_route(raising(RejectedError("Order not found")), "Zerodha", route).state is RouteState.OK
    )
    assert (
        probe_order_route(raising(TemporaryError("proxy down")), "Zerodha", route).state
        is RouteState.UNREACHABLE
    )
    assert probe_order_route(raising(AuthError("expired")), "Zerodha", route).state is RouteState.LOGIN_NEEDED
    assert probe_order_route(lambda: None, "Zerodha", route).state is RouteState.UNKNOWN
