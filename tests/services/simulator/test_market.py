"""The instrument universe and the price model."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from trailstop_gui.simulator.instruments import (
    SEGMENT_INDICES,
    SEGMENT_NFO,
    SEGMENT_NSE,
    InstrumentIndex,
    build_universe,
    monthly_expiry,
)
from trailstop_gui.simulator.market import Market, PriceError

TODAY = date(2025, 1, 17)


def _isin_check_digit_ok(isin: str) -> bool:
    digits = "".join(str(int(c, 36)) for c in isin[:-1])
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return (10 - total % 10) % 10 == int(isin[-1])


@pytest.fixture
def index() -> InstrumentIndex:
    return InstrumentIndex(build_universe(TODAY))


def test_universe_has_fifty_nse_equities_with_the_named_ones(index: InstrumentIndex) -> None:
    equities = [i for i in index if i.exchange == "NSE" and i.instrument_type == "EQ" and i.tradable]
    assert len(equities) >= 50
    symbols = {i.tradingsymbol for i in equities}
    assert {"INFY", "TCS", "RELIANCE", "HDFCBANK", "SBIN", "ICICIBANK", "ITC"} <= symbols
    assert {(i.tick_size, i.lot_size) for i in equities} == {(0.05, 1)}
    for inst in equities:
        assert re.fullmatch(r"INE[0-9A-Z]{9}", inst.isin), inst
        assert _isin_check_digit_ok(inst.isin), inst.isin
        assert inst.upstox_key == f"NSE_EQ|{inst.isin}"
        assert inst.base_price > 0


def test_kite_tokens_carry_the_segment_in_the_low_byte(index: InstrumentIndex) -> None:
    segments = {SEGMENT_NSE: "NSE", SEGMENT_NFO: "NFO", SEGMENT_INDICES: "INDICES"}
    for inst in index:
        assert inst.kite_token & 0xFF == inst.segment_id
        assert inst.kite_token >> 8 == inst.exchange_token
        assert segments[inst.segment_id] in (inst.exchange, inst.kite_segment)
    assert len({i.kite_token for i in index}) == len(index)
    assert len({i.upstox_key for i in index}) == len(index)


def test_tokens_agree_with_the_brokers_sample_payloads(
    index: InstrumentIndex, kite_mock: Callable[[str], Any]
) -> None:
    ltp = kite_mock("ltp.json")["data"]["NSE:INFY"]["instrument_token"]
    assert index.find("NSE:INFY").kite_token == ltp  # type: ignore[union-attr]
    for row in kite_mock("orders.json")["data"]:
        inst = index.by_symbol(row["exchange"], row["tradingsymbol"])
        if inst is not None:
            assert inst.kite_token == row["instrument_token"], row["tradingsymbol"]


def test_derivatives_and_index(index: InstrumentIndex) -> None:
    fo = [i for i in index if i.exchange == "NFO"]
    assert {i.instrument_type for i in fo} == {"FUT", "CE", "PE"}
    expiry = monthly_expiry(TODAY)
    for inst in fo:
        assert inst.lot_size > 1 and inst.expiry == expiry
        assert inst.upstox_key == f"NSE_FO|{inst.exchange_token}"
        assert inst.tradingsymbol.startswith(inst.name + "25JAN")
    nifty = index.find("NSE_INDEX|Nifty 50")
    assert nifty is not None and nifty.symbol == "NSE:NIFTY 50" and not nifty.tradable
    assert index.find(nifty.kite_token) is nifty and index.find(str(nifty.kite_token)) is nifty


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2025, 1, 17), date(2025, 1, 28)),
        (date(2025, 1, 28), date(2025, 1, 28)),
        (date(2025, 1, 29), date(2025, 2, 25)),
        (date(2025, 12, 31), date(2026, 1, 27)),
    ],
)
def test_monthly_expiry_is_the_last_tuesday(today: date, expected: date) -> None:
    assert monthly_expiry(today) == expected
    assert expected.weekday() == 1


def test_index_lookup_rejects_unknown_identifiers(index: InstrumentIndex) -> None:
    for ident in ("NSE:NOPE", "NSE_EQ|INE000000000", 1, "1", True, None, 3.5):
        assert index.find(ident) is None


def test_random_walk_is_reproducible_by_seed(index: InstrumentIndex) -> None:
    def path(seed: int) -> list[float]:
        market = Market(index, random.Random(seed), clock=lambda: 1_700_000_000.0)
        prices = []
        for _ in range(20):
            market.step()
            prices.append(market.ltp(index.find("NSE:INFY")))  # type: ignore[arg-type]
        return prices

    assert path(1) == path(1)
    assert path(1) != path(2)
    assert len(set(path(1))) > 3


def test_books_have_five_levels_on_the_tick_grid_and_stay_positive(index: InstrumentIndex) -> None:
    market = Market(index, random.Random(5))
    for _ in range(200):
        market.step()
    for inst in index:
        q = market.quote(inst)
        assert q.ltp > 0 and q.low <= q.ltp <= q.high
        if inst.is_index:
            assert q.bids == () and q.asks == ()
            continue
        assert len(q.bids) == 5 and len(q.asks) == 5
        assert q.bid is not None and q.ask is not None and 0 < q.bid < q.ask
        assert [lv.price for lv in q.bids] == sorted((lv.price for lv in q.bids), reverse=True)
        assert [lv.price for lv in q.asks] == sorted(lv.price for lv in q.asks)
        for level in (*q.bids, *q.asks):
            assert math.isclose(
                level.price / inst.tick_size, round(level.price / inst.tick_size), abs_tol=1e-6
            )
            assert level.quantity % inst.lot_size == 0 and 1 <= level.orders <= level.quantity


def test_set_price_places_the_book_and_validates(index: InstrumentIndex) -> None:
    market = Market(index, random.Random(1))
    infy = index.find("NSE:INFY")
    assert infy is not None
    q = market.set_price(infy, 1500.0)
    assert (q.ltp, q.bid, q.ask) == (1500.0, 1499.95, 1500.05)
    q = market.set_price(infy, 1501.0, bid=1500.5, ask=1502.0)
    assert (q.ltp, q.bid, q.ask) == (1501.0, 1500.5, 1502.0)
    for bad in ({"ltp": -1.0}, {"ltp": math.nan}, {"ltp": True}, {"ltp": 10.0, "bid": 11.0, "ask": 10.5}):
        with pytest.raises(PriceError):
            market.set_price(infy, **bad)
    q = market.gap(infy, -10)
    assert q.ltp == pytest.approx(1350.9, abs=0.05)
