"""Kite ticker feed on ``websockets``: binary ticks, 1-byte heartbeats, order updates as text messages.

``decode_message`` turns one binary WebSocket message into ticks (see kite_codec). ``KiteFeed`` is the
``FeedProtocol`` the FeedLoop drives: how to connect, subscribe and decode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

from trailstop_gui.models.domain import InstrumentId
from trailstop_gui.services.brokers.errors import AuthError
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError
from trailstop_gui.services.brokers.feed_loop import Depth, FeedBatch, OrderUpdate, update_number
from trailstop_gui.services.brokers.kite_codec import decode_message

__all__ = ["KITE_WS_URL", "FeedDecodeError", "KiteFeed", "decode_message", "order_update_from_kite"]

log = logging.getLogger("trailstop.feed.kite")

KITE_WS_URL = "wss://ws.kite.trade"

# Full mode carries the 5-level depth an MIS protection trails on; ltp mode is the lightest otherwise.
_MODES = {Depth.DEPTH: "full", Depth.LTP: "ltp"}


def order_update_from_kite(data: Mapping[str, object]) -> OrderUpdate:
    """An order update's fields; raises FeedDecodeError when a number in it cannot be read."""
    return OrderUpdate(
        order_id=str(data.get("order_id") or ""),
        status=str(data.get("status") or ""),
        tag=str(data.get("tag") or ""),
        filled_quantity=int(update_number(data, "filled_quantity", "kite")),
        average_price=update_number(data, "average_price", "kite"),
        raw=dict(data),
    )


class KiteFeed:
    """The Kite ticker protocol for the FeedLoop."""

    name = "kite"
    silence_means_dead = True  # a heartbeat every second

    def __init__(
        self,
        api_key: str,
        token: Callable[[], str | None],
        ws_url: str = KITE_WS_URL,
        *,
        open_timeout: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self._token = token  # read at every connect: a new login takes effect on the next reconnect
        self.ws_url = ws_url
        self.open_timeout = open_timeout

    async def open(self) -> ClientConnection:
        token = self._token()
        if not token:
            raise AuthError("kite: not logged in")
        url = f"{self.ws_url}?{urlencode({'api_key': self.api_key, 'access_token': token})}"
        return await connect(
            url,
            additional_headers={"X-Kite-Version": "3"},
            open_timeout=self.open_timeout,
            # Kite sends a heartbeat every second; the loop's watchdog is the liveness check.
            ping_interval=None,
            max_size=2**22,
        )

    def subscribe_frames(self, instruments: Mapping[InstrumentId, Depth]) -> list[str | bytes]:
        tokens = [int(i) for i in instruments]
        frames: list[str | bytes] = [json.dumps({"a": "subscribe", "v": tokens})]
        for depth, mode in _MODES.items():
            group = [int(i) for i, d in instruments.items() if d is depth]
            if group:
                frames.append(json.dumps({"a": "mode", "v": [mode, group]}))
        return frames

    def unsubscribe_frames(self, instruments: list[InstrumentId]) -> list[str | bytes]:
        return [json.dumps({"a": "unsubscribe", "v": [int(i) for i in instruments]})]

    def decode(self, message: str | bytes) -> FeedBatch:
        if isinstance(message, bytes):
            return FeedBatch(ticks=decode_message(message))
        try:
            payload = json.loads(message)
        except (ValueError, RecursionError) as exc:
            raise FeedDecodeError(f"kite: text message is not JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise FeedDecodeError("kite: text message is not a JSON object")
        kind = payload.get("type")
        data = payload.get("data")
        if kind == "order" and isinstance(data, dict):
            return FeedBatch(orders=[order_update_from_kite(data)])
        if kind == "error":
            log.warning("kite feed: the server says: %s", data)
        return FeedBatch()
