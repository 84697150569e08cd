"""Kite ticker binary messages: a fast decoder to Ticks, and the encoders its tests use.

A message is big-endian: ``uint16 packet_count``, then per packet ``uint16 length`` and ``length`` bytes.
The packet length says the mode: 8 ltp, 28/32 index quote/full, 44 quote, 184 full (layouts in
PROTOCOLS.md). Every field is read as unsigned, exactly as ``KiteTicker._parse_binary`` reads it, and prices
are divided (not multiplied by a reciprocal) by the segment's divisor so the floats come out bit-identical.

Text frames (JSON order updates and errors) are not market data: the feed client hands ``str`` frames to
its JSON handler. Passing one here raises FeedDecodeError like any other malformed message.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers.feed_errors import FeedDecodeError

KiteMode = Literal["ltp", "quote", "full"]

HEARTBEAT: Final = b"\x00"
"""The 1-byte binary message the server sends about once a second."""

LTP_PACKET_LEN: Final = 8
INDEX_QUOTE_PACKET_LEN: Final = 28
INDEX_FULL_PACKET_LEN: Final = 32
QUOTE_PACKET_LEN: Final = 44
FULL_PACKET_LEN: Final = 184
DEPTH_LEVELS: Final = 5

SEGMENT_CDS: Final = 3
SEGMENT_BCD: Final = 6
SEGMENT_INDICES: Final = 9
SEGMENT_NCO: Final = 12

_UINT32_MAX: Final = 0xFFFFFFFF
_UINT16_MAX: Final = 0xFFFF


def _divisor_for_segment(segment: int) -> float:
    # Mirrors KiteTicker._parse_binary: CDS 1e7; BCD and NCO 1e4; every other segment 100.
    if segment == SEGMENT_CDS:
        return 10_000_000.0
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000.0
    return 100.0


# Indexed by token & 0xff: one tuple lookup per packet instead of a chain of comparisons.
_DIVISORS: Final[tuple[float, ...]] = tuple(_divisor_for_segment(s) for s in range(256))


def price_divisor(token: int) -> float:
    """What a price integer of this instrument is divided by to give rupees."""
    return _DIVISORS[token & 0xFF]


def is_index(token: int) -> bool:
    """Segment 9 (indices): quote/full packets are the 28/32-byte index layouts."""
    return token & 0xFF == SEGMENT_INDICES


# ---------------------------------------------------------------------------------------------- decoding

_U16: Final = struct.Struct(">H")
# token @0, ltp @4 (ltp packets and the head of index packets)
_TOKEN_LTP: Final = struct.Struct(">II")
# token @0, ltp @4, exchange_timestamp @28
_INDEX_FULL: Final = struct.Struct(">II20xI")
# token @0, ltp @4, volume @16
_QUOTE: Final = struct.Struct(">II8xI")
# token @0, ltp @4, volume @16, exchange_timestamp @60, best bid price @68, best ask price @128
_FULL: Final = struct.Struct(">II8xI40xI4xI56xI")


# Ticks are built without Tick.__init__: a frozen dataclass's __init__ sets each field through
# object.__setattr__, which was about half of the decoder's time per tick (0.77 us of 1.25). Allocating the
# object and filling its slots through the slot descriptors gives the same object (equal, hashable, frozen
# afterwards) at half the cost. This stays correct only while Tick is exactly these six fields with no
# __post_init__; checked here at import, so a change to Tick fails loudly instead of leaving a slot empty.
_TICK_FIELDS: Final = ("instrument", "ltp", "bid", "ask", "volume", "ts")
if tuple(f.name for f in dataclasses.fields(Tick)) != _TICK_FIELDS or hasattr(Tick, "__post_init__"):
    raise RuntimeError("kite_codec builds Tick by its slots: update it for Tick's new fields")
_NEW: Final = object.__new__
_SET_INSTRUMENT, _SET_LTP, _SET_BID, _SET_ASK, _SET_VOLUME, _SET_TS = (
    Tick.__dict__[name].__set__ for name in _TICK_FIELDS
)


def decode_message(data: bytes | bytearray | memoryview) -> list[Tick]:
    """One Kite ticker binary message -> ticks, in packet order; a heartbeat gives ``[]``.

    ``instrument`` is the int token; ``bid``/``ask`` are the best depth prices of a full packet (None for an
    empty level and for other modes); ``volume`` is set for quote/full packets; ``ts`` is the exchange
    timestamp in epoch seconds for full and index-full packets (None when the packet carries 0).
    Raises FeedDecodeError for anything malformed.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise FeedDecodeError(
                f"Kite feed: expected a binary message (bytes), got {type(data).__name__}; "
                "text frames carry JSON and go to the text handler"
            )
        data = bytes(data)
    size = len(data)
    if size == 1:
        return []
    if size < 2:
        raise FeedDecodeError("Kite feed: empty message (no packet count)")

    unpack_u16 = _U16.unpack_from
    unpack_full = _FULL.unpack_from
    divisors = _DIVISORS
    new, tick_class = _NEW, Tick
    set_instrument, set_ltp, set_bid, set_ask, set_volume, set_ts = (
        _SET_INSTRUMENT,
        _SET_LTP,
        _SET_BID,
        _SET_ASK,
        _SET_VOLUME,
        _SET_TS,
    )
    ticks: list[Tick] = []
    append = ticks.append
    (count,) = unpack_u16(data, 0)
    pos = 2
    for number in range(1, count + 1):
        if pos + 2 > size:
            raise FeedDecodeError(
                f"Kite feed: message ends at byte {size} before the length of packet {number} of {count}"
            )
        (length,) = unpack_u16(data, pos)
        pos += 2
        end = pos + length
        if end > size:
            raise FeedDecodeError(
                f"Kite feed: packet {number} of {count} declares {length} bytes "
                f"but only {size - pos} remain at byte {pos}"
            )
        tick = new(tick_class)
        if length == FULL_PACKET_LEN:
            token, ltp, volume, ts, bid, ask = unpack_full(data, pos)
            divisor = divisors[token & 0xFF]
            set_instrument(tick, token)
            set_ltp(tick, ltp / divisor)
            set_bid(tick, bid / divisor if bid else None)
            set_ask(tick, ask / divisor if ask else None)
            set_volume(tick, volume)
            set_ts(tick, float(ts) if ts else None)
        elif length == QUOTE_PACKET_LEN:
            token, ltp, volume = _QUOTE.unpack_from(data, pos)
            set_instrument(tick, token)
            set_ltp(tick, ltp / divisors[token & 0xFF])
            set_bid(tick, None)
            set_ask(tick, None)
            set_volume(tick, volume)
            set_ts(tick, None)
        elif length in (LTP_PACKET_LEN, INDEX_QUOTE_PACKET_LEN):
            token, ltp = _TOKEN_LTP.unpack_from(data, pos)
            set_instrument(tick, token)
            set_ltp(tick, ltp / divisors[token & 0xFF])
            set_bid(tick, None)
            set_ask(tick, None)
            set_volume(tick, None)
            set_ts(tick, None)
        elif length == INDEX_FULL_PACKET_LEN:
            token, ltp, ts = _INDEX_FULL.unpack_from(data, pos)
            set_instrument(tick, token)
            set_ltp(tick, ltp / divisors[token & 0xFF])
            set_bid(tick, None)
            set_ask(tick, None)
            set_volume(tick, None)
            set_ts(tick, float(ts) if ts else None)
        else:
            raise FeedDecodeError(
                f"Kite feed: packet {number} of {count} at byte {pos} has unknown length {length} "
                "(expected 8, 28, 32, 44 or 184)"
            )
        append(tick)
        pos = end
    if pos != size:
        raise FeedDecodeError(f"Kite feed: {size - pos} byte(s) left over after {count} packet(s)")
    return ticks


