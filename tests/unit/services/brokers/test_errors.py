"""Error mapping: every kiteconnect and upstox_client exception, HTTP status and transport failure."""

from __future__ import annotations

import math
import socket
from typing import Any

import pytest
import requests
import urllib3.exceptions as u3
from hypothesis import example, given
from hypothesis import strategies as st
from kiteconnect import exceptions as kex
from upstox_client.rest import ApiException

from trailstop_gui.services.brokers.errors import (
    RETRY_AFTER_CAP,
    AmbiguousError,
    AuthError,
    BrokerError,
    BrokerInputError,
    RateLimitedError,
    RejectedError,
    TemporaryError,
    error_for_status,
    map_kite_exception,
    map_upstox_exception,
    redact,
    retry_after_seconds,
    upstox_error_detail,
)

# ----------------------------------------------------------------------------- the hierarchy


def test_retry_classes() -> None:
    assert issubclass(RateLimitedError, TemporaryError)
    assert issubclass(AmbiguousError, TemporaryError)
    assert TemporaryError("x").retryable and AmbiguousError("x").retryable
    for cls in (AuthError, RejectedError, BrokerInputError, BrokerError):
        assert not cls("x").retryable
    assert not issubclass(AuthError, TemporaryError)
    assert not issubclass(RejectedError, TemporaryError)


def test_broker_error_scrubs_its_own_message() -> None:
    error = TemporaryError('reply {"access_token": "abcdef123456"}', status=502, code="X")
    assert "abcdef123456" not in str(error)
    assert (error.status, error.code) == (502, "X")


# ----------------------------------------------------------------------------- Kite exceptions

KITE_CASES = [
    # (exception, mapped on an order call, mapped on a read)
    (kex.TokenException("Incorrect `api_key` or `access_token`."), AuthError, AuthError),
    (kex.PermissionException("Insufficient permission"), RejectedError, BrokerInputError),
    (kex.InputException("Invalid `tradingsymbol`"), RejectedError, BrokerInputError),
    (kex.OrderException("Insufficient funds"), RejectedError, BrokerInputError),
    (kex.DataException("Bad response from OMS"), AmbiguousError, TemporaryError),
    (kex.NetworkException("OMS unreachable"), AmbiguousError, TemporaryError),
    (kex.GeneralException("Something broke", code=500), AmbiguousError, TemporaryError),
    (kex.GeneralException("Gateway timeout", code=504), AmbiguousError, TemporaryError),
    (kex.GeneralException("Not found", code=404), RejectedError, BrokerInputError),
    (kex.GeneralException("Forbidden", code=403), AuthError, AuthError),
    (kex.GeneralException("Unauthorised", code=401), AuthError, AuthError),
    (kex.KiteException("new kind of error", code=502), AmbiguousError, TemporaryError),
]


@pytest.mark.parametrize(
    ("exc", "on_order", "on_read"), KITE_CASES, ids=lambda v: getattr(v, "__name__", None)
)
def test_kite_exceptions(exc: Exception, on_order: type, on_read: type) -> None:
    order_error = map_kite_exception(exc, order_call=True)
    read_error = map_kite_exception(exc, order_call=False)
    assert type(order_error) is on_order
    assert type(read_error) is on_read
    assert str(exc) in str(order_error)  # the broker's own words survive
    assert order_error.status == exc.code  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "exc_class",
    [kex.GeneralException, kex.NetworkException, kex.InputException, kex.TokenException, kex.OrderException],
)
def test_kite_http_429_is_rate_limited_whatever_the_class(exc_class: type[kex.KiteException]) -> None:
    error = map_kite_exception(exc_class("Too many requests", code=429))
    assert isinstance(error, RateLimitedError)
    assert error.status == 429


def test_kite_order_call_is_the_safe_default() -> None:
    assert type(map_kite_exception(kex.NetworkException("x"))) is AmbiguousError


