"""The exit path's decisions: what to do after a lost reply, and while an exit's child orders are watched."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests import factories
from trailstop_gui.services.brokers.base import IST, Order, OrderStatus, OrderType
from trailstop_gui.services.exit_decisions import (
    Ambiguity,
    Step,
    after_ambiguous,
    is_freeze_refusal,
    is_no_slicing_refusal,
    next_watch_step,
    totals,
    usable_exit,
)


def order(
    order_id: str, status: OrderStatus, quantity: int = 10, filled: int | None = None, **kw: Any
) -> Order:
    done = filled if filled is not None else (quantity if status is OrderStatus.COMPLETE else 0)
    fields: dict[str, Any] = dict(
        order_type=OrderType.LIMIT,
        average_price=100.0 if done else 0.0,
        price=98.0,
        tag="X1",
        placed_at=datetime.now(IST),
    )
    fields.update(kw)
    return factories.order(order_id, status, quantity=quantity, filled=done, **fields)


# ----------------------------------------------------------------------------- lost replies


def test_an_order_found_by_its_tag_is_adopted_whatever_the_clock() -> None:
    found = order("1", OrderStatus.OPEN)
    assert after_ambiguous(found, live_before=10, live_now=10, elapsed=0.0, window=4.0) is Ambiguity.ADOPT


@pytest.mark.parametrize("elapsed", [0.0, 1.0, 3.9])
def test_nothing_is_resent_inside_the_window(elapsed: float) -> None:
    # The book lags: a missing order proves nothing yet (the old code resent at once: two SELLs).
    assert (
        after_ambiguous(None, live_before=10, live_now=10, elapsed=elapsed, window=4.0)
        is Ambiguity.KEEP_LOOKING
    )


@pytest.mark.parametrize("live_now", [0, 4, 9])
def test_a_position_that_shrank_holds_any_resend(live_now: int) -> None:
    # The position shows the exit (or part of it) although no order is listed: never send again.
    outcome = after_ambiguous(None, live_before=10, live_now=live_now, elapsed=99.0, window=4.0)
    assert outcome is Ambiguity.HOLD


def test_an_unreadable_position_never_resends() -> None:
    assert (
        after_ambiguous(None, live_before=10, live_now=None, elapsed=99.0, window=4.0)
        is Ambiguity.KEEP_LOOKING
    )


def test_the_resend_is_the_last_resort() -> None:
    assert after_ambiguous(None, live_before=10, live_now=10, elapsed=4.0, window=4.0) is Ambiguity.RESEND


@pytest.mark.parametrize(
    ("found", "usable"),
    [
        (order("1", OrderStatus.REJECTED), False),
        (order("1", OrderStatus.CANCELLED), False),
        (order("1", OrderStatus.CANCELLED, filled=4), True),
        (order("1", OrderStatus.COMPLETE), True),
    ],
)
def test_a_refused_or_unfilled_cancelled_order_is_not_an_exit(found: Order, usable: bool) -> None:
    assert usable_exit(found) is usable
    expected = Ambiguity.ADOPT if usable else Ambiguity.RESEND
    assert after_ambiguous(found, live_before=10, live_now=10, elapsed=5.0, window=4.0) is expected


# ----------------------------------------------------------------------------- watching


def step(children: dict[str, Order | None], expected: int = 10, **kw: Any) -> Any:
    kw.setdefault("resting_for", {})
    kw.setdefault("reprices", {})
    kw.setdefault("rest_timeout", 3.0)
    return next_watch_step(children, expected=expected, **kw)


def test_every_child_must_be_read_and_final_before_closing() -> None:
    assert step({"1": order("1", OrderStatus.COMPLETE, 5), "2": None}).step is Step.WAIT
    assert (
        step({"1": order("1", OrderStatus.COMPLETE, 5), "2": order("2", OrderStatus.OPEN, 5)}).step
        is Step.WAIT
    )
    done = step({"1": order("1", OrderStatus.COMPLETE, 5), "2": order("2", OrderStatus.COMPLETE, 5)})
    assert (done.step, done.quantity, done.price) == (Step.CLOSE, 10, 100.0)


def test_the_average_price_is_weighted_over_the_children() -> None:
    a = order("1", OrderStatus.COMPLETE, 6, average_price=100.0)
    b = order("2", OrderStatus.COMPLETE, 2, average_price=96.0)
    assert totals([a, b]).average_price == pytest.approx(99.0)
    assert step({"1": a, "2": b}, expected=8).price == pytest.approx(99.0)


def test_a_partly_filled_rest_is_repriced_then_cancelled() -> None:
    partly = {"1": order("1", OrderStatus.OPEN, 10, filled=4)}
    assert step(partly, resting_for={"1": 1.0}).step is Step.WAIT
    repriced = step(partly, resting_for={"1": 3.0})
    assert (repriced.step, repriced.order_id) == (Step.REPRICE, "1")
    assert step(partly, resting_for={"1": 3.0}, reprices={"1": 2}).step is Step.CANCEL


def test_the_rest_we_cancelled_is_placed_again() -> None:
    cancelled = {"1": order("1", OrderStatus.CANCELLED, 10, filled=4)}
    rest = step(cancelled, cancelled_by_us={"1"})
    assert (rest.step, rest.quantity, rest.sliced) == (Step.PLACE_REST, 6, False)


def test_an_exit_cancelled_by_someone_else_is_not_sent_again() -> None:
    cancelled = {"1": order("1", OrderStatus.CANCELLED, 10, filled=4)}
    assert step(cancelled).step is Step.FAIL


def test_a_refusal_fails_but_a_freeze_refusal_is_sliced() -> None:
    refused = order("1", OrderStatus.REJECTED, status_message="RMS:Margin Exceeds")
    failed = step({"1": refused})
    assert failed.step is Step.FAIL and "Margin" in failed.why
    assert (failed.refused, failed.quantity, failed.filled) == (True, 10, 0)
    frozen = order("1", OrderStatus.REJECTED, status_message="Quantity 10 exceeds the freeze limit of 4")
    rest = step({"1": frozen})
    assert (rest.step, rest.quantity, rest.sliced) == (Step.PLACE_REST, 10, True)


@pytest.mark.parametrize(
    ("text", "freeze"),
    [
        (
            "The order quantity 1000 (40 lots) is higher than the maximum quantity of 900 (36 lots) allowed "
            "by the exchanges. Please reduce the order quantity or use iceberg orders.",
            True,
        ),
        ("Quantity 25 exceeds the freeze limit of 10 for this instrument.", True),
        ("RMS:Margin Exceeds,Required:0, Available:0", False),
        (None, False),
    ],
)
def test_freeze_refusals_are_recognised(text: str | None, freeze: bool) -> None:
    assert is_freeze_refusal(text) is freeze


@pytest.mark.parametrize(
    ("text", "no_slicing"),
    [
        ("Quantity should be greater than or equal to 1801 for order slicing.", True),
        (
            "The order quantity 1000 (40 lots) is higher than the maximum quantity of 900 (36 lots) allowed "
            "by the exchanges. Please reduce the order quantity or use iceberg orders.",
            False,
        ),
        ("The order would be sliced into more than 10 orders.", False),
        (None, False),
    ],
)
def test_a_sliced_order_that_needs_no_slicing_is_recognised(text: str | None, no_slicing: bool) -> None:
    assert is_no_slicing_refusal(text) is no_slicing


def test_a_refused_rest_says_what_was_refused_and_what_filled_before() -> None:
    """A delivery exit can be sized again on a refusal: the runner needs the refused rest and the fills."""
    filled = order("1", OrderStatus.COMPLETE, 6)
    refused = order("2", OrderStatus.REJECTED, 4, status_message="Insufficient holdings")
    failed = step({"1": filled, "2": refused})
    assert (failed.step, failed.refused, failed.quantity, failed.filled) == (Step.FAIL, True, 4, 6)
    assert failed.price == 100.0
    cancelled = step({"1": order("1", OrderStatus.CANCELLED, 10, filled=4)})
    assert (cancelled.step, cancelled.refused) == (Step.FAIL, False)  # the trader's cancel: no resize
