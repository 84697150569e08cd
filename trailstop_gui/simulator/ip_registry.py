"""The static IPs each simulated account has registered for its orders (see static_ip.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

MAX_IPS = 2  # a primary and a secondary, at both brokers


class IpRegistry:
    """Registered IPs per (broker, user id). An account with none registered is not checked."""

    def __init__(self) -> None:
        self._ips: dict[tuple[str, str], tuple[str, ...]] = {}

    def register(self, broker: str, user_id: str, ips: Iterable[str]) -> tuple[str, ...]:
        clean = tuple(dict.fromkeys(str(ipaddress.ip_address(str(ip).strip())) for ip in ips))
        if len(clean) > MAX_IPS:
            raise ValueError(f"at most {MAX_IPS} IPs per account (a primary and a secondary)")
        if clean:
            self._ips[(broker, user_id)] = clean
        else:
            self._ips.pop((broker, user_id), None)
        return clean

    def ips(self, broker: str, user_id: str) -> tuple[str, ...]:
        return self._ips.get((broker, user_id), ())

    def allows(self, broker: str, user_id: str, source: str | None) -> bool:
        registered = self._ips.get((broker, user_id))
        if not registered:
            return True
        try:
            return source is not None and str(ipaddress.ip_address(source)) in registered
        except ValueError:
            return False

    def clear(self) -> None:
        self._ips.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [{"broker": b, "user_id": u, "ips": list(ips)} for (b, u), ips in sorted(self._ips.items())]
