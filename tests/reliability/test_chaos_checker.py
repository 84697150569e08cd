"""The chaos checker itself: with safety stops on, it must still catch a second exit, a stop left at the
broker and an order nobody sent, and it must not call the broker-held stop's own exit a violation. The
slices of one sliced exit are one exit; protections sharing a position must not sell more than it holds.

A checker that cannot fail proves nothing; these feed it small hand-made worlds instead of a whole run.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from bench.chaos import PROTECTION_COLUMNS, Checker, RunReport, SimOrder, SimTrade, Violation
from bench.chaos.config import INJECTED_REJECTION
from trailstop_gui.models.domain import Side, TrailRule
from trailstop_gui.models.engine import initial_stop

RULE = TrailRule.percent(2.0)
TAG = "TSABCD000001"


class FakeRun:
    def __init__(self, gtts: list[dict[str, Any]]) -> None:
        self.report = RunReport(1, 1)
        self.gtts = gtts
        self.held: Counter[str] = Counter()  # no delivery holdings before the run
        self.outside_tags: set[str] = set()  # the trader's own orders
        self.extra_protections: set[int] = set()

    def control(self, path: str) -> Any:
        assert path == "gtts"
        return self.gtts

    def violation(self, kind: str, detail: str) -> None:
        self.report.violations.append(Violation(1, kind, detail))


def row(**overrides: Any) -> dict[str, Any]:
    values = dict.fromkeys(PROTECTION_COLUMNS)
    values.update(
        id=1,
        broker="kite",
        instrument="408065",
        symbol="INFY",
        exchange="NSE",
        side="BUY",
        product="CNC",
        quantity=10,
        filled_quantity=10,
        entry_price=100.0,
        tick_size=0.05,
        rule=json.dumps(RULE.to_dict()),
        stop=initial_stop(Side.BUY, 100.0, 0.05, RULE),
        status="CLOSED",
        reason="stop",
        exit_tag=TAG,
        exit_quantity=10,
        created_at="2026-11-25 09:15:00",
        closed_at="2026-11-25 09:20:00",
        safety_enabled=1,
        safety_kind="GTT",
        safety_state="removed",
    )
    values.update(overrides)
    return values


def order(order_id: str, tag: str, status: str = "COMPLETE", **kw: Any) -> SimOrder:
    fields: dict[str, Any] = dict(
        order_id=order_id,
        broker="kite",
        symbol="NSE:INFY",
        product="CNC",
        side="SELL",
        quantity=10,
        filled=10 if status == "COMPLETE" else 0,
        status=status,
        status_message="",
        tag=tag,
        received_at=20.0,
    )
    fields.update(kw)
    return SimOrder(**fields)


def gtt(gtt_id: str, status: str, order_id: str | None = None) -> dict[str, Any]:
    return {"broker": "kite", "id": gtt_id, "status": status, "symbol": "NSE:INFY", "order_id": order_id}


def check(
    rows: list[dict[str, Any]],
    orders: list[SimOrder],
    gtts: list[dict[str, Any]],
    held: int = 0,
    bought: int = 10,
    children: dict[int, list[list[str]]] | None = None,
    outside: frozenset[str] = frozenset(),
) -> list[str]:
    """Run the order and protection checks of a finished run; returns the kinds of violation found.

    ``held``: INFY delivery shares held before the run; ``bought``: today's buy before the exits;
    ``children``: the order ids each protection journalled together (``exit_children``); ``outside``:
    the tags of the trader's own orders.
    """
    run = FakeRun(gtts)
    run.held["NSE:INFY"] = held
    run.outside_tags.update(outside)
    checker = Checker.__new__(Checker)
    checker.run, checker.report = run, run.report  # type: ignore[assignment]
    checker.orders = orders
    buys = [SimTrade("E1", "kite", "NSE:INFY", rows[0]["product"], "BUY", bought, 1.0)] if bought else []
    filled = [o for o in orders if o.filled]
    sells = [
        SimTrade(o.order_id, "kite", "NSE:INFY", o.product, "SELL", o.filled, 30.0 + i)
        for i, o in enumerate(filled)
    ]
    checker.trades = [*buys, *sells]
    checker.rows = rows
    checker.children = children or {}
    checker.events = {
        r["id"]: [
            ("created", "", "OPEN"),
            ("safety_placed", "", "safety_kind=GTT, safety_order_id=G1, safety_state=placed"),
            ("transition", "OPEN", "TRIGGERED"),
            ("transition", "TRIGGERED", "EXITING"),
            # One exit_placed per exit (its first order): slices and rests are journalled as its children.
            *([("exit_placed", "", r["exit_order_id"])] if r["exit_order_id"] else []),
            ("transition", "EXITING", r["status"]),
        ]
        for r in rows
    }
    checker.load_safety()
    checker.check_orders({r["exit_tag"]: r for r in rows})
    for r in rows:
        checker.check_protection(r)
    if len(rows) > 1:
        checker.check_shared(("kite", "NSE:INFY", rows[0]["product"]), rows)
    return [v.kind for v in run.report.violations]


def test_our_exit_alone_with_the_gtt_deleted_is_clean() -> None:
    assert check([row(exit_order_id="X1")], [order("X1", TAG)], [gtt("G1", "deleted")]) == []


def test_a_fired_gtt_that_closed_the_position_is_its_one_exit() -> None:
    closed = row(reason="safety stop", exit_order_id="O7", safety_state="fired")
    assert check([closed], [order("O7", "")], [gtt("G1", "triggered", "O7")]) == []


def test_a_fired_gtt_and_our_own_exit_are_two_exits() -> None:
    kinds = check(
        [row(exit_order_id="X1")],
        [order("X1", TAG), order("O7", "")],
        [gtt("G1", "triggered", "O7")],
    )
    assert "more than one exit" in kinds and "exit larger than the open position" in kinds


def test_a_gtt_left_active_after_the_protection_ended_is_a_violation() -> None:
    kinds = check([row(exit_order_id="X1")], [order("X1", TAG)], [gtt("G1", "active")])
    assert kinds == ["safety stop left at the broker"]


def test_an_slm_turned_into_the_exit_is_clean_and_one_left_waiting_is_not() -> None:
    slm = row(product="MIS", safety_kind="SL-M", exit_order_id="S1", safety_state="exit")
    assert check([slm], [order("S1", TAG + "S", product="MIS")], []) == []
    waiting = row(product="MIS", safety_kind="SL-M", exit_order_id="X1")
    kinds = check(
        [waiting],
        [order("X1", TAG, product="MIS"), order("S2", TAG + "S", "TRIGGER PENDING", product="MIS")],
        [],
    )
    assert kinds == ["safety stop left at the broker"]


def test_orders_and_gtts_nobody_sent_are_violations() -> None:
    kinds = check(
        [row(exit_order_id="X1")],
        [order("X1", TAG), order("Z9", "", "OPEN")],
        [gtt("G1", "deleted"), gtt("G2", "active")],
    )
    assert sorted(kinds) == ["GTT of unknown origin", "order of unknown origin"]


def test_an_exit_of_delivery_holdings_is_measured_against_them() -> None:
    """Holdings count as open delivery shares beside today's trades: selling 10 of 10 held is clean,
    selling 10 of 6 held is one exit too large."""
    assert (
        check([row(exit_order_id="X1")], [order("X1", TAG)], [gtt("G1", "deleted")], held=10, bought=0) == []
    )
    kinds = check([row(exit_order_id="X1")], [order("X1", TAG)], [gtt("G1", "deleted")], held=6, bought=0)
    assert kinds == ["exit larger than the open position"]


def test_a_delivery_sale_protected_as_a_short_is_a_violation() -> None:
    short = row(side="SELL", exit_order_id="X1", safety_enabled=0, safety_kind="", safety_state="off")
    kinds = check([short], [order("X1", TAG, side="BUY")], [], held=10, bought=0)
    assert "delivery sale protected as a short" in kinds


# ------------------------------------------------------------------------- slices, origins, shared positions

TAG2 = "TSABCD000002"


def test_the_slices_of_one_kite_autoslice_exit_are_one_exit() -> None:
    """Kite: every slice keeps the tag and names its parent (``autoslice:<parent>``); 4 + 4 + 2 of 10."""
    slices = [
        order("X1", TAG, quantity=4, filled=4, tags=(TAG, "autoslice", "autoslice:X1")),
        order("X2", TAG, quantity=4, filled=4, tags=(TAG, "autoslice", "autoslice:X1")),
        order("X3", TAG, quantity=2, filled=2, tags=(TAG, "autoslice", "autoslice:X1")),
    ]
    assert check([row(exit_order_id="X1")], slices, [gtt("G1", "deleted")]) == []


def test_upstox_slices_are_one_exit_only_as_the_app_journalled_them() -> None:
    """Upstox names no parent: the ids one sliced place answered (journalled) are one exit; the same
    orders with no such record are three exits, and together more than the position."""
    slices = [order(f"U{i}", TAG, quantity=q, filled=q) for i, q in enumerate((4, 4, 2), 1)]
    journalled = {1: [["U1", "U2", "U3"]]}
    assert check([row(exit_order_id="U1")], slices, [gtt("G1", "deleted")], children=journalled) == []
    kinds = check([row(exit_order_id="U1")], slices, [gtt("G1", "deleted")])
    assert kinds == ["more than one exit"]


def test_slices_that_sell_more_than_the_position_are_flagged() -> None:
    slices = [
        order("X1", TAG, quantity=8, filled=8, tags=(TAG, "autoslice", "autoslice:X1")),
        order("X2", TAG, quantity=4, filled=4, tags=(TAG, "autoslice", "autoslice:X1")),
    ]
    kinds = check([row(exit_order_id="X1", exit_quantity=12)], slices, [gtt("G1", "deleted")])
    assert kinds == ["exit larger than the open position"]


def test_the_rest_of_a_partly_filled_exit_placed_again_is_the_same_exit() -> None:
    """6 of 10 filled, the rest cancelled by the app and placed again (journalled as its child)."""
    first = order("X1", TAG, "CANCELLED", quantity=10, filled=6)
    rest = order("X2", TAG, quantity=4, filled=4, received_at=25.0)
    assert (
        check([row(exit_order_id="X1")], [first, rest], [gtt("G1", "deleted")], children={1: [["X2"]]}) == []
    )


def test_an_order_nobody_asked_for_is_flagged_even_with_a_harness_like_tag() -> None:
    """Only tags the trader really sent are the trader's; our exit tag on another instrument is not ours."""
    traders = order("T1", "CX1N1", "OPEN", side="BUY")
    assert (
        check(
            [row(exit_order_id="X1")],
            [order("X1", TAG), traders],
            [gtt("G1", "deleted")],
            outside=frozenset({"CX1N1"}),
        )
        == []
    )
    kinds = check(
        [row(exit_order_id="X1")],
        [
            order("X1", TAG),
            order("T9", "CX1N9", "OPEN", side="BUY"),
            order("W1", TAG, "REJECTED", symbol="NSE:TCS"),
        ],
        [gtt("G1", "deleted")],
        outside=frozenset({"CX1N1"}),
    )
    assert kinds == ["order of unknown origin", "order of unknown origin"]


