"""The simulator's Upstox V3 frames read alike by the SDK's own streamer and by the app's decoder.

The simulator builds its frames with its own code on the SDK's protobuf schema; the SDK's streamer
(FromString + MessageToDict, handed each frame as its socket would) says what a frame carries, and the
app's decoder must read the same prices from it. Neither side's encoder is the app's.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.services.simulator.quote_strategies import FAST, INDEX, INSTRUMENTS, OPTION, STOCK, books
from tests.upstox_sdk import sdk_message
from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers.upstox_codec import decode_message
from trailstop_gui.simulator.market import Market, Quote
from trailstop_gui.simulator.upstox_frames import FEED_MODES, feed_frame, market_info_frame


def _int(fields: dict[str, Any], name: str) -> int:
    return int(fields.get(name, "0"))  # MessageToDict gives int64 as text and leaves zeros out


def _ts(ltpc: dict[str, Any]) -> float | None:
    ltt = _int(ltpc, "ltt")
    return ltt / 1000 if ltt > 0 else None


def sdk_tick(key: str, feed: dict[str, Any]) -> Tick:
    """What a reader of the SDK's dict takes from one feed: price, best bid/ask, volume, trade time."""
    if "ltpc" in feed:
        ltpc = feed["ltpc"]
        return Tick(key, ltpc["ltp"], None, None, None, _ts(ltpc))
    if "firstLevelWithGreeks" in feed:
        greeks = feed["firstLevelWithGreeks"]
        depth = greeks.get("firstDepth", {})
        bid, ask = depth.get("bidP"), depth.get("askP")
        return Tick(key, greeks["ltpc"]["ltp"], bid, ask, _int(greeks, "vtt"), _ts(greeks["ltpc"]))
    full = feed["fullFeed"]
    if "indexFF" in full:
        ltpc = full["indexFF"]["ltpc"]
        return Tick(key, ltpc["ltp"], None, None, None, _ts(ltpc))
    market = full["marketFF"]
    best = market["marketLevel"]["bidAskQuote"][0]
    return Tick(
        key,
        market["ltpc"]["ltp"],
        best.get("bidP"),
        best.get("askP"),
        _int(market, "vtt"),
        _ts(market["ltpc"]),
    )


def expected_tick(q: Quote, mode: str) -> Tick:
    """The tick a quote should become in ``mode``: what the Upstox docs say each mode carries."""
    key = q.instrument.upstox_key
    ts = float(q.last_trade_time) if q.last_trade_time > 0 else None
    if mode == "ltpc" or q.instrument.is_index:
        return Tick(key, q.ltp, None, None, None, ts)
    return Tick(key, q.ltp, q.bid or None, q.ask or None, q.volume, ts)


@FAST
@given(pairs=books(FEED_MODES), initial=st.booleans())
def test_the_sdk_and_the_app_read_the_same_ticks_from_every_frame(
    pairs: list[tuple[Quote, str]], initial: bool
) -> None:
    frame = feed_frame(pairs, initial=initial)

    message = sdk_message(frame)
    # MessageToDict leaves an enum's zero out: initial_feed is 0.
    assert message.get("type", "initial_feed") == ("initial_feed" if initial else "live_feed")
    by_sdk = {key: sdk_tick(key, feed) for key, feed in message["feeds"].items()}
    by_app = {tick.instrument: tick for tick in decode_message(frame)}
    expected = {q.instrument.upstox_key: expected_tick(q, mode) for q, mode in pairs}
    assert by_sdk == expected
    assert by_app == expected


