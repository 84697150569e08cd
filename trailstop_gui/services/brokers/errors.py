"""The project's own broker errors, and the mapping of every SDK and transport exception onto them.

Callers decide what to do from the class alone:

- ``TemporaryError``: retry with backoff. ``RateLimitedError`` is one (slow down first).
  ``AmbiguousError`` is one too, but the order may already be at the broker: look the tag up first.
- ``AuthError``: the session is gone; the user must log in again. Retrying will not help.
- ``RejectedError``: the broker refused the order. Never retried.
- ``BrokerInputError``: we sent something the broker cannot accept (a bug or a bad setting).
- ``UnregisteredIPError``: the broker refused an order call because it did not come from a registered
  static IP. A ``TemporaryError``: nothing was placed, and the same call succeeds once the order route works.

Messages are scrubbed of tokens and secrets: they end up in logs and dialogs.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Iterable
from typing import Any

import requests
import urllib3.exceptions

__all__ = [
    "RETRY_AFTER_CAP",
    "AmbiguousError",
    "AuthError",
    "BrokerError",
    "BrokerInputError",
    "MalformedReplyError",
    "RateLimitedError",
    "RejectedError",
    "TemporaryError",
    "UnregisteredIPError",
    "error_for_status",
    "is_unregistered_ip_refusal",
    "login_error",
    "map_kite_exception",
    "map_upstox_exception",
    "redact",
    "retry_after_seconds",
    "upstox_error_detail",
]


class BrokerError(Exception):
    """Base of every error a broker adapter raises."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(redact(message))
        self.status = status
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class TemporaryError(BrokerError):
    """A network error, timeout or server-side failure: retry with backoff."""

    retryable = True


# The longest a Retry-After may hold anything back. Both brokers' order limits are per second (PROTOCOLS.md,
# "Rate limits"), so a longer wait is a broken header, not advice: a Retry-After of 3600 once held an exit
# for an hour.
RETRY_AFTER_CAP = 10.0


def retry_after_seconds(value: object) -> float | None:
    """A Retry-After value as seconds within [0, RETRY_AFTER_CAP]; None (use the default backoff) when it
    is missing, not a number, negative or not finite. An HTTP-date also falls back to the default."""
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP)


class RateLimitedError(TemporaryError):
    """HTTP 429 or our own limiter said no: wait, then retry.

    ``retry_after`` is always None or a finite number of seconds within [0, RETRY_AFTER_CAP].
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after_seconds(retry_after)


class AmbiguousError(TemporaryError):
    """The request may have reached the broker: look the order up by its tag before sending it again."""


class UnregisteredIPError(TemporaryError):
    """The broker refused an order call because it came from an IP not registered for the account.

    Since 1 April 2026 (SEBI retail-algo rules) Zerodha and Upstox refuse API order placement,
    modification and cancellation (Upstox: GTT too) from any other IP; reads still work from anywhere.
    Nothing reached the exchange, so it is temporary: the exit stays TRIGGERED and is sent again once the
    account's order route works. ``broker`` is the trader's name for it ("Zerodha", "Upstox").
    """

    def __init__(
        self, message: str, *, broker: str, status: int | None = None, code: str | None = None
    ) -> None:
        # The trader's words first: every log line and alert that shows this error says what to do.
        super().__init__(f"{unregistered_ip_alert(broker)} ({message})", status=status, code=code)
        self.broker = broker

    @property
    def alert_text(self) -> str:
        return unregistered_ip_alert(self.broker)


def unregistered_ip_alert(broker: str) -> str:
    return f"orders from this IP are refused by {broker}: register it or set an order route"


class MalformedReplyError(TemporaryError):
    """A reply we cannot read (a null list, a missing field, text where a number belongs): ask again.

    Never read as empty or zero: ``{"net": null}`` read as "no positions" once closed live protections as
    "closed outside".
    """


class AuthError(BrokerError):
    """Token expired or invalid, or the login itself failed: the user must log in again."""


class RejectedError(BrokerError):
    """The broker refused the order (margin, price band, quantity, ...). Never retried."""


class BrokerInputError(BrokerError):
    """A request the broker cannot accept, found by us or by the broker. Never retried."""


# ----------------------------------------------------------------------------- redaction

_SECRET_KEYS = (
    "access_token|request_token|refresh_token|public_token|extended_token|enctoken|api_secret|"
    "client_secret|checksum|code|password|token"
)
# key=value, key: value, "key": "value" (query strings, form bodies, JSON, repr of dicts).
_KEY_VALUE = re.compile(
    rf"(?i)(?<![A-Za-z0-9_])([\"']?(?:{_SECRET_KEYS})[\"']?\s*[:=]\s*[\"']?)([^\"'&\s,}}]+)"
)
# Authorization headers: "token api_key:access_token" (Kite), "Bearer access_token" (Upstox).
_AUTH_HEADERS = (
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)\b(token\s+)[A-Za-z0-9._~-]+:[A-Za-z0-9._~+/=-]{4,}"),
)
_MIN_SECRET_LENGTH = 4


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets and anything that looks like a token or secret masked."""
    for secret in secrets:
        # A loop, because masking can splice a new copy together ("x" + "x***" -> "x***"); it ends,
        # since every pass makes the text shorter.
        while secret and len(secret) >= _MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, "***")
    for pattern in _AUTH_HEADERS:
        text = pattern.sub(lambda m: f"{m.group(1)}***", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}***", text)