def test_kite_messages_never_carry_secrets() -> None:
    exc = kex.DataException('Couldn\'t parse: b\'{"access_token": "tok_abcdef", "user": "AB1234"}\' sekret99')
    error = map_kite_exception(exc, secrets=("sekret99", None, ""))
    assert "tok_abcdef" not in str(error)
    assert "sekret99" not in str(error)
    assert "AB1234" in str(error)


def test_broker_errors_pass_through_unchanged() -> None:
    original = RejectedError("already mapped")
    assert map_kite_exception(original) is original
    assert map_upstox_exception(original) is original


def test_unknown_exceptions_become_a_plain_broker_error() -> None:
    for mapper in (map_kite_exception, map_upstox_exception):
        error = mapper(KeyError("order_id"))
        assert type(error) is BrokerError
        assert not error.retryable
        assert "KeyError" in str(error)


# ----------------------------------------------------------------------------- transport exceptions

NO_CONN: Any = None  # the urllib3 exceptions want the connection or pool; the mapping never reads it
REFUSED = u3.NewConnectionError(
    NO_CONN, "Failed to establish a new connection: [Errno 111] Connection refused"
)
RESET = ConnectionResetError(104, "Connection reset by peer")

TRANSPORT_CASES = [
    # (exception, order call, read) -- never sent: Temporary; maybe sent: Ambiguous on an order call
    (requests.exceptions.ConnectTimeout("connect timed out"), TemporaryError, TemporaryError),
    (
        requests.exceptions.ConnectionError(u3.MaxRetryError(NO_CONN, "/orders", REFUSED)),
        TemporaryError,
        TemporaryError,
    ),
    (requests.exceptions.SSLError("handshake failed"), TemporaryError, TemporaryError),
    (requests.exceptions.ProxyError("proxy down"), TemporaryError, TemporaryError),
    (requests.exceptions.ReadTimeout("read timed out"), AmbiguousError, TemporaryError),
    (requests.exceptions.Timeout("timed out"), AmbiguousError, TemporaryError),
    (
        requests.exceptions.ConnectionError(u3.ProtocolError("Connection aborted.", RESET)),
        AmbiguousError,
        TemporaryError,
    ),
    (requests.exceptions.ChunkedEncodingError("broken body"), AmbiguousError, TemporaryError),
    (requests.exceptions.InvalidURL("bad url"), BrokerInputError, BrokerInputError),
    (requests.exceptions.MissingSchema("no scheme"), BrokerInputError, BrokerInputError),
    (u3.MaxRetryError(NO_CONN, "/v2/order/place", REFUSED), TemporaryError, TemporaryError),
    (
        u3.MaxRetryError(NO_CONN, "/x", u3.ConnectTimeoutError("connect timeout")),
        TemporaryError,
        TemporaryError,
    ),
    (
        u3.MaxRetryError(NO_CONN, "/x", u3.ReadTimeoutError(NO_CONN, "/x", "read timed out")),
        AmbiguousError,
        TemporaryError,
    ),
    (u3.ReadTimeoutError(NO_CONN, "/x", "read timed out"), AmbiguousError, TemporaryError),
    (u3.ProtocolError("Connection aborted.", RESET), AmbiguousError, TemporaryError),
    (u3.SSLError("bad certificate"), TemporaryError, TemporaryError),
    (
        u3.NameResolutionError("api.example", NO_CONN, socket.gaierror("no such host")),
        TemporaryError,
        TemporaryError,
    ),
    (ConnectionRefusedError(111, "refused"), TemporaryError, TemporaryError),
    (RESET, AmbiguousError, TemporaryError),
    (TimeoutError("timed out"), AmbiguousError, TemporaryError),
    (BrokenPipeError(32, "broken pipe"), AmbiguousError, TemporaryError),
]


