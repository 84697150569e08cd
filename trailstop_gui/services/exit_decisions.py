"""The exit path's money rules as plain decisions: given what the broker said, what next?

No I/O, no threads, no Qt: ``ExitExecutor`` (the runner) reads the broker and acts; the tests drive these
functions directly. Two questions are answered here:

- after an ambiguous failure (the reply was lost, the order may be at the broker): adopt the order found,
  keep looking, hold (the position shows the exit happened although the book does not list it yet), or, as
  the last resort, send it again (:func:`after_ambiguous`);
- while an exit is being watched: wait, close, re-price a resting remainder, place what is left, or fail
  (:func:`next_watch_step`), over every child order of the exit (a sliced exit has several).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trailstop_gui.services.brokers.base import Order, OrderStatus

# ----------------------------------------------------------------------------- lost replies


class Ambiguity(enum.Enum):
    ADOPT = "adopt"  # the order is at the broker: watch it, send nothing
    KEEP_LOOKING = "keep looking"  # the book may be late: look again after a pause
    HOLD = "hold"  # the position moved as if the exit filled, but no order is listed: send nothing
    RESEND = "resend"  # nothing anywhere after the whole window: send again, as the last resort


def usable_exit(order: Order | None) -> bool:
    """An order found by the exit tag that is (or was) really working: not refused, not cancelled unfilled."""
    if order is None:
        return False
    if order.status is OrderStatus.REJECTED:
        return False
    return not (order.status is OrderStatus.CANCELLED and order.filled_quantity <= 0)


def after_ambiguous(
    found: Order | None,
    *,
    live_before: int,
    live_now: int | None,
    elapsed: float,
    window: float,
) -> Ambiguity:
    """What to do after an exit's reply was lost, ``elapsed`` seconds into the look-up ``window``.

    ``live_before`` is the open quantity the exit was sized from; ``live_now`` a fresh read (None when it
    could not be read). The order book and positions may trail a fill by seconds (Kite forum, comment
    53201: order book, trade book and positions "can temporarily disagree"), so a missing order proves
    nothing until the window is over, and a position that shrank means our order is out there: never resend.
    """
    if usable_exit(found):
        return Ambiguity.ADOPT
    if live_now is not None and live_now < live_before:
        return Ambiguity.HOLD
    if elapsed < window or live_now is None:
        return Ambiguity.KEEP_LOOKING
    return Ambiguity.RESEND


# ----------------------------------------------------------------------------- watching fills

_FREEZE_TEXTS = (
    # Kite (forum comment 42709): "... is higher than the maximum quantity of 900 (36 lots) allowed by the
    # exchanges. Please reduce the order quantity or use iceberg orders."
    re.compile(r"maximum quantity .* allowed by the exchange", re.IGNORECASE),
    # Exchange rejections relayed as a status message (NSE: "quantity greater than the freeze limit").
    re.compile(r"freeze (limit|quantity)", re.IGNORECASE),
)


def is_freeze_refusal(text: str | None) -> bool:
    """Whether a refusal says the quantity is above the exchange's freeze quantity (slice it instead)."""
    return bool(text) and any(pattern.search(text or "") for pattern in _FREEZE_TEXTS)


# Kite refuses an autoslice order that needs no slicing, at the door (Kite forum, "Wrong Documentation for
# autoslice order", comment 53037): "Quantity should be greater than or equal to 1801 for order slicing".
# It happens when the freeze limit that refused the plain order is not the one the sliced order meets
# (the exchanges revise freeze limits; Kite's check and the exchange's can differ): nothing was placed.
_NO_SLICING_TEXT = re.compile(r"greater than or equal to \d+ for order slicing", re.IGNORECASE)


def is_no_slicing_refusal(text: str | None) -> bool:
    """Whether a refusal of a sliced order says the quantity needs no slicing (send it plain instead)."""
    return bool(text) and _NO_SLICING_TEXT.search(text or "") is not None


class Step(enum.Enum):
    WAIT = "wait"
    CLOSE = "close"  # every child final, the whole quantity filled
    REPRICE = "reprice"  # a child rests with quantity pending past the limit: modify it to MARKET
    CANCEL = "cancel"  # a child rests and re-pricing did not help (or was refused): cancel its rest
    PLACE_REST = "place rest"  # every child final, some quantity never filled: send the rest
    FAIL = "fail"  # the broker refused the exit and nothing filled


