"""The Upstox SDK's own reading of a V3 feed frame, for tests that hold a decoder or an encoder to it."""

from __future__ import annotations

from typing import Any

from upstox_client.feeder.market_data_streamer_v3 import MarketDataStreamerV3

_STREAMER = MarketDataStreamerV3()  # never connected: frames go to its message handler as its socket would
_messages: list[dict[str, Any]] = []
_STREAMER.on("message", _messages.append)


def sdk_message(frame: bytes) -> dict[str, Any]:
    """The dict the SDK's streamer gives its listeners for ``frame`` (FromString + MessageToDict)."""
    _messages.clear()
    _STREAMER.handle_message(None, frame)
    (message,) = _messages
    return message
