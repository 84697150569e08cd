"""The instrument master in the store: one-transaction upserts and ranked searches."""

from __future__ import annotations

import sqlite3
import time

import pytest

from trailstop_gui.models.store import InstrumentRecord, ProtectionStore


def rec(token: str, symbol: str, name: str = "", *, kind: str = "EQ", exchange: str = "NSE", **kw: object):  # type: ignore[no-untyped-def]
    return InstrumentRecord(
        master="kite",
        token=token,
        symbol=symbol,
        exchange=exchange,
        name=name,
        instrument_type=kind,
        segment=kw.pop("segment", exchange),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


MASTER = [
    rec("408065", "INFY", "INFOSYS"),
    rec("13568002", "INFY26DECFUT", "INFY", kind="FUT", exchange="NFO", lot_size=400, segment="NFO-FUT"),
    rec("500209", "INFY", "INFOSYS", exchange="BSE"),
    rec("884737", "TATAMOTORS", "TATA MOTORS"),
    rec("895745", "TATASTEEL", "TATA STEEL"),
    rec("2953217", "TCS", "TATA CONSULTANCY SERV LT"),
    rec("256265", "NIFTY 50", "NIFTY 50", tick_size=0.0, lot_size=0, segment="INDICES"),
    rec("13570306", "NIFTY26DECFUT", "NIFTY", kind="FUT", exchange="NFO", lot_size=75, segment="NFO-FUT"),
    rec("2939649", "M&M", "MAHINDRA & MAHINDRA"),
    rec("4267265", "BAJAJ-AUTO", "BAJAJ AUTO"),
    rec("1", "A_B", "UNDERSCORE"),
    rec("2", "AXB", "NOT AN UNDERSCORE"),
]


def symbols(records: list[InstrumentRecord]) -> list[str]:
    return [r.label for r in records]


def test_upsert_then_search_ranks_exact_equities_prefix_then_substring(store: ProtectionStore) -> None:
    assert store.upsert_instruments("kite", MASTER) == len(MASTER)
    assert store.instrument_count("kite") == len(MASTER)
    assert symbols(store.search_instruments("kite", "infy")) == ["NSE:INFY", "BSE:INFY", "NFO:INFY26DECFUT"]
    # Symbol prefixes first (shorter first), then a name match: TCS is "TATA CONSULTANCY".
    assert symbols(store.search_instruments("kite", "TATA")) == ["NSE:TATASTEEL", "NSE:TATAMOTORS", "NSE:TCS"]
    assert symbols(store.search_instruments("kite", "mahindra")) == ["NSE:M&M"]
    assert symbols(store.search_instruments("kite", "nse:infy")) == ["NSE:INFY"]
    assert symbols(store.search_instruments("kite", "TATA", limit=1)) == ["NSE:TATASTEEL"]


def test_search_skips_indices_and_treats_wildcards_literally(store: ProtectionStore) -> None:
    store.upsert_instruments("kite", MASTER)
    assert symbols(store.search_instruments("kite", "NIFTY")) == [
        "NFO:NIFTY26DECFUT"
    ]  # the index has no tick
    assert symbols(store.search_instruments("kite", "A_B")) == ["NSE:A_B"]
    assert store.search_instruments("kite", "%") == []
    assert store.search_instruments("kite", "  ") == []
    assert store.search_instruments("kite", "NSE:") == []
    assert store.search_instruments("upstox", "INFY") == []  # masters are separate


def test_replace_drops_old_rows_and_upsert_updates(store: ProtectionStore) -> None:
    store.upsert_instruments("kite", MASTER)
    store.upsert_instruments("upstox", [InstrumentRecord("upstox", "NSE_EQ|INE009A01021", "INFY", "NSE")])
    store.upsert_instruments("kite", [rec("408065", "INFY", "INFOSYS LTD", lot_size=1, tick_size=0.1)])
    assert store.instrument_count("kite") == 1
    assert store.instrument_count("upstox") == 1  # another master is untouched
    infy = store.instrument("kite", 408065)
    assert infy is not None and infy.name == "INFOSYS LTD" and infy.tick_size == 0.1
    assert infy.engine_instrument == 408065 and infy.is_equity and infy.tradable
    store.upsert_instruments("kite", [rec("884737", "TATAMOTORS")], replace=False)
    assert store.instrument_count("kite") == 2
    assert store.find_instrument("kite", "nse", "tatamotors") == store.instrument("kite", "884737")
    assert store.find_instrument("kite", "BSE", "TATAMOTORS") is None
    upstox = store.instrument("upstox", "NSE_EQ|INE009A01021")
    assert upstox is not None and upstox.engine_instrument == "NSE_EQ|INE009A01021"


def test_a_failed_write_leaves_the_old_master(store: ProtectionStore) -> None:
    store.upsert_instruments("kite", MASTER)
    # The second row breaks a NOT NULL constraint inside the transaction, after the old rows were deleted.
    bad = [rec("408065", "INFY"), rec("7", "BROKEN", None)]  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.upsert_instruments("kite", bad)
    assert store.instrument_count("kite") == len(MASTER)
    with pytest.raises(ValueError, match="master"):
        store.upsert_instruments(" ", MASTER)


def test_large_master_writes_quickly(store: ProtectionStore) -> None:
    many = [rec(str(10_000 + i), f"SYM{i:05d}", f"COMPANY {i}") for i in range(50_000)]
    started = time.perf_counter()
    store.upsert_instruments("kite", many)
    elapsed = time.perf_counter() - started
    assert store.instrument_count("kite") == 50_000
    started = time.perf_counter()
    found = store.search_instruments("kite", "SYM4999", limit=20)
    search_time = time.perf_counter() - started
    assert [r.symbol for r in found] == [f"SYM4999{i}" for i in range(10)]
    assert elapsed < 5.0 and search_time < 0.5, (elapsed, search_time)