# ----------------------------------------------------------------------------- unregistered IP

# Neither broker documents the exact refusal text. Known wording: a Kite reply quoted on GitHub
# (hopit-ai/india-trade-cli issue 127: "IP (2402:...) is not allowed"); Zerodha's forum thread 15912 and
# support article "static-ip" speak of order requests "from an unregistered IP" and an "IP Whitelist";
# Upstox's announcement ("Algo Registration & Static IP Requirement") of "order requests from
# unregistered IPs". So match conservatively: the word IP together with one of those refusals.
_UNREGISTERED_IP = re.compile(
    r"(?i)\bIP\b[^\n]{0,80}?\b(?:is\s+)?not\s+(?:allowed|registered|whitelisted|permitted)\b"
    r"|\bunregistered\s+IPs?\b"
    r"|\bIP\s+(?:address\s+)?(?:is\s+)?not\s+(?:in|on)\s+(?:the\s+)?(?:IP\s+)?whitelist\b"
)


def is_unregistered_ip_refusal(text: str) -> bool:
    """Does a broker's error text say the request came from an IP not registered for orders?"""
    return bool(_UNREGISTERED_IP.search(text))


# ----------------------------------------------------------------------------- transport errors


def _pick(order_call: bool) -> type[TemporaryError]:
    """After the request went out: for an order, the broker may have acted on it."""
    return AmbiguousError if order_call else TemporaryError


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and what it wraps (requests wraps urllib3, which wraps socket errors)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        if isinstance(current, urllib3.exceptions.MaxRetryError) and current.reason is not None:
            current = current.reason
        else:
            wrapped = [arg for arg in current.args if isinstance(arg, BaseException)]
            current = wrapped[0] if wrapped else (current.__cause__ or current.__context__)
    return seen


def _never_sent(exc: BaseException) -> bool:
    """True when the connection was never made, so the broker cannot have seen the request."""
    for item in _chain(exc):
        if isinstance(
            item,
            urllib3.exceptions.ConnectTimeoutError  # includes NewConnectionError, NameResolutionError
            | urllib3.exceptions.SSLError
            | urllib3.exceptions.ProxyError
            | requests.exceptions.ConnectTimeout
            | requests.exceptions.SSLError
            | requests.exceptions.ProxyError
            | ConnectionRefusedError
            | socket.gaierror,
        ):
            return True
    return False


def _map_transport(exc: BaseException, order_call: bool, secrets: Iterable[str | None]) -> BrokerError | None:
    """Map requests, urllib3 and socket exceptions; None if exc is none of them."""
    name = type(exc).__name__
    text = f"{name}: {redact(str(exc), secrets)}"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        retry_after = _retry_after(exc.response)
        return error_for_status(
            exc.response.status_code, text, order_call=order_call, retry_after=retry_after
        )
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema
        | requests.exceptions.InvalidHeader
        | requests.exceptions.URLRequired
        | urllib3.exceptions.LocationValueError,
    ):
        return BrokerInputError(f"request could not be built: {text}")
    if isinstance(exc, requests.exceptions.RequestException | urllib3.exceptions.HTTPError | OSError):
        if _never_sent(exc):
            return TemporaryError(f"could not connect: {text}")
        kind = "timed out" if _timed_out(exc) else "connection failed"
        return _pick(order_call)(f"{kind}: {text}")
    return None


def _timed_out(exc: BaseException) -> bool:
    return any(
        isinstance(item, TimeoutError | requests.exceptions.Timeout | urllib3.exceptions.TimeoutError)
        for item in _chain(exc)
    )


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("Retry-After")
    except AttributeError:
        return None
    return retry_after_seconds(value)


def error_for_status(
    status: int,
    text: str,
    *,
    order_call: bool,
    code: str | None = None,
    retry_after: float | None = None,
) -> BrokerError:
    """The error an HTTP status means when nothing more specific is known (used by both adapters)."""
    if status == 429:
        return RateLimitedError(text, status=status, code=code, retry_after=retry_after)
    if status == 401:
        return AuthError(text, status=status, code=code)
    if status == 407:
        # The order route's proxy wants (other) credentials: nothing reached the broker.
        return TemporaryError(f"the order route's proxy refused the login: {text}", status=status, code=code)
    if status >= 500 or status < 400:
        # 5xx, or a reply we could not read: the request reached the server.
        return _pick(order_call)(text, status=status, code=code)
    if order_call:
        return RejectedError(text, status=status, code=code)
    return BrokerInputError(text, status=status, code=code)


