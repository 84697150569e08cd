"""The Kite ticker: packets byte for byte as the broker's samples, and the official KiteTicker end to end."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kiteconnect import KiteTicker

from tests.kite_mocks import kite_mock_json, kite_mock_packet
from trailstop_gui.simulator.instruments import InstrumentIndex, build_universe
from trailstop_gui.simulator.kite_ticker import encode_message, encode_packet
from trailstop_gui.simulator.login_flow import kite_request_token
from trailstop_gui.simulator.market import DepthLevel, Quote
from trailstop_gui.simulator.runner import start_simulator

PROBE = Path(__file__).with_name("kite_ticker_probe.py")
INDEX = InstrumentIndex(build_universe(datetime(2025, 1, 17).date()))
INFY = INDEX.find("NSE:INFY")
NIFTY = INDEX.find("NSE:NIFTY 50")


def _quote_from_sample(tick: dict[str, Any]) -> Quote:
    assert INFY is not None and INFY.kite_token == tick["instrument_token"]
    epoch = int(datetime.fromisoformat(tick.get("timestamp", "2021-07-05T10:41:27+05:30")).timestamp())
    depth = tick.get("depth", {"buy": [], "sell": []})
    return Quote(
        instrument=INFY,
        ltp=tick["last_price"],
        last_quantity=tick["last_quantity"],
        average_price=tick["average_price"],
        volume=tick["volume"],
        buy_quantity=tick["buy_quantity"],
        sell_quantity=tick["sell_quantity"],
        open=tick["ohlc"]["open"],
        high=tick["ohlc"]["high"],
        low=tick["ohlc"]["low"],
        close=tick["ohlc"]["close"],
        bids=tuple(DepthLevel(d["price"], d["quantity"], d["orders"]) for d in depth["buy"]),
        asks=tuple(DepthLevel(d["price"], d["quantity"], d["orders"]) for d in depth["sell"]),
        last_trade_time=epoch,
        timestamp=epoch,
        oi=tick.get("oi", 0),
        oi_day_high=tick.get("oi_day_high", 0),
        oi_day_low=tick.get("oi_day_low", 0),
    )


def test_quote_and_full_packets_are_byte_identical_to_the_brokers() -> None:
    quote = _quote_from_sample(kite_mock_json("ticker_quote.json"))
    assert encode_packet(quote, "quote") == kite_mock_packet("ticker_quote.packet")
    full = _quote_from_sample(kite_mock_json("ticker_full.json"))
    assert encode_packet(full, "full") == kite_mock_packet("ticker_full.packet")


def test_the_sdk_parses_every_mode_of_our_packets() -> None:
    quote = _quote_from_sample(kite_mock_json("ticker_full.json"))
    assert NIFTY is not None
    index_quote = Quote(
        NIFTY, 24350.5, 0, 0.0, 0, 0, 0, 24300.0, 24400.0, 24250.0, 24500.0, (), (), 1, 1_700_000_000
    )
    packets = [encode_packet(q, mode) for q in (quote, index_quote) for mode in ("ltp", "quote", "full")]
    assert [len(p) for p in packets] == [8, 44, 184, 8, 28, 32]
    ticks = KiteTicker("key", "token")._parse_binary(encode_message(packets))
    assert [(t["mode"], t["tradable"]) for t in ticks] == [
        ("ltp", True),
        ("quote", True),
        ("full", True),
        ("ltp", False),
        ("quote", False),
        ("full", False),
    ]
    full = ticks[2]
    expected = kite_mock_json("ticker_full.json")
    assert full["last_price"] == expected["last_price"] and full["depth"] == expected["depth"]
    assert full["ohlc"] == expected["ohlc"] and full["volume_traded"] == expected["volume"]
    assert ticks[4]["ohlc"] == {"high": 24400.0, "low": 24250.0, "open": 24300.0, "close": 24500.0}
    assert ticks[4]["last_price"] == 24350.5
    assert ticks[5]["exchange_timestamp"] == datetime.fromtimestamp(1_700_000_000)


def test_index_change_below_close_is_a_signed_field() -> None:
    assert NIFTY is not None
    below = Quote(NIFTY, 24000.0, 0, 0.0, 0, 0, 0, 1.0, 1.0, 1.0, 24500.0, (), (), 1, 1)
    assert struct.unpack(">i", encode_packet(below, "quote")[24:28])[0] == -50000


# -- the official KiteTicker, in a subprocess (Twisted's reactor runs once per process) --------------


@pytest.fixture(scope="module")
def probe() -> Iterator[dict[str, Any]]:
    with start_simulator(seed=11, auto=False, fill_delay=0.0) as handle:
        from kiteconnect import KiteConnect

        kite = handle.info["kite"]
        client = KiteConnect(kite["api_key"], root=kite["api_root"])
        session = client.generate_session(kite_request_token(handle.info), kite["api_secret"])
        done = subprocess.run(
            [sys.executable, str(PROBE), json.dumps(handle.info), session["access_token"]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = done.stdout.strip().splitlines()
        assert lines, f"probe printed nothing; stderr:\n{done.stderr[-3000:]}"
        result = json.loads(lines[-1])
        assert done.returncode == 0 and result["step"] == "done", (result, done.stderr[-3000:])
        yield result


def test_subscribe_answers_with_a_quote_snapshot(probe: dict[str, Any]) -> None:
    tick = probe["quote_tick"]
    assert tick["mode"] == "quote" and tick["tradable"] is True and tick["last_price"] > 0
    assert {"volume_traded", "total_buy_quantity", "ohlc", "average_traded_price"} <= set(tick)
    index = probe["index_quote_tick"]
    assert index["tradable"] is False and index["mode"] == "quote" and "volume_traded" not in index


def test_ltp_and_full_modes(probe: dict[str, Any]) -> None:
    assert set(probe["ltp_tick"]) == {"tradable", "mode", "instrument_token", "last_price"}
    full = probe["full_tick"]
    assert full["last_price"] == 1600.0
    assert full["depth"]["buy"][0]["price"] == 1599.95 and full["depth"]["sell"][0]["price"] == 1600.05
    assert len(full["depth"]["buy"]) == 5 and len(full["depth"]["sell"]) == 5
    assert probe["index_full_tick"]["mode"] == "full"


def test_order_updates_arrive_as_text_messages(
    probe: dict[str, Any], kite_mock: Callable[[str], Any], assert_kite_shape: Callable[..., None]
) -> None:
    updates = probe["order_updates"]
    assert [u["status"] for u in updates] == ["OPEN", "COMPLETE"]
    assert updates[-1]["tag"] == "probe1" and updates[-1]["filled_quantity"] == 2
    assert updates[-1]["average_price"] == 1600.05
    for update in updates:
        assert_kite_shape(update, kite_mock("postback.json"))


def test_unsubscribe_stops_the_ticks(probe: dict[str, Any]) -> None:
    assert probe["ticks_after_unsubscribe"] == [256265]


def test_heartbeats_and_a_stall(probe: dict[str, Any]) -> None:
    assert probe["heartbeats_seen"] >= 1
    assert probe["during_stall"] == {"heartbeats": 0, "ticks": 0}
    assert probe["closes_after_stall"] == 0  # the socket stayed open: a silent, not a closed, connection


def test_dropped_sockets_reconnect_and_resubscribe(probe: dict[str, Any]) -> None:
    assert probe["dropped"] == 1 and probe["connects_after_drop"] == 2


def test_expired_tokens_close_the_feed_and_refuse_reconnects(probe: dict[str, Any]) -> None:
    assert any("403" in error for error in probe["errors_after_expiry"])
    assert probe["connects_after_expiry"] == 2
