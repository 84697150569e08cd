"""Upstox V3 market-data frames: a fast decoder to Ticks, and the encoders its tests use.

Every server frame is a protobuf ``FeedResponse`` (schema from the SDK, ``MarketDataFeedV3_pb2``). The SDK's
streamer turns each one into a dict with ``MessageToDict``, which is pure Python and slow; this module reads
the parsed message's fields directly and gives the same prices.

Field mapping: ``ltp`` from the feed's LTPC (0.0 when the feed carries none; the engine ignores it), ``ts``
the LTPC's last-trade time in epoch seconds (None unless positive); full market feeds add ``bid``/``ask``
from the first ``bidAskQuote`` and ``volume`` from ``vtt``; option-greeks feeds take them from
``firstDepth`` and ``vtt``; index feeds carry the LTP only. A price of 0 (empty level) gives None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, cast

from google.protobuf.message import DecodeError, Message
from upstox_client.feeder.proto import MarketDataFeedV3_pb2

from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError

UpstoxMode = Literal["ltpc", "full", "index", "option_greeks"]
FeedType = Literal["initial_feed", "live_feed"]

_pb: Any = MarketDataFeedV3_pb2
_parse_feed_response: Final = _pb.FeedResponse.FromString
_MARKET_INFO: Final[int] = _pb.market_info


def decode_message(data: bytes | bytearray | memoryview) -> list[Tick]:
    """One Upstox V3 binary frame -> ticks keyed by instrument key; market_info frames give ``[]``.

    Raises FeedDecodeError when the frame is not a FeedResponse protobuf.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FeedDecodeError(f"Upstox feed: expected a binary frame (bytes), got {type(data).__name__}")
    try:
        response = _parse_feed_response(data)
    except DecodeError as exc:
        raise FeedDecodeError(f"Upstox feed: not a FeedResponse protobuf ({len(data)} bytes): {exc}") from exc
    if response.type == _MARKET_INFO:
        return []

    ticks: list[Tick] = []
    for key, feed in response.feeds.items():
        kind = feed.WhichOneof("FeedUnion")
        # Most frequent first: full mode is what the app subscribes to for anything it protects.
        if kind == "fullFeed":
            full = feed.fullFeed
            variant = full.WhichOneof("FullFeedUnion")
            if variant == "marketFF":
                market = full.marketFF
                ltpc = market.ltpc
                ltt = ltpc.ltt
                quotes = market.marketLevel.bidAskQuote
                if quotes:
                    best = quotes[0]
                    bid = best.bidP or None
                    ask = best.askP or None
                else:
                    bid = ask = None
                ticks.append(Tick(key, ltpc.ltp, bid, ask, market.vtt, ltt / 1000 if ltt > 0 else None))
            elif variant == "indexFF":
                ltpc = full.indexFF.ltpc
                ltt = ltpc.ltt
                ticks.append(Tick(key, ltpc.ltp, None, None, None, ltt / 1000 if ltt > 0 else None))
        elif kind == "ltpc":
            ltpc = feed.ltpc
            ltt = ltpc.ltt
            ticks.append(Tick(key, ltpc.ltp, None, None, None, ltt / 1000 if ltt > 0 else None))
        elif kind == "firstLevelWithGreeks":
            greeks = feed.firstLevelWithGreeks
            ltpc = greeks.ltpc
            ltt = ltpc.ltt
            best = greeks.firstDepth
            ticks.append(
                Tick(
                    key,
                    ltpc.ltp,
                    best.bidP or None,
                    best.askP or None,
                    greeks.vtt,
                    ltt / 1000 if ltt > 0 else None,
                )
            )
        # A feed with none of the three set carries no price: nothing to report.
    return ticks


# ---------------------------------------------------------------------------------------------- encoding

_REQUEST_MODES: Final[Mapping[str, int]] = {
    "ltpc": _pb.ltpc,
    "full": _pb.full_d5,
    "index": _pb.full_d5,
    "option_greeks": _pb.option_greeks,
}


def _fill_ltpc(ltpc: Any, tick: Tick) -> None:
    ltpc.ltp = tick.ltp
    if tick.ts is not None:
        ltpc.ltt = round(tick.ts * 1000)


def _fill_quote(quote: Any, tick: Tick) -> None:
    quote.bidP = tick.bid or 0.0
    quote.askP = tick.ask or 0.0


def build_feed(tick: Tick, mode: UpstoxMode) -> Message:
    """The ``Feed`` message the server sends for ``tick`` in ``mode``; fields the mode lacks are dropped.

    ``full`` is a market full feed (best bid/ask as the first of the depth quotes, volume as ``vtt``),
    ``index`` an index full feed, ``option_greeks`` a first-level-with-greeks feed.
    """
    if mode not in _REQUEST_MODES:
        raise ValueError(f"mode: expected one of {', '.join(_REQUEST_MODES)}, got {mode!r}")
    feed = _pb.Feed(requestMode=_REQUEST_MODES[mode])
    if mode == "ltpc":
        _fill_ltpc(feed.ltpc, tick)
    elif mode == "full":
        market = feed.fullFeed.marketFF
        _fill_ltpc(market.ltpc, tick)
        _fill_quote(market.marketLevel.bidAskQuote.add(), tick)
        market.vtt = tick.volume or 0
    elif mode == "index":
        _fill_ltpc(feed.fullFeed.indexFF.ltpc, tick)
    else:
        greeks = feed.firstLevelWithGreeks
        _fill_ltpc(greeks.ltpc, tick)
        _fill_quote(greeks.firstDepth, tick)
        greeks.vtt = tick.volume or 0
    return cast(Message, feed)


def encode_feeds(
    feeds: Mapping[str, Message], *, feed_type: FeedType = "live_feed", current_ts_ms: int = 0
) -> bytes:
    """A serialized FeedResponse holding ``feeds`` keyed by instrument key."""
    response = _pb.FeedResponse(type=_pb.Type.Value(feed_type), currentTs=current_ts_ms)
    for key, feed in feeds.items():
        response.feeds[key].CopyFrom(feed)
    return cast(bytes, response.SerializeToString())


def encode_frame(
    ticks: Iterable[Tick],
    mode: UpstoxMode,
    *,
    feed_type: FeedType = "live_feed",
    current_ts_ms: int = 0,
) -> bytes:
    """One frame with a ``mode`` feed per tick; instrument keys are strings, a repeated key keeps the last."""
    feeds: dict[str, Message] = {}
    for tick in ticks:
        if not isinstance(tick.instrument, str):
            raise ValueError(f"instrument: an Upstox instrument key is a string, got {tick.instrument!r}")
        feeds[tick.instrument] = build_feed(tick, mode)
    return encode_feeds(feeds, feed_type=feed_type, current_ts_ms=current_ts_ms)


def encode_market_info_frame(segment_status: Mapping[str, str], *, current_ts_ms: int = 0) -> bytes:
    """The market_info frame the server sends first, e.g. ``{"NSE_EQ": "NORMAL_OPEN"}``."""
    response = _pb.FeedResponse(type=_MARKET_INFO, currentTs=current_ts_ms)
    for segment, status in segment_status.items():
        try:
            response.marketInfo.segmentStatus[segment] = _pb.MarketStatus.Value(status)
        except ValueError:
            names = ", ".join(_pb.MarketStatus.keys())
            raise ValueError(f"segment status: expected one of {names}, got {status!r}") from None
    return cast(bytes, response.SerializeToString())
