"""Kite ticker decoder: agrees with KiteTicker._parse_binary, rejects malformed input, encoders round-trip."""

from __future__ import annotations

import dataclasses
import struct
from datetime import datetime
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from tests.kite_mocks import kite_mock_json, kite_mock_packet
from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers import kite_feed
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError
from trailstop_gui.services.brokers.kite_codec import (
    HEARTBEAT,
    DepthLevel,
    KiteMode,
    KiteQuote,
    decode_message,
    encode_full_packet,
    encode_message,
    encode_packet,
    encode_ticks,
    is_index,
    price_divisor,
)

PACKET_LENGTHS = (8, 28, 32, 44, 184)
NAMED_SEGMENTS = sorted(set(KiteTicker.EXCHANGE_MAP.values()))
MODES: tuple[KiteMode, ...] = get_args(KiteMode)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TICKER = KiteTicker("api_key", "access_token")  # never connected: only its parser is used


def frame(packets: list[bytes]) -> bytes:
    """Message framing written out here so the oracle does not depend on the encoder under test."""
    return struct.pack(">H", len(packets)) + b"".join(struct.pack(">H", len(p)) + p for p in packets)


def sdk_view(packet: dict[str, Any]) -> tuple[object, ...]:
    """What a Tick should hold, read from the SDK's dict for one packet."""
    depth = packet.get("depth")
    bid = depth["buy"][0]["price"] if depth else None
    ask = depth["sell"][0]["price"] if depth else None
    stamp = packet.get("exchange_timestamp")
    if stamp == datetime.fromtimestamp(0):
        stamp = None  # the packet carried 0: no timestamp
    return (packet["instrument_token"], packet["last_price"], bid or None, ask or None,
            packet.get("volume_traded"), stamp)  # fmt: skip


def tick_view(tick: Tick) -> tuple[object, ...]:
    stamp = datetime.fromtimestamp(tick.ts) if tick.ts is not None else None
    return (tick.instrument, tick.ltp, tick.bid, tick.ask, tick.volume, stamp)


def assert_same_as_sdk(message: bytes) -> list[Tick]:
    ticks = decode_message(message)
    expected = TICKER._parse_binary(message)
    assert [tick_view(t) for t in ticks] == [sdk_view(p) for p in expected]
    for tick in ticks:
        assert type(tick.ltp) is float
        assert tick.ts is None or type(tick.ts) is float
    return ticks


def mock_message(name: str) -> bytes:
    packet = kite_mock_packet(f"ticker_{name}.packet")
    return struct.pack(">HH", 1, len(packet)) + packet


# ---------------------------------------------------------------------------------------- real packets


@pytest.mark.parametrize("name", ["full", "quote"])
def test_real_packet_matches_sdk(name: str) -> None:
    ticks = assert_same_as_sdk(mock_message(name))
    assert len(ticks) == 1


def test_real_full_packet_matches_published_json() -> None:
    (tick,) = decode_message(mock_message("full"))
    published = kite_mock_json("ticker_full.json")
    assert tick.instrument == published["instrument_token"]
    assert tick.ltp == published["last_price"]
    assert tick.bid == published["depth"]["buy"][0]["price"]
    assert tick.ask == published["depth"]["sell"][0]["price"]
    assert tick.volume == published["volume"]
    assert tick.ts == datetime.fromisoformat(published["timestamp"]).timestamp()


def test_real_quote_packet_matches_published_json() -> None:
    (tick,) = decode_message(mock_message("quote"))
    published = kite_mock_json("ticker_quote.json")
    assert (tick.instrument, tick.ltp, tick.volume) == (
        published["instrument_token"],
        published["last_price"],
        published["volume"],
    )
    assert (tick.bid, tick.ask, tick.ts) == (None, None, None)


def test_both_real_packets_in_one_message() -> None:
    packets = [kite_mock_packet(f"ticker_{n}.packet") for n in ("full", "quote")]
    ticks = assert_same_as_sdk(frame(packets))
    assert [t.volume for t in ticks] == [p["volume_traded"] for p in TICKER._parse_binary(frame(packets))]


def test_feed_module_reexports_decoder() -> None:
    assert kite_feed.decode_message is decode_message
    assert issubclass(FeedDecodeError, ValueError)


# ---------------------------------------------------------------------------------------- every segment


