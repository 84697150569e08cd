"""The detail pane: bounded history, the stop as steps, the trigger marker, the protection's journal."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests.factories import protection
from trailstop_gui.models.domain import Product, SafetyKind, SafetyState, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.feed_worker import Quote
from trailstop_gui.views.detail_pane import ChartHistory, DetailPane, Series, stop_steps
from trailstop_gui.views.positions_model import PositionsModel


def test_series_is_bounded_and_keeps_the_latest() -> None:
    s = Series(100)
    for n in range(1000):
        s.add(float(n), float(n))
    assert len(s) <= 125 and s.last() == 999.0
    assert s.points()[-1] == (999.0, 999.0)
    s.add(999.5, 5.0, resolution=1.0)  # within the same second: replaces the last point
    assert s.points()[-1] == (999.0, 5.0)


def test_stop_steps_hold_each_level_until_the_next() -> None:
    assert stop_steps([(0.0, 98.0), (10.0, 99.0)], until=20.0) == [
        (0.0, 98.0),
        (10.0, 98.0),
        (10.0, 99.0),
        (20.0, 99.0),
    ]
    assert stop_steps([], until=5.0) == []


def test_history_keys_prices_by_account_and_instrument() -> None:
    h = ChartHistory(price_points=10)
    h.record_snapshot(
        {"account_id": 1, "quotes": {7: Quote(7, 100.0, None, None, 1.0)}, "stops": {3: 95.0}}, now=1.0
    )
    h.record_snapshot(
        {"account_id": 1, "quotes": {7: Quote(7, 101.0, None, None, 3.0)}, "stops": {3: 95.0}}, now=3.0
    )
    series = h.price_series(1, 7)
    assert series is not None and series.points() == [(1.0, 100.0), (3.0, 101.0)]
    assert h.price_series(2, 7) is None
    assert h.stops[3].points() == [(1.0, 95.0)]  # an unchanged stop adds no point


def pane_over(qtbot: QtBot, store: ProtectionStore) -> tuple[PositionsModel, DetailPane]:
    """A pane over a positions model loaded with what the store holds now."""
    model = PositionsModel()
    model.load(store.protections())
    pane = DetailPane(store, model)
    qtbot.addWidget(pane)
    return model, pane


def test_pane_plots_price_stop_entry_target_and_the_trigger(qtbot: QtBot, store: ProtectionStore) -> None:
    p = protection(store, product=Product.CNC, rule=TrailRule.points(20, target=100))
    model, pane = pane_over(qtbot, store)
    pane.resize(900, 320)
    pane.show()
    assert pane.stack.currentIndex() == 0  # nothing selected: the hint
    pane.show_protection(p.id)
    assert pane.stack.currentIndex() == 1
    now = time.time()
    for k, price in enumerate((1500.0, 1510.0, 1530.0, 1525.0)):
        snap = {
            "account_id": p.account_id,
            "quotes": {408065: Quote(408065, price, None, None, now + k * 2)},
            "stops": {p.id: max(1480.0, price - 20)},
        }
        touched = model.apply_snapshot(snap)
        pane.history.record_snapshot(snap, now=now + k * 2)
        pane.on_snapshot(touched)
    qtbot.waitUntil(lambda: pane.chart.price.count() == 4, timeout=2000)
    assert [pane.chart.price.at(i).y() for i in range(4)] == [1500.0, 1510.0, 1530.0, 1525.0]
    stops = {pane.chart.stop.at(i).y() for i in range(pane.chart.stop.count())}
    assert {1480.0, 1490.0, 1510.0} <= stops
    assert pane.chart.entry.isVisible() and pane.chart.entry.at(0).y() == 1500.0
    assert pane.chart.target.isVisible() and pane.chart.target.at(0).y() == 1600.0
    assert not pane.chart.trigger.isVisible()
    assert pane.facts["Target"].text() == "1,600.00" and pane.facts["P&L"].text() == "+₹75.00"
    assert pane.journal_model.rowCount() >= 1

    store.transition(p.id, Status.TRIGGERED, reason="stop", price=1509.0, stop=1510.0)
    model.upsert(store.get(p.id))
    pane.on_protection_changed(p.id)
    qtbot.waitUntil(lambda: pane.chart.trigger.isVisible(), timeout=2000)
    assert pane.chart.trigger.at(0).y() == 1509.0
    qtbot.waitUntil(lambda: any(r.entry.new == "TRIGGERED" for r in pane.journal_model.rows()), timeout=3000)
    assert pane.status_pill.text().strip() == "Triggered"
    pane.show_protection(-1)
    assert pane.stack.currentIndex() == 0 and pane.chart.price.count() == 0


def test_pane_draws_the_safety_stop_as_a_second_dashed_step_line(
    qtbot: QtBot, store: ProtectionStore
) -> None:
    p = protection(store, rule=TrailRule.points(20), safety_enabled=True)
    store.update_safety(
        p.id,
        kind="safety_placed",
        safety_state=SafetyState.PLACED,
        safety_kind=SafetyKind.SL_M,
        safety_order_id="S1",
        safety_level=1465.2,
    )
    model, pane = pane_over(qtbot, store)
    pane.resize(900, 320)
    pane.show()
    pane.show_protection(p.id)
    chart = pane.chart
    assert chart.safety.isVisible() and chart.safety.pen().style() == Qt.PenStyle.DashLine
    assert chart.safety in chart.chart().series() and chart.stop in chart.chart().series()
    assert {chart.safety.at(i).y() for i in range(chart.safety.count())} == {1465.2}
    assert pane.facts["Safety"].text() == "1,465.20 placed" and pane.facts["Stop"].text() == "1,480.00"

    # The broker's stop moves with the trail: a second step, read from the store on protection_changed.
    store.update_safety(p.id, kind="safety_moved", safety_state=SafetyState.PLACED, safety_level=1475.1)
    model.upsert(store.get(p.id))
    pane.on_protection_changed(p.id)
    qtbot.waitUntil(lambda: chart.safety.at(chart.safety.count() - 1).y() == 1475.1, timeout=2000)
    assert {chart.safety.at(i).y() for i in range(chart.safety.count())} == {1465.2, 1475.1}
    assert pane.facts["Safety"].text() == "1,475.10 placed"
    # Taken away: the line ends there instead of running on to now.
    time.sleep(0.05)
    store.update_safety(p.id, kind="safety_removed", safety_state=SafetyState.REMOVED, safety_order_id=None)
    model.upsert(store.get(p.id))
    pane.on_protection_changed(p.id)
    qtbot.waitUntil(lambda: pane.facts["Safety"].text() == "1,475.10 removed", timeout=2000)
    pane.refresh_now()
    ends = max(chart.safety.at(i).x() for i in range(chart.safety.count()))
    assert ends < max(chart.stop.at(i).x() for i in range(chart.stop.count()))

    # A new pane (TrailStop restarted) draws the same line from the journal alone.
    again = DetailPane(store, model)
    qtbot.addWidget(again)
    again.show_protection(p.id)
    assert {again.chart.safety.at(i).y() for i in range(again.chart.safety.count())} == {1465.2, 1475.1}


def test_a_protection_without_a_safety_stop_has_no_safety_line(qtbot: QtBot, store: ProtectionStore) -> None:
    p = protection(store, product=Product.CNC, rule=TrailRule.points(20))
    model, pane = pane_over(qtbot, store)
    pane.show_protection(p.id)
    assert pane.chart.stop.count() > 0
    assert pane.chart.safety.count() == 0 and not pane.chart.safety.isVisible()
    assert pane.facts["Safety"].text() == "—"


def test_the_pane_shows_the_whole_rule(qtbot: QtBot, store: ProtectionStore) -> None:
    rule = TrailRule.points(20, activation=10, ladder_step=8, ladder_raise=4, breakeven=5, target=100)
    p = protection(store, product=Product.CNC, rule=rule)
    model, pane = pane_over(qtbot, store)
    pane.show()
    pane.show_protection(p.id)
    pane.refresh_now()
    text = pane.rule_label.text()
    assert text.startswith("20 pts trail") and "starts after a 10 pts move" in text
    assert "every 8 pts raises it 4 pts" in text and "breakeven after 5 pts" in text
    assert "target 100 pts" in text


def test_the_stop_line_starts_where_the_stop_started_not_at_its_first_move(
    qtbot: QtBot, store: ProtectionStore
) -> None:
    p = protection(store, product=Product.CNC, rule=TrailRule.points(20))
    armed_at = p.created_at.timestamp()
    model, pane = pane_over(qtbot, store)
    pane.show()
    # The first move arrives while another protection is selected: this run sees the stop from there on.
    moved = {"account_id": p.account_id, "quotes": {408065: Quote(408065, 1510.0, None, None, armed_at + 30)}}
    snap = dict(moved, stops={p.id: 1490.0})
    model.apply_snapshot(snap)
    pane.history.record_snapshot(snap, now=armed_at + 30)
    pane.show_protection(p.id)
    pane.refresh_now()
    points = [(pane.chart.stop.at(i).x(), pane.chart.stop.at(i).y()) for i in range(pane.chart.stop.count())]
    assert points[0] == (armed_at * 1000.0, 1480.0)  # the initial stop, drawn from when it was armed
    assert (round(points[-1][1], 2)) == 1490.0
