"""Upstox V3 decoder: agrees with the SDK's FromString + MessageToDict path, rejects malformed frames."""

from __future__ import annotations

import math
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb

from tests.upstox_sdk import sdk_message
from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers import upstox_feed
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError
from trailstop_gui.services.brokers.upstox_codec import (
    UpstoxMode,
    build_feed,
    decode_message,
    encode_feeds,
    encode_frame,
    encode_market_info_frame,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES: tuple[UpstoxMode, ...] = get_args(UpstoxMode)


def sdk_ticks(frame: bytes) -> dict[str, tuple[object, ...]]:
    """What the ticks should hold, read from the SDK's dict."""
    message = sdk_message(frame)
    if message.get("type") == "market_info":
        return {}
    out: dict[str, tuple[object, ...]] = {}
    for key, feed in message.get("feeds", {}).items():
        best: dict[str, Any] = {}
        volume = None
        if "ltpc" in feed:
            ltpc = feed["ltpc"]
        elif "marketFF" in feed.get("fullFeed", {}):
            market = feed["fullFeed"]["marketFF"]
            ltpc = market.get("ltpc", {})
            best = (market.get("marketLevel", {}).get("bidAskQuote") or [{}])[0]
            volume = int(market.get("vtt", 0))
        elif "indexFF" in feed.get("fullFeed", {}):
            ltpc = feed["fullFeed"]["indexFF"].get("ltpc", {})
        elif "firstLevelWithGreeks" in feed:
            greeks = feed["firstLevelWithGreeks"]
            ltpc = greeks.get("ltpc", {})
            best = greeks.get("firstDepth", {})
            volume = int(greeks.get("vtt", 0))
        else:
            continue
        ltt = int(ltpc.get("ltt", 0))
        ts = ltt / 1000 if ltt > 0 else None
        out[key] = (ltpc.get("ltp", 0.0), best.get("bidP") or None, best.get("askP") or None, volume, ts)
    return out


def as_json(value: object) -> object:
    """Non-finite doubles the way MessageToDict writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def decoded(frame: bytes) -> dict[str, tuple[object, ...]]:
    ticks = decode_message(frame)
    by_key = {t.instrument: tuple(as_json(v) for v in (t.ltp, t.bid, t.ask, t.volume, t.ts)) for t in ticks}
    assert len(by_key) == len(ticks)
    assert all(isinstance(key, str) for key in by_key)
    return {str(key): value for key, value in by_key.items()}


# ---------------------------------------------------------------------------------------- generated frames

finite = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(-(2**63), 2**63 - 1)
instrument_keys = st.one_of(
    st.sampled_from(["NSE_EQ|INE009A01021", "NSE_FO|45450", "NSE_INDEX|Nifty 50", "BSE_EQ|INE002A01018"]),
    st.text(max_size=30),
)


def fill_ltpc(draw: st.DrawFn, ltpc: Any) -> None:
    ltpc.ltp = draw(finite)
    ltpc.ltt = draw(st.one_of(st.just(0), int64))
    ltpc.ltq = draw(int64)
    ltpc.cp = draw(finite)


def fill_quote(draw: st.DrawFn, quote: Any) -> None:
    quote.bidQ, quote.askQ = draw(int64), draw(int64)
    quote.bidP = draw(st.one_of(st.just(0.0), finite))
    quote.askP = draw(st.one_of(st.just(0.0), finite))


@st.composite
def sdk_feeds(draw: st.DrawFn) -> Any:
    """A Feed built field by field with the SDK's classes (not through the encoder under test)."""
    feed = pb.Feed(requestMode=draw(st.sampled_from([0, 1, 2, 3])))
    kind = draw(st.sampled_from(["ltpc", "market", "index", "greeks", "empty_full", "none"]))
    if kind == "ltpc":
        fill_ltpc(draw, feed.ltpc)
    elif kind == "market":
        market = feed.fullFeed.marketFF
        if draw(st.booleans()):
            fill_ltpc(draw, market.ltpc)
        for _ in range(draw(st.integers(0, 5))):
            fill_quote(draw, market.marketLevel.bidAskQuote.add())
        market.vtt = draw(int64)
        market.atp, market.oi, market.tbq, market.tsq = (draw(finite) for _ in range(4))
        for interval in draw(st.lists(st.sampled_from(["1d", "I1", "I30"]), max_size=2)):
            market.marketOHLC.ohlc.add(
                interval=interval, open=draw(finite), close=draw(finite), vol=draw(int64)
            )
    elif kind == "index":
        index = feed.fullFeed.indexFF
        fill_ltpc(draw, index.ltpc)
        index.marketOHLC.ohlc.add(interval="1d", high=draw(finite))
    elif kind == "greeks":
        greeks = feed.firstLevelWithGreeks
        fill_ltpc(draw, greeks.ltpc)
        if draw(st.booleans()):
            fill_quote(draw, greeks.firstDepth)
        greeks.vtt = draw(int64)
        greeks.optionGreeks.delta, greeks.iv = draw(finite), draw(finite)
    elif kind == "empty_full":
        feed.fullFeed.SetInParent()
    return feed


@st.composite
def sdk_frames(draw: st.DrawFn) -> bytes:
    response = pb.FeedResponse(type=draw(st.sampled_from([0, 1, 2])), currentTs=draw(int64))
    for key, feed in draw(st.dictionaries(instrument_keys, sdk_feeds(), max_size=8)).items():
        response.feeds[key].CopyFrom(feed)
    if draw(st.booleans()):
        response.marketInfo.segmentStatus["NSE_EQ"] = pb.NORMAL_OPEN
    return bytes(response.SerializeToString())


@FAST
@given(sdk_frames())
def test_generated_frames_match_sdk_path(frame: bytes) -> None:
    assert decoded(frame) == sdk_ticks(frame)


@FAST
@given(st.dictionaries(instrument_keys, sdk_feeds(), min_size=1, max_size=8))
def test_live_frames_give_one_tick_per_priced_feed(feeds: dict[str, Any]) -> None:
    response = pb.FeedResponse(type=pb.live_feed)
    for key, feed in feeds.items():
        response.feeds[key].CopyFrom(feed)
    frame = response.SerializeToString()
    expected = sdk_ticks(frame)
    assert decoded(frame) == expected
    assert set(expected) == {key for key, feed in feeds.items() if carries_price(feed)}


def carries_price(feed: Any) -> bool:
    kind = feed.WhichOneof("FeedUnion")
    return kind is not None and (kind != "fullFeed" or feed.fullFeed.WhichOneof("FullFeedUnion") is not None)


# ---------------------------------------------------------------------------------------- encoders


@st.composite
def ticks_for(draw: st.DrawFn, mode: UpstoxMode) -> list[Tick]:
    """Ticks holding exactly what ``mode`` carries, so decode(encode(x)) must give x back."""
    keys = draw(st.lists(instrument_keys, unique=True, max_size=8))
    out = []
    for key in keys:
        ltp = draw(finite)
        ts = draw(st.one_of(st.none(), st.integers(1, 2**53).map(lambda ms: ms / 1000)))
        if mode in ("ltpc", "index"):
            out.append(Tick(key, ltp, ts=ts))
            continue
        nonzero = finite.filter(bool)
        bid, ask = draw(st.one_of(st.none(), nonzero)), draw(st.one_of(st.none(), nonzero))
        out.append(Tick(key, ltp, bid, ask, draw(int64), ts))
    return out


@FAST
@given(st.sampled_from(MODES).flatmap(lambda mode: st.tuples(st.just(mode), ticks_for(mode))))
def test_decode_of_encoded_frame_round_trips(case: tuple[UpstoxMode, list[Tick]]) -> None:
    mode, ticks = case
    frame = encode_frame(ticks, mode)
    assert sorted(decode_message(frame), key=lambda t: str(t.instrument)) == sorted(
        ticks, key=lambda t: str(t.instrument)
    )
    assert decoded(frame) == sdk_ticks(frame)


def test_encoded_modes_use_the_documented_messages() -> None:
    tick = Tick("NSE_EQ|INE009A01021", 1500.5, 1500.45, 1500.55, 12345, 1_700_000_000.25)
    shapes = {}
    for mode in MODES:
        feed = pb.Feed.FromString(build_feed(tick, mode).SerializeToString())
        union = feed.WhichOneof("FeedUnion")
        shapes[mode] = (union, feed.fullFeed.WhichOneof("FullFeedUnion") if union == "fullFeed" else None)
    assert shapes == {
        "ltpc": ("ltpc", None),
        "full": ("fullFeed", "marketFF"),
        "index": ("fullFeed", "indexFF"),
        "option_greeks": ("firstLevelWithGreeks", None),
    }
    message = sdk_message(encode_frame([tick], "full", current_ts_ms=7))
    market = message["feeds"][tick.instrument]["fullFeed"]["marketFF"]
    assert market["ltpc"] == {"ltp": tick.ltp, "ltt": str(round(1_700_000_000.25 * 1000))}
    assert market["marketLevel"]["bidAskQuote"][0] == {"bidP": tick.bid, "askP": tick.ask}
    assert (market["vtt"], message["type"], message["currentTs"]) == (str(tick.volume), "live_feed", "7")


def test_initial_feed_frames_decode_like_live_ones() -> None:
    ticks = [Tick("NSE_EQ|INE009A01021", 1500.5, 1500.45, 1500.55, 12345, 1_700_000_000.0)]
    assert decode_message(encode_frame(ticks, "full", feed_type="initial_feed")) == ticks
    assert decode_message(encode_frame(ticks, "full", feed_type="live_feed")) == ticks


def test_market_info_frame_gives_no_ticks() -> None:
    frame = encode_market_info_frame({"NSE_EQ": "NORMAL_OPEN", "NSE_FO": "PRE_OPEN_START"}, current_ts_ms=1)
    message = sdk_message(frame)
    assert message["type"] == "market_info"
    assert message["marketInfo"]["segmentStatus"] == {"NSE_EQ": "NORMAL_OPEN", "NSE_FO": "PRE_OPEN_START"}
    assert decode_message(frame) == []
    # Even if a market_info frame carried feeds, it is not a price update.
    response = pb.FeedResponse.FromString(frame)
    response.feeds["NSE_EQ|INE009A01021"].ltpc.ltp = 1.0
    assert decode_message(response.SerializeToString()) == []


def test_feed_with_nothing_set_gives_no_tick() -> None:
    frame = encode_feeds({"A": pb.Feed(requestMode=pb.full_d5), "B": build_feed(Tick("B", 2.0), "ltpc")})
    assert decode_message(frame) == [Tick("B", 2.0)]


def test_encoders_reject_what_they_cannot_send() -> None:
    with pytest.raises(ValueError, match="string"):
        encode_frame([Tick(408065, 1.0)], "ltpc")
    with pytest.raises(ValueError, match="mode"):
        build_feed(Tick("A", 1.0), "quote")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NORMAL_OPEN"):
        encode_market_info_frame({"NSE_EQ": "open"})


def test_feed_module_reexports_decoder() -> None:
    assert upstox_feed.decode_message is decode_message


def test_empty_frame_gives_no_ticks() -> None:
    # Upstox has no binary heartbeat; an empty frame is an empty FeedResponse.
    assert decode_message(b"") == []


# ---------------------------------------------------------------------------------------- malformed input

GOOD = encode_frame([Tick("NSE_EQ|INE009A01021", 1500.5, 1500.45, 1500.55, 12345, 1.0)], "full")


@pytest.mark.parametrize(
    "frame",
    [
        GOOD[:-1],
        GOOD[: len(GOOD) // 2],
        b"\x12\x05\n\x03\xff\xfe\xfd",  # a feeds entry whose key is not UTF-8
        b"\x0f",  # wire type 7 does not exist
        b"\x12\x80",  # a length that never ends
        b"\x12\x7f" + bytes(3),  # a length beyond the frame
        b"\x08\x01" + b"{'type': 1}",
    ],
)
def test_malformed_frame_raises_feed_decode_error(frame: bytes) -> None:
    with pytest.raises(FeedDecodeError, match="not a FeedResponse"):
        decode_message(frame)


@pytest.mark.parametrize("value", ['{"type": "live_feed"}', None, 3, [1]])
def test_non_bytes_argument_raises_feed_error(value: Any) -> None:
    with pytest.raises(FeedDecodeError, match="expected a binary frame"):
        decode_message(value)


def test_buffer_types_decode_alike() -> None:
    expected = decode_message(GOOD)
    assert expected
    assert decode_message(bytearray(GOOD)) == expected
    assert decode_message(memoryview(GOOD)) == expected


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(sdk_frames()))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(frame)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert":
            frame[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif where < len(frame):
            if action == "flip":
                frame[where] ^= draw(st.integers(1, 255))
            else:
                del frame[where : where + draw(st.integers(1, 8))]
    return bytes(frame)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_frames(), st.binary(max_size=300)))
def test_mutated_input_raises_only_feed_decode_error(frame: bytes) -> None:
    try:
        result = decoded(frame)
    except FeedDecodeError:
        with pytest.raises(Exception):  # noqa: B017 - the SDK must reject it too, with whatever it raises
            sdk_message(frame)
        return
    assert result == sdk_ticks(frame)