@pytest.mark.parametrize("length", PACKET_LENGTHS)
def test_every_segment_uses_the_sdk_divisor(length: int) -> None:
    packets = []
    for segment in range(256):
        token = (0x1234 << 8) | segment
        body = bytearray(struct.pack(">I", 123_456_789) * ((length - 4) // 4))
        packets.append(struct.pack(">I", token) + bytes(body))
    ticks = assert_same_as_sdk(frame(packets))
    assert len(ticks) == 256
    # The table PROTOCOLS.md gives, beside the SDK agreement above.
    ltp_by_segment = {int(t.instrument) & 0xFF: t.ltp for t in ticks}
    assert ltp_by_segment[3] == 123_456_789 / 1e7
    assert ltp_by_segment[6] == ltp_by_segment[12] == 123_456_789 / 1e4
    assert {ltp_by_segment[s] for s in (1, 2, 4, 5, 7, 8, 9, 0, 255)} == {123_456_789 / 100}


# ---------------------------------------------------------------------------------------- generated

segments = st.one_of(st.sampled_from(NAMED_SEGMENTS), st.integers(0, 255))
tokens = st.builds(lambda high, seg: (high << 8) | seg, st.integers(0, 0xFFFFFF), segments)


@st.composite
def packets(draw: st.DrawFn, lengths: tuple[int, ...] = PACKET_LENGTHS) -> bytes:
    length = draw(st.sampled_from(lengths))
    body = bytearray(draw(st.binary(min_size=length - 4, max_size=length - 4)))
    if length == 184 and draw(st.booleans()):
        # Empty best levels must come out as None, like a quiet book.
        for offset in (68 - 4, 128 - 4):
            if draw(st.booleans()):
                body[offset : offset + 4] = bytes(4)
    if length in (32, 184) and draw(st.booleans()):
        ts_offset = (28 if length == 32 else 60) - 4
        body[ts_offset : ts_offset + 4] = bytes(4)
    return struct.pack(">I", draw(tokens)) + bytes(body)


@FAST
@given(st.lists(packets(), max_size=12))
def test_generated_messages_match_sdk(message_packets: list[bytes]) -> None:
    ticks = assert_same_as_sdk(frame(message_packets))
    assert len(ticks) == len(message_packets)


@FAST
@given(st.lists(packets((184,)), min_size=1, max_size=10))
def test_generated_full_messages_match_sdk(message_packets: list[bytes]) -> None:
    assert_same_as_sdk(frame(message_packets))


@FAST
@given(st.lists(packets(), max_size=4))
def test_buffer_types_decode_alike(message_packets: list[bytes]) -> None:
    message = frame(message_packets)
    expected = decode_message(message)
    assert decode_message(bytearray(message)) == expected
    assert decode_message(memoryview(message)) == expected
    assert decode_message(memoryview(b"xx" + message)[2:]) == expected


# ------------------------------------------------------------------------------------ heartbeat and errors


@pytest.mark.parametrize("message", [HEARTBEAT, b"\x01", b"\xff"])
def test_one_byte_heartbeat_gives_no_ticks(message: bytes) -> None:
    assert decode_message(message) == []


def test_message_with_no_packets_gives_no_ticks() -> None:
    assert decode_message(b"\x00\x00") == []
    assert TICKER._parse_binary(b"\x00\x00") == []


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (b"", "empty"),
        (b"\x00\x01", "before the length of packet 1"),
        (b"\x00\x01\x00", "before the length of packet 1"),
        (b"\x00\x01\x00\x08" + bytes(7), "declares 8 bytes but only 7 remain"),
        (b"\x00\x01\x00\x0a" + bytes(10), "unknown length 10"),
        (b"\x00\x01\x00\x00", "unknown length 0"),
        (b"\x00\x01\x00\x08" + bytes(9), "1 byte(s) left over"),
        (b"\x00\x00\x00", "1 byte(s) left over"),
        (b"\x00\x02\x00\x08" + bytes(8), "before the length of packet 2 of 2"),
    ],
)
def test_malformed_message_names_the_problem(message: bytes, words: str) -> None:
    with pytest.raises(FeedDecodeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        decode_message(message)


@pytest.mark.parametrize("value", ['{"type": "order"}', None, 7, [1, 2], bytes])
def test_non_bytes_argument_raises_feed_error(value: Any) -> None:
    with pytest.raises(FeedDecodeError, match="expected a binary message"):
        decode_message(value)


@FAST
@given(st.lists(packets(), min_size=1, max_size=5), st.data())
def test_every_truncation_and_extension_is_rejected(
    message_packets: list[bytes], data: st.DataObject
) -> None:
    message = frame(message_packets)
    cut = data.draw(st.integers(2, len(message) - 1))
    with pytest.raises(FeedDecodeError):
        decode_message(message[:cut])
    with pytest.raises(FeedDecodeError):
        decode_message(message + data.draw(st.binary(min_size=1, max_size=200)))


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    message = bytearray(frame(draw(st.lists(packets(), max_size=4))))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        where = draw(st.integers(0, len(message)))
        if action == "insert":
            message[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif message and where < len(message):
            if action == "flip":
                message[where] ^= draw(st.integers(1, 255))
            else:
                del message[where : where + draw(st.integers(1, 8))]
    return bytes(message)


@settings(max_examples=300, deadline=None)
@given(st.one_of(mutated_messages(), st.binary(max_size=400)))
def test_mutated_input_raises_only_feed_decode_error(message: bytes) -> None:
    try:
        ticks = decode_message(message)
    except FeedDecodeError:
        return
    assert all(isinstance(t, Tick) for t in ticks)
    if len(message) > 1:
        assert [tick_view(t) for t in ticks] == [sdk_view(p) for p in TICKER._parse_binary(message)]


# ---------------------------------------------------------------------------------------- encoders


@st.composite
def prices(draw: st.DrawFn, token: int, minimum: int = 0) -> float:
    return draw(st.integers(minimum, 0xFFFFFFFF)) / price_divisor(token)


@st.composite
def ticks_for(draw: st.DrawFn, mode: KiteMode) -> Tick:
    """A Tick holding exactly what ``mode`` carries for its token, so the round trip must be exact."""
    token = draw(tokens)
    ltp = draw(prices(token))
    if mode == "ltp" or (is_index(token) and mode == "quote"):
        return Tick(token, ltp)
    ts = draw(st.one_of(st.none(), st.integers(1, 0xFFFFFFFF).map(float)))
    if mode == "full" and is_index(token):
        return Tick(token, ltp, ts=ts)
    volume = draw(st.integers(0, 0xFFFFFFFF))
    if mode == "quote":
        return Tick(token, ltp, volume=volume)
    bid = draw(st.one_of(st.none(), prices(token, minimum=1)))
    ask = draw(st.one_of(st.none(), prices(token, minimum=1)))
    return Tick(token, ltp, bid, ask, volume, ts)


@FAST
@given(st.sampled_from(MODES).flatmap(lambda mode: st.tuples(st.just(mode), st.lists(ticks_for(mode)))))
def test_decode_of_encoded_ticks_round_trips(case: tuple[KiteMode, list[Tick]]) -> None:
    mode, ticks = case
    assert decode_message(encode_ticks(ticks, mode)) == ticks


def test_encoded_packet_lengths_follow_mode_and_segment() -> None:
    stock, index = KiteQuote(408065, 1.0), KiteQuote(256265, 1.0)
    lengths = {(q.token, m): len(encode_packet(q, m)) for q in (stock, index) for m in MODES}
    assert lengths == {
        (408065, "ltp"): 8,
        (408065, "quote"): 44,
        (408065, "full"): 184,
        (256265, "ltp"): 8,
        (256265, "quote"): 28,
        (256265, "full"): 32,
    }
    assert encode_message([]) == b"\x00\x00"


depth_levels = st.lists(
    st.builds(
        DepthLevel, st.integers(0, 10**9).map(lambda k: k / 100), st.integers(0, 10**6), st.integers(0, 65535)
    ),
    max_size=5,
)


@FAST
@given(
    st.builds(
        KiteQuote,
        token=st.builds(
            lambda h, s: (h << 8) | s, st.integers(0, 0xFFFFFF), st.sampled_from([1, 2, 4, 7, 9])
        ),
        ltp=st.integers(0, 10**9).map(lambda k: k / 100),
        last_quantity=st.integers(0, 10**6),
        average_price=st.integers(0, 10**9).map(lambda k: k / 100),
        volume=st.integers(0, 0xFFFFFFFF),
        buy_quantity=st.integers(0, 10**8),
        sell_quantity=st.integers(0, 10**8),
        open=st.integers(0, 10**9).map(lambda k: k / 100),
        high=st.integers(0, 10**9).map(lambda k: k / 100),
        low=st.integers(0, 10**9).map(lambda k: k / 100),
        close=st.integers(0, 10**9).map(lambda k: k / 100),
        last_trade_time=st.integers(1, 0xFFFFFFFF),
        oi=st.integers(0, 10**8),
        oi_day_high=st.integers(0, 10**8),
        oi_day_low=st.integers(0, 10**8),
        exchange_ts=st.integers(1, 0xFFFFFFFF),
        bids=depth_levels.map(tuple),
        asks=depth_levels.map(tuple),
    )
)
def test_full_packet_encoder_is_read_back_by_sdk(quote: KiteQuote) -> None:
    (parsed,) = TICKER._parse_binary(frame([encode_full_packet(quote)]))
    assert parsed["instrument_token"] == quote.token
    assert parsed["mode"] == "full"
    assert (parsed["last_price"], parsed["average_traded_price"]) == (quote.ltp, quote.average_price)
    assert (parsed["last_traded_quantity"], parsed["volume_traded"]) == (quote.last_quantity, quote.volume)
    assert (parsed["total_buy_quantity"], parsed["total_sell_quantity"]) == (
        quote.buy_quantity,
        quote.sell_quantity,
    )
    assert parsed["ohlc"] == {"open": quote.open, "high": quote.high, "low": quote.low, "close": quote.close}
    assert (parsed["oi"], parsed["oi_day_high"], parsed["oi_day_low"]) == (
        quote.oi,
        quote.oi_day_high,
        quote.oi_day_low,
    )
    assert parsed["last_trade_time"] == datetime.fromtimestamp(quote.last_trade_time)
    assert parsed["exchange_timestamp"] == datetime.fromtimestamp(quote.exchange_ts)
    empty = {"price": 0.0, "quantity": 0, "orders": 0}
    for side, levels in (("buy", quote.bids), ("sell", quote.asks)):
        expected = [{"price": lv.price, "quantity": lv.quantity, "orders": lv.orders} for lv in levels]
        assert parsed["depth"][side] == expected + [empty] * (5 - len(levels))


@pytest.mark.parametrize(
    ("quote", "words"),
    [
        (KiteQuote(408065, -1.0), "ltp"),
        (KiteQuote(408065, float("nan")), "ltp"),
        (KiteQuote(408065, 5e7), "ltp"),
        (KiteQuote(408065, 1.0, volume=-1), "volume"),
        (KiteQuote(408065, 1.0, bids=(DepthLevel(1.0),) * 6), "at most 5"),
        (KiteQuote(408065, 1.0, asks=(DepthLevel(1.0, orders=70000),)), "asks orders"),
        (KiteQuote(2**32, 1.0), "token"),
    ],
)
def test_encoder_rejects_values_the_packet_cannot_hold(quote: KiteQuote, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        encode_packet(quote, "full")


def test_encoder_rejects_upstox_keys_and_fractional_timestamps() -> None:
    with pytest.raises(ValueError, match="token is an int"):
        encode_ticks([Tick("NSE_EQ|INE009A01021", 1.0)], "ltp")
    with pytest.raises(ValueError, match="whole epoch seconds"):
        encode_ticks([Tick(408065, 1.0, ts=1.5)], "full")
    with pytest.raises(ValueError, match="mode"):
        encode_packet(KiteQuote(408065, 1.0), "depth")  # type: ignore[arg-type]


def test_decoded_ticks_are_ordinary_frozen_ticks() -> None:
    # The decoder fills Tick's slots directly (no __init__): the result must be the same object a
    # constructor call gives, every field set, still frozen and hashable.
    packets = [kite_mock_packet(f"ticker_{n}.packet") for n in ("full", "quote")]
    quotes = (KiteQuote(408065, 1520.5, volume=7, exchange_ts=1_700_000_000), KiteQuote(256265, 24000.0))
    packets += [encode_packet(q, m) for q in quotes for m in MODES]
    assert {len(p) for p in packets} == set(PACKET_LENGTHS)  # every layout the decoder builds ticks for
    for tick in decode_message(frame(packets)):
        rebuilt = Tick(tick.instrument, tick.ltp, tick.bid, tick.ask, tick.volume, tick.ts)
        assert tick == rebuilt and hash(tick) == hash(rebuilt) and repr(tick) == repr(rebuilt)
        with pytest.raises(dataclasses.FrozenInstanceError):
            tick.ltp = 0.0  # type: ignore[misc]
