"""The one error the market-feed decoders raise."""

from __future__ import annotations


class FeedDecodeError(ValueError):
    """A WebSocket market-data message could not be decoded; the feed logs it and reads the next one."""