@pytest.mark.parametrize(("exc", "on_order", "on_read"), TRANSPORT_CASES, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("mapper", [map_kite_exception, map_upstox_exception], ids=["kite", "upstox"])
def test_transport_failures(exc: Exception, on_order: type, on_read: type, mapper: object) -> None:
    assert type(mapper(exc, order_call=True)) is on_order  # type: ignore[operator]
    assert type(mapper(exc, order_call=False)) is on_read  # type: ignore[operator]


def _http_error(status: int, headers: dict[str, str] | None = None) -> requests.exceptions.HTTPError:
    response = requests.models.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return requests.exceptions.HTTPError(f"HTTP {status}", response=response)


@pytest.mark.parametrize(
    ("status", "on_order", "on_read"),
    [
        (429, RateLimitedError, RateLimitedError),
        (401, AuthError, AuthError),
        (400, RejectedError, BrokerInputError),
        (404, RejectedError, BrokerInputError),
        (500, AmbiguousError, TemporaryError),
        (502, AmbiguousError, TemporaryError),
        (503, AmbiguousError, TemporaryError),
        (200, AmbiguousError, TemporaryError),  # a 2xx we could not read: it did reach the server
    ],
)
def test_http_status_errors(status: int, on_order: type, on_read: type) -> None:
    assert type(map_kite_exception(_http_error(status), order_call=True)) is on_order
    assert type(map_kite_exception(_http_error(status), order_call=False)) is on_read
    assert type(error_for_status(status, "x", order_call=True)) is on_order


def test_retry_after_is_read_from_the_reply() -> None:
    error = map_kite_exception(_http_error(429, {"Retry-After": "2"}))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 2.0
    assert map_kite_exception(_http_error(429, {"Retry-After": "soon"})).retry_after is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3600", RETRY_AFTER_CAP),  # once held an exit for an hour
        ("1e308", RETRY_AFTER_CAP),
        ("inf", None),  # once raised OverflowError from time.sleep
        ("-inf", None),
        ("nan", None),
        ("-1", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
        ("0", 0.0),
        ("2.5", 2.5),
    ],
)
def test_retry_after_is_capped_and_insane_values_fall_back_to_the_default(
    header: str, seconds: float | None
) -> None:
    kite_error = map_kite_exception(_http_error(429, {"Retry-After": header}))
    upstox_error = map_upstox_exception(_api_exception(429, b"", headers={"Retry-After": header}))
    for error in (kite_error, upstox_error):
        assert isinstance(error, RateLimitedError)
        assert error.retry_after == seconds


def test_a_rate_limited_error_built_anywhere_holds_a_sane_retry_after() -> None:
    assert RateLimitedError("x", retry_after=math.inf).retry_after is None
    assert RateLimitedError("x", retry_after=-3.0).retry_after is None
    assert RateLimitedError("x", retry_after=7200.0).retry_after == RETRY_AFTER_CAP
    assert retry_after_seconds(True) is None and retry_after_seconds(None) is None


# ----------------------------------------------------------------------------- Upstox exceptions


def _api_exception(
    status: int, body: bytes | None = None, reason: str = "Error", headers: dict[str, str] | None = None
) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = body
    exc.headers = headers
    return exc


def _upstox_body(code: str, message: str) -> bytes:
    return (
        b'{"status": "error", "errors": [{"errorCode": "%s", "message": "%s", '
        b'"propertyPath": null, "invalidValue": null}]}' % (code.encode(), message.encode())
    )


UPSTOX_CASES = [
    (401, _upstox_body("UDAPI100050", "Invalid token used to access API"), AuthError, AuthError),
    (400, _upstox_body("UDAPI100016", "Invalid Credentials"), AuthError, AuthError),
    (401, b"", AuthError, AuthError),
    (429, _upstox_body("UDAPI10005", "Too Many Request Sent"), RateLimitedError, RateLimitedError),
    (400, _upstox_body("UDAPI10005", "Too Many Request Sent"), RateLimitedError, RateLimitedError),
    (400, _upstox_body("UDAPI100036", "Invalid Input"), RejectedError, BrokerInputError),
    (404, _upstox_body("UDAPI100010", "Order not found"), RejectedError, BrokerInputError),
    (403, _upstox_body("UDAPI1026", "Forbidden"), RejectedError, BrokerInputError),
    (500, _upstox_body("UDAPI100500", "Something went wrong"), AmbiguousError, TemporaryError),
    (503, b"<html>maintenance</html>", AmbiguousError, TemporaryError),
]


