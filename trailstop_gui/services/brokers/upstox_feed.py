"""Upstox V3 market-data feed: ``decode_message`` turns one binary frame into ticks (see upstox_codec)."""

from __future__ import annotations

from trailstop_gui.services.brokers.feed_errors import FeedDecodeError
from trailstop_gui.services.brokers.upstox_codec import decode_message

__all__ = ["FeedDecodeError", "decode_message"]