def test_two_protections_sharing_a_position_exit_their_shares() -> None:
    """10 held, shared 6 + 4: both exits together are the position. Clean."""
    first = row(exit_order_id="X1", exit_quantity=6)
    second = row(id=2, exit_tag=TAG2, exit_order_id="Y1", exit_quantity=4)
    orders = [order("X1", TAG, quantity=6, filled=6), order("Y1", TAG2, quantity=4, filled=4)]
    assert check([first, second], orders, [gtt("G1", "deleted")]) == []


def test_two_protections_each_selling_the_whole_shared_position_are_flagged() -> None:
    """Both exits arrive before either fills: each alone fits the position, together they sell it twice."""
    first = row(exit_order_id="X1")
    second = row(id=2, exit_tag=TAG2, exit_order_id="Y1")
    orders = [order("X1", TAG), order("Y1", TAG2)]
    kinds = check([first, second], orders, [gtt("G1", "deleted")])
    assert "exits larger than a shared position" in kinds


def test_an_exit_refused_above_the_freeze_quantity_and_sent_again_sliced_is_one_exit() -> None:
    """Found by the chaos run with freeze_quantity (Upstox takes the order, the exchange rejects it): the
    database keeps the refused first order's id, the slices sent next are journalled as its children."""
    refused = order("U1", TAG, "REJECTED", filled=0, status_message="Quantity 10 exceeds the freeze limit")
    slices = [order("U2", TAG, quantity=6, filled=6), order("U3", TAG, quantity=4, filled=4)]
    journalled = {1: [["U2", "U3"]]}
    rows = [row(exit_order_id="U1")]
    assert check(rows, [refused, *slices], [gtt("G1", "deleted")], children=journalled) == []
    # The same slices with nothing journalled: two exits, and the database names neither.
    kinds = check(rows, [refused, *slices], [gtt("G1", "deleted")])
    assert "more than one exit" in kinds


