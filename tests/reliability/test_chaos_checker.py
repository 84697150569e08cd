"""The chaos checker itself: with safety stops on, it must still catch a second exit, a stop left at the
broker and an order nobody sent, and it must not call the broker-held stop's own exit a violation.

A checker that cannot fail proves nothing; these feed it small hand-made worlds instead of a whole run.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from bench.chaos import PROTECTION_COLUMNS, Checker, RunReport, SimOrder, SimTrade, Violation
from trailstop_gui.models.domain import Side, TrailRule
from trailstop_gui.models.engine import initial_stop

RULE = TrailRule.percent(2.0)
TAG = "TSABCD000001"


class FakeRun:
    def __init__(self, gtts: list[dict[str, Any]]) -> None:
        self.report = RunReport(1, 1)
        self.gtts = gtts
        self.held: Counter[str] = Counter()  # no delivery holdings before the run

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
) -> list[str]:
    """Run the order and protection checks of a finished run; returns the kinds of violation found.

    ``held``: INFY delivery shares held before the run; ``bought``: today's buy before the exits.
    """
    run = FakeRun(gtts)
    run.held["NSE:INFY"] = held
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
    placed = [o.order_id for o in orders if o.tag == TAG]
    checker.events = {
        r["id"]: [
            ("created", "", "OPEN"),
            ("safety_placed", "", "safety_kind=GTT, safety_order_id=G1, safety_state=placed"),
            ("transition", "OPEN", "TRIGGERED"),
            ("transition", "TRIGGERED", "EXITING"),
            *[("exit_placed", "", oid) for oid in placed],
            ("transition", "EXITING", r["status"]),
        ]
        for r in rows
    }
    checker.load_safety()
    checker.check_orders({r["exit_tag"]: r for r in rows})
    for r in rows:
        checker.check_protection(r)
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
