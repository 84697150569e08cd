"""Kite ticker feed: ``decode_message`` turns one binary WebSocket message into ticks (see kite_codec)."""

from __future__ import annotations

from trailstop_gui.services.brokers.feed_errors import FeedDecodeError
from trailstop_gui.services.brokers.kite_codec import decode_message

__all__ = ["FeedDecodeError", "decode_message"]
