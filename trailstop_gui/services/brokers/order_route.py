"""An account's order route: how its order calls reach the broker from a registered static IP.

Since 1 April 2026 both brokers refuse API orders (place, modify, cancel; Upstox: GTT too) from an IP
that is not registered on the developer console (Kite forum thread 15912, Zerodha support "static-ip",
Upstox's "Algo Registration & Static IP Requirement"). Reads, login and the feeds work from any IP, so
only order calls take the route: ``direct`` (this machine has the registered IP) or a proxy the trader
runs on a host that has one, HTTP CONNECT or SOCKS5 (``ssh -N -D 1080 user@vps`` is a SOCKS5 proxy).

The route is plain data (stored in the database's settings, with no password: a proxy password lives in
the keyring). ``requests_proxies`` feeds kiteconnect's ``proxies`` (requests, ``requests[socks]`` for
SOCKS); ``urllib3_manager`` builds the pool manager upstox_client would build from ``Configuration.proxy``
(urllib3.ProxyManager), or a SOCKSProxyManager, which the SDK cannot build itself.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["OrderRoute", "RouteKind", "RouteValidationError", "order_call_check", "parse_route"]


class RouteKind(enum.StrEnum):
    DIRECT = "direct"
    HTTP = "http"  # HTTP CONNECT (a plain http:// target is forwarded, as every HTTP proxy does)
    SOCKS5 = "socks5"


class RouteValidationError(ValueError):
    """A route the trader typed is not usable; ``str()`` names the field, never echoes a password."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_USER = re.compile(r"[A-Za-z0-9._~@+-]{1,64}")