def login_error(error: BrokerError) -> BrokerError:
    """A refused token exchange (bad or used code, wrong secret) means: log in again."""
    if isinstance(error, TemporaryError | AuthError):
        return error
    return AuthError(f"login refused: {error}", status=error.status, code=error.code)


# ----------------------------------------------------------------------------- Kite


def map_kite_exception(
    exc: BaseException, *, order_call: bool = True, secrets: Iterable[str | None] = ()
) -> BrokerError:
    """The project error for an exception raised by ``kiteconnect`` (or requests underneath it).

    ``order_call`` says whether the call placed, modified or cancelled an order; it decides between
    ``AmbiguousError`` and ``TemporaryError`` and between ``RejectedError`` and ``BrokerInputError``.
    It defaults to True, the safe side. ``secrets`` are masked in the message.
    """
    # Imported here so that naming the error classes (base.py, the paper broker) loads no broker SDK.
    from kiteconnect import exceptions as kex

    secrets = tuple(secrets)
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, kex.KiteException):
        status = int(getattr(exc, "code", 500) or 500)
        kind = type(exc).__name__
        text = f"{kind}: {redact(str(exc), secrets)}"
        if order_call and is_unregistered_ip_refusal(str(exc)):
            # Checked first: whatever class Kite files it under (a 403 must not log the trader out).
            return UnregisteredIPError(text, broker="Zerodha", status=status, code=kind)
        if status == 429:
            return RateLimitedError(text, status=status, code=kind)
        if isinstance(exc, kex.TokenException):
            return AuthError(text, status=status, code=kind)
        if isinstance(exc, kex.DataException | kex.NetworkException):
            # The OMS behind Kite failed or answered garbage: it may have taken the order.
            return _pick(order_call)(text, status=status, code=kind)
        if isinstance(exc, kex.OrderException | kex.InputException | kex.PermissionException):
            if order_call:
                return RejectedError(text, status=status, code=kind)
            return BrokerInputError(text, status=status, code=kind)
        # GeneralException and anything new: decide by the HTTP status.
        if status == 403:
            return AuthError(text, status=status, code=kind)
        return error_for_status(status, text, order_call=order_call, code=kind)
    mapped = _map_transport(exc, order_call, secrets)
    if mapped is not None:
        return mapped
    return BrokerError(f"unexpected {type(exc).__name__}: {redact(str(exc), secrets)}")


# ----------------------------------------------------------------------------- Upstox

# errorCode values that mean "log in again" whatever the HTTP status.
_UPSTOX_AUTH_CODES = frozenset({"UDAPI100050", "UDAPI100016", "UDAPI100067", "UDAPI100073", "UDAPI100068"})
_UPSTOX_RATE_CODES = frozenset({"UDAPI10005"})


def upstox_error_detail(body: object) -> tuple[str | None, str]:
    """(errorCode, message) from an Upstox error body (bytes, str or parsed JSON)."""
    data: object = body
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            return None, body.strip()[:300]
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code = first.get("errorCode") or first.get("error_code")
            return (str(code) if code else None), str(first.get("message", ""))
        if "message" in data:
            return None, str(data["message"])
    return None, "" if data is None else str(data)[:300]


def map_upstox_exception(
    exc: BaseException, *, order_call: bool = True, secrets: Iterable[str | None] = ()
) -> BrokerError:
    """The project error for an exception raised by ``upstox_client`` (or urllib3 underneath it).

    Arguments as for :func:`map_kite_exception`.
    """
    from upstox_client.rest import ApiException  # imported here: see map_kite_exception

    secrets = tuple(secrets)
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 0:
            # The SDK's own wrapper: an SSL failure during the handshake, or a body it could not build.
            reason = redact(str(exc.reason or ""), secrets)
            if reason.startswith("SSLError"):
                return TemporaryError(f"could not connect: {reason}")
            return BrokerInputError(f"request could not be built: {reason}")
        code, detail = upstox_error_detail(exc.body)
        text = redact(f"HTTP {status} {exc.reason or ''}: {code or ''} {detail}".strip(), secrets)
        retry_after = _retry_after(exc)
        if order_call and is_unregistered_ip_refusal(detail):
            return UnregisteredIPError(text, broker="Upstox", status=status, code=code)
        if code in _UPSTOX_RATE_CODES:
            return RateLimitedError(text, status=status, code=code, retry_after=retry_after)
        if code in _UPSTOX_AUTH_CODES:
            return AuthError(text, status=status, code=code)
        return error_for_status(status, text, order_call=order_call, code=code, retry_after=retry_after)
    if isinstance(exc, ValueError | TypeError):
        # The SDK's models validate request fields before anything is sent.
        return BrokerInputError(f"{type(exc).__name__}: {redact(str(exc), secrets)}")
    mapped = _map_transport(exc, order_call, secrets)
    if mapped is not None:
        return mapped
    return BrokerError(f"unexpected {type(exc).__name__}: {redact(str(exc), secrets)}")
