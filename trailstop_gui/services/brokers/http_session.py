"""A ``requests.Session`` that reads the process environment once per broker host, not on every request.

requests reads the environment on every call when ``trust_env`` is on: the proxy variables twice over
(``getproxies_environment`` walks all of ``os.environ``, decoding each name, once for the lower-case and
once for the upper-case spelling, then again for ``no_proxy``), the CA bundle variables, and ``~/.netrc``.
On the exit path that was 0.3-0.4 ms of interpreter between ``place_order`` and the socket write, with
the feed thread's TRIGGERED commit waiting for the same interpreter (bench/tick_to_exit_stages.py; the
cProfile in the README's benchmark notes). This session takes the same proxies and CA bundle from the
environment, as requests would, at its first request to each host, and keeps them: the app never changes
its own environment, and a proxy for the order calls is set in the app (services/brokers/order_route.py).

``~/.netrc`` is not read: the broker SDKs authenticate every request with their own header, and a netrc
entry for the broker's host would have replaced that header with Basic credentials (requests'
``prepare_auth`` overrides it), so no request of theirs could use it anyway.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.utils import get_environ_proxies

__all__ = ["HostEnvironmentSession"]


class HostEnvironmentSession(requests.Session):
    """``requests.Session`` with the environment's proxies and CA bundle read once per scheme and host."""

    def __init__(self) -> None:
        super().__init__()
        # Off: requests would read the environment (and ~/.netrc) on every request; it is read below.
        self.trust_env = False
        # (scheme://host[:port], the caller's no_proxy) -> (proxies from the environment, CA bundle or None)
        self._environment: dict[tuple[str, str | None], tuple[dict[str, str], str | None]] = {}

    def merge_environment_settings(
        self,
        url: Any,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> dict[str, Any]:
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
