"""Fuzzing the feed decoders as the feed loop uses them: nothing but FeedDecodeError, never a wrong tick.

The binary decoders have their own SDK-equivalence properties (test_kite_codec, test_upstox_codec). These
go through what the FeedLoop actually calls for every WebSocket message, binary or text (``decode`` of
KiteFeed, UpstoxFeed and UpstoxPortfolioFeed, and the loop's own handler), with random and mutated
messages, and check valid messages built without our encoders against the ticks they carry.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb

from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers import kite_feed, upstox_feed
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError
from trailstop_gui.services.brokers.feed_loop import FeedBatch, FeedLoop, OrderUpdate
from trailstop_gui.services.brokers.kite_feed import KiteFeed
from trailstop_gui.services.brokers.upstox_feed import UpstoxFeed, UpstoxPortfolioFeed

# Thousands of generated cases: make test runs them, make unit's quick loop leaves them out.
pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KITE = KiteFeed("api_key", lambda: "token", "ws://127.0.0.1:1/kite-ws")
UPSTOX = UpstoxFeed(lambda: "token", "http://127.0.0.1:1")
PORTFOLIO = UpstoxPortfolioFeed(lambda: "token", "http://127.0.0.1:1")
PROTOCOLS = (KITE, UPSTOX, PORTFOLIO)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.sampled_from(["", "0", "12.5", "-1", "1e999", "NaN", "inf", "COMPLETE", "TSAB12", "1,000"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
ORDER_FIELDS = ["order_id", "status", "tag", "filled_quantity", "average_price", "quantity", "update_type"]
order_payloads = st.dictionaries(st.sampled_from(ORDER_FIELDS) | st.text(max_size=6), json_values, max_size=8)


def check_batch(batch: FeedBatch) -> None:
    """What comes out is well formed: ticks and order updates with finite numbers where it matters."""
    assert isinstance(batch, FeedBatch)
    for tick in batch.ticks:
        assert isinstance(tick, Tick)
    for update in batch.orders:
        assert isinstance(update, OrderUpdate)
        assert (
            isinstance(update.order_id, str)
            and isinstance(update.status, str)
            and isinstance(update.tag, str)
        )
        assert isinstance(update.filled_quantity, int)
        assert math.isfinite(update.average_price)


def decode_or_refuse(protocol: Any, message: str | bytes) -> None:
    try:
        batch = protocol.decode(message)
    except FeedDecodeError:
        return
    check_batch(batch)


# ------------------------------------------------------------------------ anything at all, any protocol


@FUZZ
@given(st.one_of(st.binary(max_size=600), st.text(max_size=300)))
def test_random_messages_give_only_the_documented_error(message: str | bytes) -> None:
    for protocol in PROTOCOLS:
        decode_or_refuse(protocol, message)


@FUZZ
@given(json_values, st.sampled_from(["order", "error", "message", None, 7, "ORDER"]), order_payloads)
def test_json_shaped_messages_give_only_the_documented_error(data: Any, kind: Any, payload: Any) -> None:
    for message in (
        json.dumps({"type": kind, "data": data}),
        json.dumps({"type": "order", "data": payload}),
        json.dumps(dict(payload, update_type="order")),
        json.dumps(data),
    ):
        decode_or_refuse(KITE, message)
        decode_or_refuse(PORTFOLIO, message)
        decode_or_refuse(PORTFOLIO, message.encode())


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for protocol in (KITE, PORTFOLIO):
        decode_or_refuse(protocol, deep)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=100)), max_size=20))
def test_the_feed_loop_skips_whatever_it_cannot_read(messages: list[str | bytes]) -> None:
    """The loop's handler never lets an exception out (that would end the socket's session)."""
    batches: list[FeedBatch] = []
    for protocol in PROTOCOLS:
        loop = FeedLoop(protocol, on_batch=batches.append)
        for message in messages:
            loop._handle(message)
        assert loop.decode_errors <= len(messages)
    for batch in batches:
        check_batch(batch)


# ------------------------------------------------------------------------ order updates: exact when valid


@FUZZ
@given(
    st.text(st.characters(codec="ascii", categories=["Nd"]), min_size=1, max_size=16),
    st.sampled_from(["OPEN", "COMPLETE", "CANCELLED", "REJECTED", "TRIGGER PENDING"]),
    st.text(st.characters(codec="ascii", categories=["Lu", "Nd"]), max_size=20),
    st.integers(0, 10**7),
    st.decimals(0, 10**6, places=2, allow_nan=False),
    st.booleans(),
)
def test_a_valid_order_update_is_read_exactly(
    order_id: str, status: str, tag: str, filled: int, price: Any, as_strings: bool
) -> None:
    data: dict[str, Any] = {
        "order_id": order_id,
        "status": status,
        "tag": tag or None,
        "filled_quantity": str(filled) if as_strings else filled,
        "average_price": str(price) if as_strings else float(price),
    }
    expected = (order_id, status, tag, filled, float(price))
    (kite,) = KITE.decode(json.dumps({"type": "order", "data": data})).orders
    (upstox,) = PORTFOLIO.decode(json.dumps(dict(data, update_type="order"))).orders
    for update in (kite, upstox):
        assert (
            update.order_id,
            update.status,
            update.tag,
            update.filled_quantity,
            update.average_price,
        ) == expected


# ------------------------------------------------------------------------ market data: exact when valid

# Kite segments and their price divisors (PROTOCOLS.md), written out here rather than taken from the codec.
SEGMENT_DIVISOR = {1: 100.0, 2: 100.0, 3: 10_000_000.0, 4: 100.0, 6: 10_000.0, 7: 100.0, 12: 10_000.0}


@st.composite
def kite_packets(draw: st.DrawFn) -> tuple[bytes, tuple[int, float, float | None, float | None]]:
    """One quote or full packet laid out by hand, and the (token, ltp, bid, ask) it must decode to."""
    segment = draw(st.sampled_from(sorted(SEGMENT_DIVISOR)))
    token = draw(st.integers(1, 0xFFFFFF)) << 8 | segment
    divisor = SEGMENT_DIVISOR[segment]
    ltp, bid, ask = (draw(st.integers(0, 0xFFFFFFFF)) for _ in range(3))
    volume = draw(st.integers(0, 0xFFFFFFFF))
    quote = struct.pack(">IIIIIIIIIII", token, ltp, 1, ltp, volume, 5, 6, ltp, ltp, ltp, ltp)
    if draw(st.booleans()):
        return quote, (token, ltp / divisor, None, None)
    depth = b"".join(struct.pack(">IIH2x", 10, price, 1) for price in (bid, *([bid] * 4), ask, *([ask] * 4)))
    full = quote + struct.pack(">IIIII", 0, 0, 0, 0, 0) + depth
    assert len(full) == 184
    return full, (token, ltp / divisor, bid / divisor or None, ask / divisor or None)


@FUZZ
@given(st.lists(kite_packets(), max_size=8))
def test_a_valid_kite_message_gives_exactly_its_ticks(packets: list[tuple[bytes, Any]]) -> None:
    message = struct.pack(">H", len(packets)) + b"".join(
        struct.pack(">H", len(body)) + body for body, _ in packets
    )
    ticks = KITE.decode(message).ticks
    assert [(t.instrument, t.ltp, t.bid, t.ask) for t in ticks] == [want for _, want in packets]
    assert kite_feed.decode_message(message) == ticks


finite_prices = st.floats(0.01, 1e7, allow_nan=False, allow_infinity=False)


@st.composite
def upstox_frames(draw: st.DrawFn) -> tuple[bytes, dict[str, tuple[float, float | None, float | None]]]:
    """A FeedResponse built with the SDK's own protobuf classes, and the (ltp, bid, ask) per key."""
    response = pb.FeedResponse(type=pb.live_feed)
    expected: dict[str, tuple[float, float | None, float | None]] = {}
    for key in draw(
        st.lists(st.sampled_from(["NSE_EQ|INE009A01021", "NSE_FO|53001", "BSE_EQ|X"]), unique=True)
    ):
        ltp = draw(finite_prices)
        feed = response.feeds[key]
        if draw(st.booleans()):
            feed.ltpc.ltp = ltp
            expected[key] = (ltp, None, None)
        else:
            bid, ask = draw(finite_prices), draw(finite_prices)
            market = feed.fullFeed.marketFF
            market.ltpc.ltp = ltp
            quote = market.marketLevel.bidAskQuote.add()
            quote.bidP, quote.askP = bid, ask
            expected[key] = (ltp, bid, ask)
    return response.SerializeToString(), expected


@FUZZ
@given(upstox_frames())
def test_a_valid_upstox_frame_gives_exactly_its_ticks(case: tuple[bytes, dict[str, Any]]) -> None:
    frame, expected = case
    ticks = UPSTOX.decode(frame).ticks
    assert {t.instrument: (t.ltp, t.bid, t.ask) for t in ticks} == expected
    assert upstox_feed.decode_message(frame) == ticks


@FUZZ
@given(upstox_frames(), st.data())
def test_a_mutated_upstox_frame_gives_only_the_documented_error(
    case: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    frame = bytearray(case[0])
    for _ in range(data.draw(st.integers(1, 3))):
        if not frame:
            break
        where = data.draw(st.integers(0, len(frame) - 1))
        choice = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if choice == "flip":
            frame[where] ^= data.draw(st.integers(1, 255))
        elif choice == "cut":
            del frame[where:]
        else:
            frame[where:where] = data.draw(st.binary(min_size=1, max_size=6))
    decode_or_refuse(UPSTOX, bytes(frame))