@pytest.mark.parametrize(("status", "body", "on_order", "on_read"), UPSTOX_CASES)
def test_upstox_api_exceptions(status: int, body: bytes, on_order: type, on_read: type) -> None:
    order_error = map_upstox_exception(_api_exception(status, body), order_call=True)
    read_error = map_upstox_exception(_api_exception(status, body), order_call=False)
    assert type(order_error) is on_order
    assert type(read_error) is on_read
    assert order_error.status == status
    code, message = upstox_error_detail(body)
    assert message in str(order_error)
    assert order_error.code == code


def test_upstox_retry_after_header() -> None:
    error = map_upstox_exception(_api_exception(429, b"", headers={"Retry-After": "1.5"}))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 1.5


def test_upstox_status_zero_is_the_sdks_own_wrapper() -> None:
    ssl = map_upstox_exception(ApiException(status=0, reason="SSLError\ncertificate verify failed"))
    assert type(ssl) is TemporaryError
    unbuildable = map_upstox_exception(ApiException(status=0, reason="Cannot prepare a request message"))
    assert type(unbuildable) is BrokerInputError


def test_upstox_model_validation_is_an_input_error() -> None:
    error = map_upstox_exception(ValueError("Invalid value for `product` (X), must be one of ['I', 'D']"))
    assert type(error) is BrokerInputError


def test_upstox_message_never_carries_the_token_or_code() -> None:
    body = _upstox_body("UDAPI100057", "bad code=zz99 for tok_123456")
    error = map_upstox_exception(_api_exception(400, body), order_call=False, secrets=("tok_123456",))
    assert "tok_123456" not in str(error)
    assert "zz99" not in str(error)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_upstox_body("UDAPI1", "boom"), ("UDAPI1", "boom")),
        (b'{"message": "plain"}', (None, "plain")),
        (b"not json", (None, "not json")),
        (None, (None, "")),
        ({"errors": [{"error_code": "X2", "message": "snake"}]}, ("X2", "snake")),
    ],
)
def test_upstox_error_detail(body: object, expected: tuple[str | None, str]) -> None:
    assert upstox_error_detail(body) == expected


# ----------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("Authorization: token kitekey:abcdef123", ["abcdef123"], ["Authorization"]),
        ("Authorization: Bearer eyJ0eXAiOiJKV1Q.payload.sig", ["eyJ0eXAiOiJKV1Q"], ["Bearer"]),
        ('{"access_token": "a1b2c3", "user_id": "AB1234"}', ["a1b2c3"], ["AB1234"]),
        ("https://app/cb?code=xyz789&state=s1", ["xyz789"], ["state=s1"]),
        ("request_token=rt123&checksum=ffee", ["rt123", "ffee"], []),
        ("{'api_secret': 'shh1'}", ["shh1"], []),
        ("client_secret=topsecret", ["topsecret"], []),
        ("Token is invalid or has expired.", [], ["Token is invalid or has expired."]),
        ("Invalid token used to access API", [], ["Invalid token used to access API"]),
        ('"instrument_token": 408065, "errorCode": "UDAPI100050"', [], ["408065", "UDAPI100050"]),
    ],
)
def test_redact(text: str, hidden: list[str], kept: list[str]) -> None:
    result = redact(text)
    for secret in hidden:
        assert secret not in result
    for word in kept:
        assert word in result


@given(
    secret=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=4, max_size=40),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
@example(secret="x***", before="x", after="")  # masking must not splice a new copy together
def test_a_known_secret_never_survives_redaction(secret: str, before: str, after: str) -> None:
    assert secret not in redact(before + secret + after, [secret])