# ---------------------------------------------------------------------------------------------- encoding


@dataclass(frozen=True, slots=True)
class DepthLevel:
    """One market-depth entry; price in rupees."""

    price: float
    quantity: int = 0
    orders: int = 0


@dataclass(frozen=True, slots=True)
class KiteQuote:
    """Everything a ticker packet can carry for one instrument; prices in rupees, times in epoch seconds.

    ``exchange_ts`` and ``last_trade_time`` of 0 mean "absent". ``bids``/``asks`` are best first, at most 5.
    """

    token: int
    ltp: float
    last_quantity: int = 0
    average_price: float = 0.0
    volume: int = 0
    buy_quantity: int = 0
    sell_quantity: int = 0
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    exchange_ts: int = 0
    bids: tuple[DepthLevel, ...] = ()
    asks: tuple[DepthLevel, ...] = ()


_EMPTY_LEVEL: Final = DepthLevel(0.0)
_LTP_PACKET: Final = struct.Struct(">II")
_INDEX_QUOTE_PACKET: Final = struct.Struct(">IIIIIIi")
_INDEX_FULL_PACKET: Final = struct.Struct(">IIIIIIiI")
_QUOTE_PACKET: Final = struct.Struct(">IIIIIIIIIII")
_FULL_HEAD: Final = struct.Struct(">IIIII")
_DEPTH_LEVEL: Final = struct.Struct(">IIH2x")


