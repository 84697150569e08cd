"""The simulator's per-user order limits (one limiter for both facades, each with its broker's figures)."""

from __future__ import annotations

from trailstop_gui.simulator.http_util import OrderRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ten_a_second_then_429_until_the_second_has_passed() -> None:
    clock = Clock()
    limiter = OrderRateLimiter(lambda: (10, 200), clock)
    assert [limiter.allow("AB1234") for _ in range(11)] == [True] * 10 + [False]
    assert limiter.allow("XY9876")  # another user's orders count apart
    clock.now += 1.0
    assert limiter.allow("AB1234")


def test_the_minute_limit_counts_what_the_second_limit_let_through() -> None:
    clock = Clock()
    limiter = OrderRateLimiter(lambda: (10, 25), clock)
    allowed = 0
    for _ in range(5):
        allowed += sum(limiter.allow("AB1234") for _ in range(10))
        clock.now += 1.0
    assert allowed == 25
    clock.now += 60.0
    assert limiter.allow("AB1234")


def test_the_limits_are_read_on_every_order() -> None:
    limits = [(1, 200)]
    limiter = OrderRateLimiter(lambda: limits[0], Clock())
    assert limiter.allow("AB1234") and not limiter.allow("AB1234")
    limits[0] = (10**9, 10**9)  # lifted, as a test lifts a facade's constants
    assert limiter.allow("AB1234")
