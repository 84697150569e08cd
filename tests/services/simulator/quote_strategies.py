"""Quotes of a stock, an option and an index, as Hypothesis strategies, for the tests of the wire formats."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from trailstop_gui.simulator.instruments import Instrument, InstrumentIndex, build_universe
from trailstop_gui.simulator.market import DepthLevel, Quote

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INSTRUMENTS = InstrumentIndex(build_universe(date(2026, 12, 7)))
_found = [INSTRUMENTS.find(name) for name in ("NSE:INFY", "NFO:NIFTY26DEC24300CE", "NSE:NIFTY 50")]
assert None not in _found, _found
STOCK, OPTION, INDEX = (i for i in _found if i is not None)
UINT32 = 2**32 - 1  # Kite packs quantities and times as uint32; Upstox's int64 fields hold these too

prices = st.integers(min_value=5, max_value=5_000_000).map(lambda paise: paise / 100)
depth = st.lists(st.builds(DepthLevel, prices, st.integers(1, 10**6), st.integers(1, 999)), max_size=5)


@st.composite
def quotes(draw: st.DrawFn, instrument: Instrument) -> Quote:
    """Any book ``instrument`` might show: prices in paise, 0-5 depth levels a side, trade times maybe 0."""
    return Quote(
        instrument=instrument,
        ltp=draw(prices),
        last_quantity=draw(st.integers(0, 10**5)),
        average_price=draw(prices),
        volume=draw(st.integers(0, UINT32)),
        buy_quantity=draw(st.integers(0, UINT32)),
        sell_quantity=draw(st.integers(0, UINT32)),
        open=draw(prices),
        high=draw(prices),
        low=draw(prices),
        close=draw(prices),
        bids=tuple(draw(depth)),
        asks=tuple(draw(depth)),
        last_trade_time=draw(st.sampled_from([0, 1_796_548_963, 1_800_000_000])),
        timestamp=draw(st.sampled_from([0, 1_796_548_963, 1_800_000_000])),
        oi=draw(st.integers(0, 10**8)),
    )


def books(modes: Sequence[str]) -> st.SearchStrategy[list[tuple[Quote, str]]]:
    """The stock, the option and the index, each quoted in one of ``modes``: what one frame carries."""
    return st.tuples(*(st.tuples(quotes(i), st.sampled_from(modes)) for i in (STOCK, OPTION, INDEX))).map(
        list
    )
