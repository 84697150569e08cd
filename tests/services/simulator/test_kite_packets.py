"""The simulator's Kite ticker packets read alike by the SDK's KiteTicker and by the app's decoder.

The simulator packs its packets with its own code (simulator/kite_ticker.py); KiteTicker._parse_binary (the
SDK's reader) says what they carry, and the app's decoder (services/brokers/kite_codec.py) must read the
same prices. Byte-for-byte agreement with the broker's own sample packets is in test_kite_ticker.py.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers.kite_codec import decode_message
from trailstop_gui.simulator.instruments import Instrument, InstrumentIndex, build_universe
from trailstop_gui.simulator.kite_ticker import MODES, encode_message, encode_packet
from trailstop_gui.simulator.market import DepthLevel, Quote

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INSTRUMENTS = InstrumentIndex(build_universe(date(2026, 12, 7)))
STOCK = INSTRUMENTS.find("NSE:INFY")
OPTION = INSTRUMENTS.find("NFO:NIFTY26DEC24300CE")
INDEX = INSTRUMENTS.find("NSE:NIFTY 50")
assert STOCK is not None and OPTION is not None and INDEX is not None
TICKER = KiteTicker("key", "token")  # never connected: only its binary parser is used
UINT32 = 2**32 - 1


def sdk_tick(parsed: dict[str, Any]) -> Tick:
    """What a reader of KiteTicker's dict takes from one packet: price, best bid/ask, volume, time."""
    stamp = parsed.get("exchange_timestamp")
    ts = stamp.timestamp() if stamp is not None and stamp.timestamp() > 0 else None
    depth = parsed.get("depth")
    bid = depth["buy"][0]["price"] or None if depth else None
    ask = depth["sell"][0]["price"] or None if depth else None
    return Tick(parsed["instrument_token"], parsed["last_price"], bid, ask, parsed.get("volume_traded"), ts)


def expected_tick(q: Quote, mode: str) -> Tick:
    token = q.instrument.kite_token
    if mode == "ltp":
        return Tick(token, q.ltp)
    if q.instrument.is_index:
        return Tick(token, q.ltp, ts=float(q.timestamp) if mode == "full" and q.timestamp else None)
    if mode == "quote":
        return Tick(token, q.ltp, volume=q.volume)
    bid = q.bids[0].price if q.bids else None
    ask = q.asks[0].price if q.asks else None
    return Tick(token, q.ltp, bid, ask, q.volume, float(q.timestamp) if q.timestamp else None)


_prices = st.integers(min_value=5, max_value=5_000_000).map(lambda paise: paise / 100)
_levels = st.lists(
    st.builds(DepthLevel, _prices, st.integers(1, 10**6), st.integers(1, 999)),
    max_size=5,
)


@st.composite
def quotes(draw: st.DrawFn, instrument: Instrument) -> Quote:
    return Quote(
        instrument=instrument,
        ltp=draw(_prices),
        last_quantity=draw(st.integers(0, 10**5)),
        average_price=draw(_prices),
        volume=draw(st.integers(0, UINT32)),
        buy_quantity=draw(st.integers(0, UINT32)),
        sell_quantity=draw(st.integers(0, UINT32)),
        open=draw(_prices),
        high=draw(_prices),
        low=draw(_prices),
        close=draw(_prices),
        bids=tuple(draw(_levels)),
        asks=tuple(draw(_levels)),
        last_trade_time=draw(st.sampled_from([0, 1_796_548_963])),
        timestamp=draw(st.sampled_from([0, 1_796_548_963, 1_800_000_000])),
        oi=draw(st.integers(0, 10**8)),
    )


@FAST
@given(
    stock=quotes(STOCK),
    option=quotes(OPTION),
    index=quotes(INDEX),
    modes=st.lists(st.sampled_from(MODES), min_size=3, max_size=3),
)
def test_the_sdk_and_the_app_read_the_same_ticks_from_every_message(
    stock: Quote, option: Quote, index: Quote, modes: list[str]
) -> None:
    pairs = list(zip([stock, option, index], modes, strict=True))
    message = encode_message([encode_packet(q, mode) for q, mode in pairs])

    parsed = TICKER._parse_binary(message)
    assert [p["mode"] for p in parsed] == modes
    assert [p["tradable"] for p in parsed] == [True, True, False]
    expected = [expected_tick(q, mode) for q, mode in pairs]
    assert [sdk_tick(p) for p in parsed] == expected
    assert decode_message(message) == expected
