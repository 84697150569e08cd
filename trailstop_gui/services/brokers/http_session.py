"""A ``requests.Session`` that reads the process environment once per broker host, not on every request.

requests reads the environment on every call when ``trust_env`` is on: the proxy variables twice over
(``getproxies_environment`` walks all of ``os.environ``, decoding each name, once for the lower-case and
once for the upper-case spelling, then again for ``no_proxy``), the CA bundle variables, and ``~/.netrc``.
On the exit path that was 0.3-0.4 ms of interpreter between ``place_order`` and the socket write, with
the feed thread's TRIGGERED commit waiting for the same interpreter (bench/tick_to_exit_stages.py; the
cProfile in the README's benchmark notes). This session takes the same proxies and CA bundle from the
environment, as requests would, at its first request to each host, and keeps them: the app never changes
its own environment, and a proxy for the order calls is set in the app (services/brokers/order_route.py).

It can also work a request out down to its bytes ahead of time (:meth:`HostEnvironmentSession.capture`)
and send exactly that later, when the SDK asks for the same request (:meth:`HostEnvironmentSession.sending`):
an exit's order is prepared while its trigger is being committed, so that between the commit and the
socket write only the sending is left (requests' ``prepare_request``, 0.2-0.3 ms of interpreter per order
here, was most of what the SDK's call cost after the gate opened).

``~/.netrc`` is not read: the broker SDKs authenticate every request with their own header, and a netrc
entry for the broker's host would have replaced that header with Basic credentials (requests'
``prepare_auth`` overrides it), so no request of theirs could use it anyway.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.utils import get_environ_proxies

__all__ = ["HostEnvironmentSession", "PreparedCall"]


@dataclass(frozen=True, eq=False)
class PreparedCall:
    """One request worked out by :meth:`HostEnvironmentSession.capture`: what the SDK asked for, and the
    prepared request and send settings that ``requests.Session.request`` made of it."""

    session: HostEnvironmentSession
    method: str
    url: str
    arguments: dict[str, Any]
    prepared: requests.PreparedRequest
    send_settings: dict[str, Any]


class _Captured(Exception):
    """Not an error: the way out of the SDK's call, carrying the request it would have sent."""

    def __init__(self, call: PreparedCall) -> None:
        super().__init__("captured")
        self.call = call


class HostEnvironmentSession(requests.Session):
    """``requests.Session`` with the environment's proxies and CA bundle read once per scheme and host."""

    def __init__(self) -> None:
        super().__init__()
        # Off: requests would read the environment (and ~/.netrc) on every request; it is read below.
        self.trust_env = False
        # (scheme://host[:port], the caller's no_proxy) -> (proxies from the environment, CA bundle or None)
        self._environment: dict[tuple[str, str | None], tuple[dict[str, str], str | None]] = {}
        # Per thread: capturing (a request goes no further than its preparation), or the call to send.
        self._local = threading.local()

    def capture(self, call: Callable[[], object]) -> PreparedCall | None:
        """Run ``call`` (an SDK call making one request through this session) up to the moment the request
        would be sent, and return what it would have sent; None when it made no request."""
        self._local.capturing = True
        try:
            call()
        except _Captured as captured:
            return captured.call
        finally:
            self._local.capturing = False
        return None

    @contextmanager
    def sending(self, call: PreparedCall | None) -> Iterator[None]:
        """Within this block, this thread's first request equal to ``call``'s (the same method, URL and
        arguments: headers, body, timeout, proxies) is sent as ``call`` prepared it; any other is
        prepared as usual."""
        self._local.ready = call if call is not None and call.session is self else None
        try:
            yield
        finally:
            self._local.ready = None

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._local, "capturing", False) and not args:
            raise _Captured(self._prepare_call(str(method), str(url), kwargs))
        ready: PreparedCall | None = getattr(self._local, "ready", None)
        if ready is not None:
            self._local.ready = None
            if not args and (method, url, kwargs) == (ready.method, ready.url, ready.arguments):
                return self.send(ready.prepared, **ready.send_settings)
        return super().request(method, url, *args, **kwargs)

    def _prepare_call(self, method: str, url: str, arguments: dict[str, Any]) -> PreparedCall:
        """What ``requests.Session.request`` (requests 2.x) does before it sends, and nothing else: a
        capture is no request, so it goes through nothing that sends or counts requests."""
        copied = _copied(arguments)  # before requests adds the environment's proxies to the caller's dict
        a = arguments
        request = requests.Request(
            method=method.upper(),
            url=url,
            headers=a.get("headers"),
            files=a.get("files"),
            data=a.get("data") or {},
            json=a.get("json"),
            params=a.get("params") or {},
            auth=a.get("auth"),
            cookies=a.get("cookies"),
            hooks=a.get("hooks"),
        )
        prepared = self.prepare_request(request)
        settings = self.merge_environment_settings(
            prepared.url, a.get("proxies") or {}, a.get("stream"), a.get("verify"), a.get("cert")
        )
        send_settings = {"timeout": a.get("timeout"), "allow_redirects": a.get("allow_redirects", True)}
        send_settings.update(settings)
        return PreparedCall(self, method, url, copied, prepared, send_settings)

    def merge_environment_settings(
        self,
        url: Any,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> Any:
        """What ``requests.Session.merge_environment_settings`` returns with ``trust_env`` on."""
        no_proxy = proxies.get("no_proxy") if proxies is not None else None
        parts = urlsplit(str(url))
        key = (f"{parts.scheme}://{parts.netloc}", no_proxy)
        environment = self._environment.get(key)
        if environment is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
            environment = self._environment[key] = (get_environ_proxies(str(url), no_proxy=no_proxy), bundle)
        env_proxies, bundle = environment
        if proxies is not None:
            for scheme, proxy in env_proxies.items():
                proxies.setdefault(scheme, proxy)
        if (verify is True or verify is None) and bundle:
            verify = bundle
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


def _copied(arguments: dict[str, Any]) -> dict[str, Any]:
    """The SDK's arguments as they were at the call: requests adds the environment's proxies to the
    caller's own dict (``merge_environment_settings``), and the call later must be compared with this."""
    return {key: dict(value) if isinstance(value, dict) else value for key, value in arguments.items()}
