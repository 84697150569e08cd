"""The simulator's Kite ticker packets read alike by the SDK's KiteTicker and by the app's decoder.

The simulator packs its packets with its own code (simulator/kite_ticker.py); KiteTicker._parse_binary (the
SDK's reader) says what they carry, and the app's decoder (services/brokers/kite_codec.py) must read the
same prices. Byte-for-byte agreement with the broker's own sample packets is in test_kite_ticker.py.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from kiteconnect import KiteTicker

from tests.services.simulator.quote_strategies import FAST, books
from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers.kite_codec import decode_message
from trailstop_gui.simulator.kite_ticker import MODES, encode_message, encode_packet
from trailstop_gui.simulator.market import Quote

TICKER = KiteTicker("key", "token")  # never connected: only its binary parser is used


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


@FAST
@given(pairs=books(MODES))
def test_the_sdk_and_the_app_read_the_same_ticks_from_every_message(pairs: list[tuple[Quote, str]]) -> None:
    message = encode_message([encode_packet(q, mode) for q, mode in pairs])

    parsed = TICKER._parse_binary(message)
    assert [p["mode"] for p in parsed] == [mode for _, mode in pairs]
    assert [p["tradable"] for p in parsed] == [True, True, False]
    expected = [expected_tick(q, mode) for q, mode in pairs]
    assert [sdk_tick(p) for p in parsed] == expected
    assert decode_message(message) == expected