def _uint(value: int, name: str, limit: int = _UINT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{name}: must be a whole number in 0..{limit}, got {value!r}")
    return value


def _price(value: float, divisor: float, name: str) -> int:
    scaled = value * divisor
    if not math.isfinite(scaled) or not 0 <= round(scaled) <= _UINT32_MAX:
        raise ValueError(f"{name}: {value!r} does not fit a ticker price field")
    return round(scaled)


def encode_ltp_packet(quote: KiteQuote) -> bytes:
    """The 8-byte ltp packet."""
    token = _uint(quote.token, "token")
    return _LTP_PACKET.pack(token, _price(quote.ltp, price_divisor(token), "ltp"))


def encode_index_packet(quote: KiteQuote, *, full: bool) -> bytes:
    """The 28-byte index quote packet, or with ``full`` the 32-byte one carrying the exchange timestamp."""
    token = _uint(quote.token, "token")
    divisor = price_divisor(token)
    ltp = _price(quote.ltp, divisor, "ltp")
    close = _price(quote.close, divisor, "close")
    # The change field is signed (the price can be below the close); no decoder reads it.
    head = (
        token,
        ltp,
        _price(quote.high, divisor, "high"),
        _price(quote.low, divisor, "low"),
        _price(quote.open, divisor, "open"),
        close,
        max(-(2**31), min(2**31 - 1, ltp - close)),
    )
    if full:
        return _INDEX_FULL_PACKET.pack(*head, _uint(quote.exchange_ts, "exchange_ts"))
    return _INDEX_QUOTE_PACKET.pack(*head)


def encode_quote_packet(quote: KiteQuote) -> bytes:
    """The 44-byte quote packet."""
    token = _uint(quote.token, "token")
    divisor = price_divisor(token)
    return _QUOTE_PACKET.pack(
        token,
        _price(quote.ltp, divisor, "ltp"),
        _uint(quote.last_quantity, "last_quantity"),
        _price(quote.average_price, divisor, "average_price"),
        _uint(quote.volume, "volume"),
        _uint(quote.buy_quantity, "buy_quantity"),
        _uint(quote.sell_quantity, "sell_quantity"),
        _price(quote.open, divisor, "open"),
        _price(quote.high, divisor, "high"),
        _price(quote.low, divisor, "low"),
        _price(quote.close, divisor, "close"),
    )


def _depth_side(levels: Sequence[DepthLevel], divisor: float, side: str) -> bytes:
    if len(levels) > DEPTH_LEVELS:
        raise ValueError(f"{side}: at most {DEPTH_LEVELS} depth levels, got {len(levels)}")
    padded = (*levels, *([_EMPTY_LEVEL] * (DEPTH_LEVELS - len(levels))))
    return b"".join(
        _DEPTH_LEVEL.pack(
            _uint(level.quantity, f"{side} quantity"),
            _price(level.price, divisor, f"{side} price"),
            _uint(level.orders, f"{side} orders", _UINT16_MAX),
        )
        for level in padded
    )


def encode_full_packet(quote: KiteQuote) -> bytes:
    """The 184-byte full packet: the quote packet, times, open interest and 5 levels of depth a side."""
    divisor = price_divisor(_uint(quote.token, "token"))
    return b"".join(
        (
            encode_quote_packet(quote),
            _FULL_HEAD.pack(
                _uint(quote.last_trade_time, "last_trade_time"),
                _uint(quote.oi, "oi"),
                _uint(quote.oi_day_high, "oi_day_high"),
                _uint(quote.oi_day_low, "oi_day_low"),
                _uint(quote.exchange_ts, "exchange_ts"),
            ),
            _depth_side(quote.bids, divisor, "bids"),
            _depth_side(quote.asks, divisor, "asks"),
        )
    )


def encode_packet(quote: KiteQuote, mode: KiteMode) -> bytes:
    """The packet the server sends for ``mode``; index tokens get the 28/32-byte index layouts."""
    if mode == "ltp":
        return encode_ltp_packet(quote)
    if mode not in ("quote", "full"):
        raise ValueError(f"mode: expected ltp, quote or full, got {mode!r}")
    if is_index(quote.token):
        return encode_index_packet(quote, full=mode == "full")
    return encode_full_packet(quote) if mode == "full" else encode_quote_packet(quote)


def encode_message(packets: Iterable[bytes]) -> bytes:
    """Frame packets as one binary WebSocket message."""
    packets = list(packets)
    if len(packets) > _UINT16_MAX:
        raise ValueError(f"at most {_UINT16_MAX} packets a message, got {len(packets)}")
    parts = [_U16.pack(len(packets))]
    for packet in packets:
        if len(packet) > _UINT16_MAX:
            raise ValueError(f"a packet holds at most {_UINT16_MAX} bytes, got {len(packet)}")
        parts.append(_U16.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)


def quote_from_tick(tick: Tick) -> KiteQuote:
    """A quote holding what a Tick carries: the best bid/ask become depth level 1 (quantity 0)."""
    if isinstance(tick.instrument, bool) or not isinstance(tick.instrument, int):
        raise ValueError(f"instrument: a Kite token is an int, got {tick.instrument!r}")
    ts = float(tick.ts) if tick.ts is not None else 0.0
    if not ts.is_integer():
        raise ValueError(f"ts: the ticker carries whole epoch seconds, got {tick.ts!r}")
    return KiteQuote(
        token=tick.instrument,
        ltp=tick.ltp,
        volume=tick.volume or 0,
        exchange_ts=int(ts),
        bids=(DepthLevel(tick.bid),) if tick.bid else (),
        asks=(DepthLevel(tick.ask),) if tick.ask else (),
    )


def encode_ticks(ticks: Iterable[Tick], mode: KiteMode) -> bytes:
    """One message with a ``mode`` packet per tick; fields the mode does not carry are dropped."""
    return encode_message(encode_packet(quote_from_tick(tick), mode) for tick in ticks)