@dataclass(frozen=True, slots=True)
class OrderRoute:
    """Direct, or a proxy at ``host:port`` (``username`` optional; its password is kept elsewhere)."""

    kind: RouteKind = RouteKind.DIRECT
    host: str = ""
    port: int = 0
    username: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RouteKind(self.kind))

    @property
    def is_direct(self) -> bool:
        return self.kind is RouteKind.DIRECT

    def describe(self) -> str:
        """For the trader: ``direct`` or ``SOCKS5 127.0.0.1:1080``; never a password."""
        if self.is_direct:
            return "direct"
        who = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'SOCKS5' if self.kind is RouteKind.SOCKS5 else 'HTTP'} {who}{host}:{self.port}"

    def proxy_url(self, password: str | None = None) -> str | None:
        """The proxy as a URL (``socks5h://`` so that the proxy resolves the broker's name), or None."""
        if self.is_direct:
            return None
        scheme = "socks5h" if self.kind is RouteKind.SOCKS5 else "http"
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if password:
                auth += ":" + quote(password, safe="")
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"

    def requests_proxies(self, password: str | None = None) -> dict[str, str]:
        """kiteconnect's ``proxies`` (a requests proxies mapping); empty for direct."""
        url = self.proxy_url(password)
        return {} if url is None else {"http": url, "https": url}

    def urllib3_manager(self, password: str | None = None, **pool_kw: Any) -> Any:
        """A urllib3 pool manager for this route: a PoolManager, ProxyManager or SOCKSProxyManager."""
        import urllib3

        if self.is_direct:
            return urllib3.PoolManager(**pool_kw)
        if self.kind is RouteKind.SOCKS5:
            from urllib3.contrib.socks import SOCKSProxyManager

            return SOCKSProxyManager(str(self.proxy_url(password)), **pool_kw)
        headers = None
        if self.username:
            headers = urllib3.make_headers(proxy_basic_auth=f"{self.username}:{password or ''}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return urllib3.ProxyManager(f"http://{host}:{self.port}", proxy_headers=headers, **pool_kw)

    def as_setting(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "host": self.host, "port": self.port, "username": self.username}

    @classmethod
    def from_setting(cls, value: object) -> OrderRoute:
        """From the stored setting; anything unreadable is direct (and the check will say so)."""
        if not isinstance(value, dict):
            return cls()
        try:
            return validate_route(
                str(value.get("kind") or "direct"),
                str(value.get("host") or ""),
                value.get("port") or 0,
                str(value.get("username") or ""),
            )
        except (RouteValidationError, ValueError):
            return cls()


def validate_route(kind: str, host: str, port: object, username: str = "") -> OrderRoute:
    """Check what the form collected; RouteValidationError names the bad field."""
    try:
        route_kind = RouteKind(kind.strip().lower())
    except ValueError:
        raise RouteValidationError("kind", "Order route: direct, http or socks5") from None
    if route_kind is RouteKind.DIRECT:
        return OrderRoute()
    host = host.strip().strip("[]")
    if not host:
        raise RouteValidationError("host", "Proxy host: must not be empty")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.fullmatch(host):
            raise RouteValidationError("host", "Proxy host: a host name or an IP address") from None
    if isinstance(port, bool):
        raise RouteValidationError("port", "Proxy port: a number from 1 to 65535")
    try:
        number = int(str(port).strip())
    except ValueError:
        raise RouteValidationError("port", "Proxy port: a number from 1 to 65535") from None
    if not 1 <= number <= 65535:
        raise RouteValidationError("port", "Proxy port: a number from 1 to 65535")
    username = username.strip()
    if username and not _USER.fullmatch(username):
        raise RouteValidationError("username", "Proxy user: letters, digits and . _ ~ @ + - only")
    return OrderRoute(route_kind, host, number, username)


def parse_route(text: str) -> OrderRoute:
    """``direct``, ``socks5://host:port``, ``http://user@host:port`` (no password: the keyring has it)."""
    text = text.strip()
    if text.lower() in ("", "direct"):
        return OrderRoute()
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        port = parts.port
    except ValueError:
        raise RouteValidationError("port", "Proxy port: a number from 1 to 65535") from None
    scheme = (parts.scheme or "").lower()
    kind = {"socks5": "socks5", "socks5h": "socks5", "http": "http"}.get(scheme)
    if kind is None:
        raise RouteValidationError("kind", "Order route: direct, http://host:port or socks5://host:port")
    if parts.password:
        raise RouteValidationError(
            "password", "Order route: give the proxy password separately, not in the URL"
        )
    return validate_route(kind, parts.hostname or "", port or 0, parts.username or "")


# --------------------------------------------------------------------------- checking a route

PROBE_ORDER_ID = "0"
"""No broker issues order id 0: cancelling it can only be refused ("IP not allowed") or not found."""


class RouteState(enum.StrEnum):
    UNCHECKED = "unchecked"
    OK = "ok"  # the order endpoint answered about the order, so it accepted where we called from
    REFUSED = "refused"  # the broker refused the IP
    UNREACHABLE = "unreachable"  # the proxy (or the broker) could not be reached
    LOGIN_NEEDED = "login needed"  # no session to check with
    UNKNOWN = "unknown"  # an answer we cannot read either way


@dataclass(frozen=True, slots=True)
class RouteCheck:
    """What a harmless order-endpoint probe found, in words for the trader."""

    state: RouteState
    message: str
    registered_ips: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.state in (RouteState.REFUSED, RouteState.UNREACHABLE)


def probe_order_route(cancel_missing_order: Any, broker_name: str, route: OrderRoute) -> RouteCheck:
    """Cancel an order id that cannot exist and read the answer: "IP not allowed" and "order not found"
    are different answers. ``cancel_missing_order`` raises the project's BrokerError subclasses."""
    from trailstop_gui.services.brokers.errors import (
        AuthError,
        BrokerError,
        BrokerInputError,
        RejectedError,
        TemporaryError,
        UnregisteredIPError,
    )

    how = route.describe()
    try:
        cancel_missing_order()
    except UnregisteredIPError as exc:
        return RouteCheck(RouteState.REFUSED, f"{exc.alert_text} (route: {how})")
    except AuthError as exc:
        return RouteCheck(RouteState.LOGIN_NEEDED, f"log in first to check the order route ({exc.message})")
    except TemporaryError as exc:
        return RouteCheck(
            RouteState.UNREACHABLE, f"the order route ({how}) did not get through: {exc.message}"
        )
    except (RejectedError, BrokerInputError):
        return RouteCheck(RouteState.OK, f"{broker_name} accepts orders sent {_through(route)}")
    except BrokerError as exc:
        return RouteCheck(RouteState.UNKNOWN, f"unclear answer from {broker_name}: {exc.message}")
    # Cancelling order 0 "worked": not an answer we can trust either way.
    return RouteCheck(RouteState.UNKNOWN, f"{broker_name} accepted a cancel of an order that cannot exist")


def order_call_check(broker_name: str, route: OrderRoute, refusal: Any | None) -> RouteCheck:
    """The route's state as a real order call just found it: ``refusal`` (an UnregisteredIPError) says
    the broker refused the IP, None that it accepted the call (so the route works)."""
    if refusal is not None:
        return RouteCheck(
            RouteState.REFUSED, f"{refusal.alert_text} (an order was refused; route: {route.describe()})"
        )
    return RouteCheck(RouteState.OK, f"{broker_name} accepted an order sent {_through(route)}")


def _through(route: OrderRoute) -> str:
    return "from this machine" if route.is_direct else f"through {route.describe()}"