@dataclass(frozen=True)
class WatchStep:
    step: Step
    order_id: str | None = None  # REPRICE / CANCEL: which child
    quantity: int = 0  # PLACE_REST: how much; CLOSE: how much filled
    price: float = 0.0  # CLOSE: the average over every child
    sliced: bool = False  # PLACE_REST: the refusal was the freeze quantity, so slice the rest
    why: str = ""
    refused: bool = False  # FAIL: the broker refused (REJECTED) what was left; ``quantity`` is that rest
    filled: int = 0  # FAIL: what the exit's other children filled before the refusal


@dataclass(frozen=True)
class Totals:
    filled: int
    average_price: float
    pending: int  # still working at the broker
    all_final: bool


def _filled(order: Order) -> int:
    # A COMPLETE order filled everything, whatever a lenient reply left in filled_quantity.
    if order.status is OrderStatus.COMPLETE:
        return max(order.filled_quantity, order.quantity)
    return max(order.filled_quantity, 0)


def totals(children: Sequence[Order]) -> Totals:
    filled = sum(_filled(o) for o in children)
    value = sum(_filled(o) * o.average_price for o in children)
    pending = sum(max(o.quantity - o.filled_quantity, 0) for o in children if not o.is_final)
    return Totals(
        filled=filled,
        average_price=value / filled if filled else 0.0,
        pending=pending,
        all_final=all(o.is_final for o in children),
    )


def next_watch_step(
    children: Mapping[str, Order | None],
    *,
    expected: int,
    resting_for: Mapping[str, float],
    reprices: Mapping[str, int],
    rest_timeout: float,
    cancelled_by_us: frozenset[str] | set[str] = frozenset(),
    max_reprices: int = 2,
) -> WatchStep:
    """The next step for an exit of ``expected`` quantity made of ``children`` (None: not readable yet).

    ``resting_for`` says how long each working child has shown quantity pending without progress; a
    market-protected exit can fill partly and leave the rest OPEN at the protection price (Kite forum,
    comment 52991: "the remaining quantity can continue to remain open/pending ... The order remains OPEN
    while the remaining quantity is pending"), so after ``rest_timeout`` it is re-priced (modified to
    MARKET), and after ``max_reprices`` modifications its rest is cancelled (``cancelled_by_us``) and
    placed afresh. A refusal fails the exit unless it is the freeze quantity's (then the rest is sliced).
    """
    known = [o for o in children.values() if o is not None]
    if len(known) < len(children):
        return WatchStep(Step.WAIT)
    total = totals(known)
    if not total.all_final:
        for order_id, order in children.items():
            if order is None or order.is_final:
                continue
            if order.quantity - order.filled_quantity <= 0:
                continue
            if resting_for.get(order_id, 0.0) < rest_timeout:
                continue
            if reprices.get(order_id, 0) < max_reprices:
                return WatchStep(Step.REPRICE, order_id=order_id, why="rest pending past the limit")
            return WatchStep(Step.CANCEL, order_id=order_id, why="rest still pending after re-pricing")
        return WatchStep(Step.WAIT)
    if total.filled >= expected:
        return WatchStep(Step.CLOSE, quantity=total.filled, price=total.average_price)
    refusals = [o for o in known if o.status is OrderStatus.REJECTED]
    freeze = bool(refusals) and all(is_freeze_refusal(o.status_message) for o in refusals)
    if refusals and not freeze:
        why = "; ".join(sorted({o.status_message or o.raw_status for o in refusals}))
        return WatchStep(
            Step.FAIL,
            quantity=expected - total.filled,
            price=total.average_price,
            why=f"the broker rejected the exit: {why}",
            refused=True,
            filled=total.filled,
        )
    foreign = [o for o in known if o.status is OrderStatus.CANCELLED and o.order_id not in cancelled_by_us]
    if foreign:
        # Someone else cancelled it (the trader, on the broker's site): sending it again would be an order
        # nobody asked for. The trader decides (retry).
        return WatchStep(Step.FAIL, why="the exit order was cancelled outside TrailStop")
    # What we cancelled ourselves (a stuck remainder), or what the exchange wants sliced: send the rest.
    return WatchStep(Step.PLACE_REST, quantity=expected - total.filled, sliced=freeze)
