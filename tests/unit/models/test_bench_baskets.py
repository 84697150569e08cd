"""The basket benchmark measures what it says: 50 baskets of 10 legs, all evaluated, none breached."""

from __future__ import annotations

from bench import baskets
from bench.engine import make_ticks


def test_the_benchmark_evaluates_without_breaching() -> None:
    ticks = make_ticks(2000)
    seconds, events = baskets.run_baskets(ticks)
    assert seconds > 0 and events == 0
    assert baskets.run_engine(ticks) > 0