@pytest.mark.parametrize("mode", FEED_MODES)
def test_each_mode_carries_what_upstox_documents_for_it(mode: str) -> None:
    market = Market(INSTRUMENTS, random.Random(5), clock=lambda: 1_796_548_963.0)
    for _ in range(3):
        market.step()
    stock, option, index = (market.quote(i) for i in (STOCK, OPTION, INDEX))
    feeds = sdk_message(feed_frame([(stock, mode), (option, mode), (index, mode)], initial=False))["feeds"]

    stock_feed, index_feed = feeds[STOCK.upstox_key], feeds[INDEX.upstox_key]
    # MessageToDict leaves the enum's zero (ltpc) out; an index has only full feeds.
    assert stock_feed.get("requestMode", "ltpc") == {"full": "full_d5"}.get(mode, mode)
    if mode == "ltpc":
        for q, feed in ((stock, stock_feed), (index, index_feed)):
            ltpc = feed["ltpc"]
            assert (ltpc["ltp"], _int(ltpc, "ltt"), _int(ltpc, "ltq"), ltpc["cp"]) == (
                q.ltp,
                q.last_trade_time * 1000,
                q.last_quantity,
                q.close,
            )
        return
    assert index_feed["requestMode"] == ("full_d30" if mode == "full_d30" else "full_d5")
    index_full = index_feed["fullFeed"]["indexFF"]
    assert (index_full["ltpc"]["ltp"], _int(index_full["ltpc"], "ltt"), index_full["ltpc"]["cp"]) == (
        index.ltp,
        index.last_trade_time * 1000,
        index.close,
    )
    assert index_full["marketOHLC"]["ohlc"][0]["interval"] == "1d"
    if mode == "option_greeks":
        greeks = feeds[OPTION.upstox_key]["firstLevelWithGreeks"]
        assert greeks["firstDepth"] == {
            "bidP": option.bids[0].price,
            "bidQ": str(option.bids[0].quantity),
            "askP": option.asks[0].price,
            "askQ": str(option.asks[0].quantity),
        }
        assert _int(greeks, "vtt") == option.volume and greeks["oi"] == option.oi
        return
    full = stock_feed["fullFeed"]["marketFF"]
    levels = full["marketLevel"]["bidAskQuote"]
    assert [(lv["bidP"], _int(lv, "bidQ")) for lv in levels] == [(b.price, b.quantity) for b in stock.bids]
    assert [(lv["askP"], _int(lv, "askQ")) for lv in levels] == [(a.price, a.quantity) for a in stock.asks]
    day = full["marketOHLC"]["ohlc"][0]
    assert (day["interval"], day["open"], day["high"], day["low"], day["close"]) == (
        "1d",
        stock.open,
        stock.high,
        stock.low,
        stock.ltp,
    )
    # The day candle starts at midnight India time (epoch ms).
    assert (_int(day, "ts") // 1000 + 19800) % 86400 == 0
    assert (full["atp"], _int(full, "vtt"), full["tbq"], full["tsq"]) == (
        stock.average_price,
        stock.volume,
        stock.buy_quantity,
        stock.sell_quantity,
    )
    assert feeds[OPTION.upstox_key]["fullFeed"]["marketFF"]["oi"] == option.oi


def test_an_empty_book_gives_no_bid_or_ask_to_either_reader() -> None:
    q = Quote(
        STOCK,
        1500.0,
        10,
        1500.0,
        100,
        0,
        0,
        1490.0,
        1510.0,
        1480.0,
        1495.0,
        (),
        (),
        1_796_548_963,
        1_796_548_963,
    )
    for mode in ("full", "option_greeks"):
        frame = feed_frame([(q, mode)], initial=True)
        (app_tick,) = decode_message(frame)
        sdk = sdk_tick(STOCK.upstox_key, sdk_message(frame)["feeds"][STOCK.upstox_key])
        assert app_tick == sdk == Tick(STOCK.upstox_key, 1500.0, None, None, 100, 1_796_548_963.0)


def test_the_market_info_frame_opens_every_segment_and_carries_no_ticks() -> None:
    frame = market_info_frame()
    message = sdk_message(frame)
    assert message["type"] == "market_info"
    assert set(message["marketInfo"]["segmentStatus"].values()) == {"NORMAL_OPEN"}
    assert {"NSE_EQ", "NSE_FO", "NSE_INDEX"} <= set(message["marketInfo"]["segmentStatus"])
    assert decode_message(frame) == []
