"""The simulator's NIFTY future and options move with the NIFTY 50 index (for stops on the underlying)."""

from __future__ import annotations

import pytest

from tests.services.conftest import control
from trailstop_gui.simulator.runner import SimulatorHandle


def ltp(sim: SimulatorHandle, symbol: str) -> float:
    return float(control(sim, f"quote?symbol={symbol}")["ltp"])


def test_a_move_of_the_index_moves_its_derivatives(simulator: SimulatorHandle) -> None:
    nifty = [i for i in control(simulator, "instruments") if i["exchange"] == "NFO" and i["name"] == "NIFTY"]
    call = next(i["symbol"] for i in nifty if i["instrument_type"] == "CE")
    put = next(i["symbol"] for i in nifty if i["instrument_type"] == "PE")
    future = next(i["symbol"] for i in nifty if i["instrument_type"] == "FUT")
    other = next(
        i["symbol"]
        for i in control(simulator, "instruments")
        if i["instrument_type"] == "FUT" and i["name"] == "INFY"
    )
    before = {s: ltp(simulator, s) for s in (call, put, future, other)}
    index = ltp(simulator, "NSE:NIFTY 50")
    control(simulator, "price", {"symbol": "NSE:NIFTY 50", "ltp": index + 100})
    assert ltp(simulator, call) == pytest.approx(before[call] + 50, abs=0.05)
    assert ltp(simulator, put) == pytest.approx(before[put] - 50, abs=0.05)
    assert ltp(simulator, future) == pytest.approx(before[future] + 100, abs=0.05)
    assert ltp(simulator, other) == before[other]  # a stock future does not follow NIFTY


def test_only_the_index_has_followers(simulator: SimulatorHandle) -> None:
    market = simulator.sim.market
    index = market.instruments.by_symbol("NSE", "NIFTY 50")
    infy = market.instruments.by_symbol("NSE", "INFY")
    assert index is not None and infy is not None
    assert {i.instrument_type for i in market.followers(index)} == {"FUT", "CE", "PE"}
    assert all(i.name == "NIFTY" for i in market.followers(index))
    assert market.followers(infy) == []