def test_a_sliced_rest_whose_first_slice_was_refused_is_still_one_exit_and_a_refusal() -> None:
    """Found by make chaos-safety (run 4, seed 30303): an exit of 29 refused above the freeze limit of 8,
    the rest sent sliced (4 orders, journalled together); the injected rejection hit the first slice, the
    other three filled 21 and the protection ended EXIT_FAILED. The checker joined the slices only through
    the refused first one (not among the exits) and saw three exits, and counted the refusal as an exit
    given up because some slices had filled."""
    refused = order(
        "U1",
        TAG,
        "REJECTED",
        quantity=10,
        filled=0,
        status_message="Quantity 10 exceeds the freeze limit of 4",
    )
    first = order("U2", TAG, "REJECTED", quantity=4, filled=0, status_message=INJECTED_REJECTION)
    slices = [order("U3", TAG, quantity=4, filled=4), order("U4", TAG, quantity=2, filled=2)]
    journalled = {1: [["U2", "U3", "U4"]]}
    failed = row(
        exit_order_id="U1", status="EXIT_FAILED", reason=f"the broker rejected the exit: {INJECTED_REJECTION}"
    )
    assert check([failed], [refused, first, *slices], [gtt("G1", "deleted")], children=journalled) == []
    # A refusal that was not injected is still an exit given up.
    real = order("U2", TAG, "REJECTED", quantity=4, filled=0, status_message="RMS: something else")
    kinds = check([failed], [refused, real, *slices], [gtt("G1", "deleted")], children=journalled)
    assert kinds == ["exit given up"]
