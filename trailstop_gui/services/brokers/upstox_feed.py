"""Upstox V3 market-data feed on ``websockets`` with the SDK's protobuf schema, and the portfolio stream.

``decode_message`` turns one binary frame into ticks (see upstox_codec). ``UpstoxFeed`` and
``UpstoxPortfolioFeed`` are the ``FeedProtocol``s the FeedLoop drives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import requests
from websockets.asyncio.client import ClientConnection, connect

from trailstop_gui.models.domain import InstrumentId
from trailstop_gui.services.brokers.errors import AuthError, TemporaryError
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError
from trailstop_gui.services.brokers.feed_loop import Depth, FeedBatch, OrderUpdate, update_number
from trailstop_gui.services.brokers.upstox_codec import decode_message

__all__ = ["FeedDecodeError", "UpstoxFeed", "UpstoxPortfolioFeed", "decode_message"]

log = logging.getLogger("trailstop.feed.upstox")

UPSTOX_API_ROOT = "https://api.upstox.com"
_MODES = {Depth.DEPTH: "full", Depth.LTP: "ltpc"}


def _authorize(api_root: str, path: str, token: str | None, timeout: float) -> str:
    """GET an ``.../authorize`` endpoint and return the one-time WebSocket URL it hands out."""
    if not token:
        raise AuthError("upstox: not logged in")
    try:
        response = requests.get(
            api_root.rstrip("/") + path,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise TemporaryError(f"upstox: feed authorisation failed ({type(exc).__name__})") from None
    if response.status_code in (401, 403):
        raise AuthError(f"upstox: feed authorisation refused (HTTP {response.status_code})")
    if response.status_code >= 400:
        raise TemporaryError(f"upstox: feed authorisation failed (HTTP {response.status_code})")
    try:
        data: Any = response.json()["data"]
        return str(data.get("authorized_redirect_uri") or data["authorizedRedirectUri"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TemporaryError("upstox: feed authorisation answered without a URL") from None


class UpstoxFeed:
    """The Upstox V3 market-data feed protocol for the FeedLoop."""

    name = "upstox"
    silence_means_dead = False  # no heartbeat frames: pings (ping_interval) watch the link

    def __init__(
        self,
        token: Callable[[], str | None],
        api_root: str = UPSTOX_API_ROOT,
        *,
        open_timeout: float = 5.0,
        ping_interval: float | None = 2.0,
    ) -> None:
        self._token = token
        self.api_root = api_root
        self.open_timeout = open_timeout
        # Upstox sends no heartbeat frames: WebSocket pings find a dead socket while the market is quiet.
        self.ping_interval = ping_interval

    async def open(self) -> ClientConnection:
        url = await asyncio.to_thread(
            _authorize, self.api_root, "/v3/feed/market-data-feed/authorize", self._token(), self.open_timeout
        )
        return await connect(
            url,
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            max_size=2**22,
        )

    @staticmethod
    def _frame(method: str, keys: list[str], mode: str | None) -> bytes:
        data: dict[str, Any] = {"instrumentKeys": keys}
        if mode is not None:
            data["mode"] = mode
        # The V3 feed takes its requests as BINARY frames of UTF-8 JSON.
        return json.dumps({"guid": str(uuid.uuid4()), "method": method, "data": data}).encode()

    def subscribe_frames(self, instruments: Mapping[InstrumentId, Depth]) -> list[str | bytes]:
        frames: list[str | bytes] = []
        for depth, mode in _MODES.items():
            keys = [str(i) for i, d in instruments.items() if d is depth]
            if keys:
                frames.append(self._frame("sub", keys, mode))
        return frames

    def unsubscribe_frames(self, instruments: list[InstrumentId]) -> list[str | bytes]:
        return [self._frame("unsub", [str(i) for i in instruments], None)]

    def decode(self, message: str | bytes) -> FeedBatch:
        if isinstance(message, str):
            return FeedBatch()  # the V3 feed speaks protobuf only; nothing to act on in text
        return FeedBatch(ticks=decode_message(message))


class UpstoxPortfolioFeed:
    """The Upstox portfolio stream: order updates as text JSON (no subscriptions)."""

    name = "upstox-orders"
    silence_means_dead = False

    def __init__(
        self, token: Callable[[], str | None], api_root: str = UPSTOX_API_ROOT, *, open_timeout: float = 5.0
    ) -> None:
        self._token = token
        self.api_root = api_root
        self.open_timeout = open_timeout

    async def open(self) -> ClientConnection:
        url = await asyncio.to_thread(
            _authorize,
            self.api_root,
            "/v2/feed/portfolio-stream-feed/authorize?update_types=order",
            self._token(),
            self.open_timeout,
        )
        return await connect(url, open_timeout=self.open_timeout, ping_interval=2.0, ping_timeout=2.0)

    def subscribe_frames(self, instruments: Mapping[InstrumentId, Depth]) -> list[str | bytes]:
        return []

    def unsubscribe_frames(self, instruments: list[InstrumentId]) -> list[str | bytes]:
        return []

    def decode(self, message: str | bytes) -> FeedBatch:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise FeedDecodeError(f"upstox: portfolio message is not JSON ({exc})") from None
        if not isinstance(payload, dict) or payload.get("update_type") != "order":
            return FeedBatch()
        return FeedBatch(
            orders=[
                OrderUpdate(
                    order_id=str(payload.get("order_id") or ""),
                    status=str(payload.get("status") or ""),
                    tag=str(payload.get("tag") or ""),
                    filled_quantity=int(update_number(payload, "filled_quantity", "upstox")),
                    average_price=update_number(payload, "average_price", "upstox"),
                    raw=payload,
                )
            ]
        )
