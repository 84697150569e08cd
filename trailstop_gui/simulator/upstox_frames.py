"""Upstox V3 market-data frames, built with the SDK's own protobuf schema (``MarketDataFeedV3_pb2``).

The simulator fills every message itself from its quotes; it borrows nothing from the app's codec
(services/brokers/upstox_codec.py), so the SDK's schema is the only thing the two share and a field the app
misreads shows up as a failing test. Units as Upstox documents them: ``ltt`` epoch milliseconds, ``vtt``
the day's traded volume, depth as ``bidAskQuote`` levels best first, the day candle's ``ts`` in epoch ms.
"""

from __future__ import annotations

import time
from typing import Any, Final

from upstox_client.feeder.proto import MarketDataFeedV3_pb2

from trailstop_gui.simulator.market import Quote

_pb: Any = MarketDataFeedV3_pb2
IST_OFFSET: Final = 19800  # seconds east of UTC

FEED_MODES: Final = ("ltpc", "full", "option_greeks", "full_d30")
SEGMENTS: Final = ("NSE_EQ", "NSE_FO", "NSE_INDEX", "BSE_EQ", "BSE_FO", "BSE_INDEX")

# The RequestMode each subscription mode's feeds carry. An index has only the full feed: it is marked
# full_d5, or full_d30 when asked for that.
_REQUEST_MODES: Final = {
    "ltpc": _pb.ltpc,
    "full": _pb.full_d5,
    "option_greeks": _pb.option_greeks,
    "full_d30": _pb.full_d30,
}


def now_ms() -> int:
    return int(time.time() * 1000)


def _fill_ltpc(ltpc: Any, q: Quote) -> None:
    ltpc.ltp = q.ltp
    ltpc.ltt = q.last_trade_time * 1000  # 0 when nothing traded yet: the field is then left out
    ltpc.ltq = q.last_quantity
    ltpc.cp = q.close


def _fill_day_candle(market_ohlc: Any, q: Quote) -> None:
    day = market_ohlc.ohlc.add()
    day.interval = "1d"
    day.open, day.high, day.low, day.close = q.open, q.high, q.low, q.ltp
    day.vol = q.volume
    day.ts = (q.timestamp - (q.timestamp + IST_OFFSET) % 86400) * 1000  # the candle's start: midnight IST


def _fill_market_full(market: Any, q: Quote) -> None:
    _fill_ltpc(market.ltpc, q)
    # Five levels as the book has them; an empty side of a level stays 0 (no price, no quantity).
    for i in range(max(len(q.bids), len(q.asks), 1)):
        level = market.marketLevel.bidAskQuote.add()
        if i < len(q.bids):
            level.bidP, level.bidQ = q.bids[i].price, q.bids[i].quantity
        if i < len(q.asks):
            level.askP, level.askQ = q.asks[i].price, q.asks[i].quantity
    _fill_day_candle(market.marketOHLC, q)
    market.atp = q.average_price
    market.vtt = q.volume
    market.tbq = float(q.buy_quantity)
    market.tsq = float(q.sell_quantity)
    market.oi = float(q.oi)


def _fill_index_full(index: Any, q: Quote) -> None:
    # An index has no ltq: Upstox sends its LTPC with ltp, ltt and cp only.
    index.ltpc.ltp = q.ltp
    index.ltpc.ltt = q.last_trade_time * 1000
    index.ltpc.cp = q.close
    _fill_day_candle(index.marketOHLC, q)


def _fill_greeks(greeks: Any, q: Quote) -> None:
    _fill_ltpc(greeks.ltpc, q)
    greeks.firstDepth.SetInParent()  # the first level is always there, all zeros when the book is empty
    if q.bids:
        greeks.firstDepth.bidP, greeks.firstDepth.bidQ = q.bids[0].price, q.bids[0].quantity
    if q.asks:
        greeks.firstDepth.askP, greeks.firstDepth.askQ = q.asks[0].price, q.asks[0].quantity
    greeks.vtt = q.volume
    greeks.oi = float(q.oi)


def feed_message(q: Quote, mode: str) -> Any:
    """The ``Feed`` for one instrument in a subscription ``mode`` (``ltpc``, ``full``, ...).

    An index in any mode but ``ltpc`` gets an index full feed; ``option_greeks`` carries the first
    depth level and zero greeks.
    """
    if mode not in _REQUEST_MODES:
        raise ValueError(f"mode: expected one of {', '.join(FEED_MODES)}, got {mode!r}")
    feed = _pb.Feed(requestMode=_REQUEST_MODES[mode])
    if mode == "ltpc":
        _fill_ltpc(feed.ltpc, q)
    elif q.instrument.is_index:
        feed.requestMode = _pb.full_d30 if mode == "full_d30" else _pb.full_d5
        _fill_index_full(feed.fullFeed.indexFF, q)
    elif mode == "option_greeks":
        _fill_greeks(feed.firstLevelWithGreeks, q)
    else:
        _fill_market_full(feed.fullFeed.marketFF, q)
    return feed


def feed_frame(quotes: list[tuple[Quote, str]], *, initial: bool) -> bytes:
    """One FeedResponse frame: a snapshot (``initial_feed``) or a ``live_feed`` of (quote, mode) pairs."""
    response = _pb.FeedResponse(type=_pb.initial_feed if initial else _pb.live_feed, currentTs=now_ms())
    for q, mode in quotes:
        response.feeds[q.instrument.upstox_key].CopyFrom(feed_message(q, mode))
    data: bytes = response.SerializeToString()
    return data


def market_info_frame() -> bytes:
    """The first frame on every feed connection: every segment open for trading."""
    response = _pb.FeedResponse(type=_pb.market_info, currentTs=now_ms())
    for segment in SEGMENTS:
        response.marketInfo.segmentStatus[segment] = _pb.NORMAL_OPEN
    data: bytes = response.SerializeToString()
    return data
