"""PositionsModel: a well-behaved Qt model, correct figures, colours by state, and coalesced updates."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, QModelRoleData, QModelRoleDataSpan, Qt, QTimer
from PySide6.QtWidgets import QTableView
from pytestqt.qtbot import QtBot

from trailstop_gui.models.domain import Product, Protection, SafetyKind, SafetyState, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.feed_worker import Quote
from trailstop_gui.views import theme
from trailstop_gui.views.positions_model import (
    PID_ROLE,
    STATE_ROLE,
    Column,
    PositionsModel,
    PositionsProxy,
    RowState,
)


def protect(
    store: ProtectionStore,
    symbol: str = "INFY",
    instrument: int = 408065,
    side: Side = Side.BUY,
    entry: float = 1500.0,
    rule: TrailRule | None = None,
    status: Status = Status.OPEN,
    account_id: int | None = None,
    safety: bool = False,
) -> Protection:
    if account_id is None:
        account_id = (store.accounts() or [store.add_account("kite", "Zerodha")])[0].id
    return store.create_protection(
        account_id=account_id,
        broker="kite",
        instrument=instrument,
        symbol=symbol,
        exchange="NSE",
        side=side,
        product=Product.MIS,
        quantity=10,
        filled_quantity=10 if status is Status.OPEN else 0,
        tick_size=0.05,
        rule=rule or TrailRule.percent(2.0),
        entry_price=entry if status is Status.OPEN else None,
        status=status,
        safety_enabled=safety,
    )


def placed(
    store: ProtectionStore, p: Protection, level: float, kind: SafetyKind = SafetyKind.SL_M
) -> Protection:
    return store.update_safety(
        p.id,
        kind="safety_placed",
        safety_state=SafetyState.PLACED,
        safety_kind=kind,
        safety_order_id="S1",
        safety_level=level,
    )


def snapshot(account_id: int | None, quotes: dict[Any, float], stops: dict[int, float] | None = None) -> dict:
    out: dict[str, Any] = {
        "quotes": {i: Quote(i, ltp, ltp - 0.05, ltp + 0.05, 1_700_000_000.0) for i, ltp in quotes.items()},
        "stops": stops or {},
    }
    if account_id is not None:
        out["account_id"] = account_id
    return out


def cell(model: PositionsModel, pid: int, column: Column, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
    row = model.row_number(pid)
    assert row is not None
    return model.data(model.index(row, column), role)


def test_model_passes_the_model_tester(qtmodeltester: Any, store: ProtectionStore) -> None:
    long = placed(store, protect(store, safety=True), 1455.30)
    short = protect(store, "TCS", 2953217, Side.SELL, 3450.0, TrailRule.points(20, target=50))
    protect(store, "SBIN", 779521, status=Status.PENDING)
    model = PositionsModel()
    model.load(store.protections())
    model.apply_snapshot(snapshot(long.account_id, {408065: 1530.0, 2953217: 3400.0}, {long.id: 1499.4}))
    model.flush()
    qtmodeltester.check(model)
    proxy = PositionsProxy()
    proxy.setSourceModel(model)
    proxy.sort(Column.PNL, Qt.SortOrder.DescendingOrder)
    qtmodeltester.check(proxy)
    assert proxy.index(0, 0).data(PID_ROLE) == short.id  # +500 beats +300


def test_figures_for_a_long_and_a_short(store: ProtectionStore) -> None:
    long = protect(store)  # entry 1500, 2 % -> stop 1470
    short = protect(store, "TCS", 2953217, Side.SELL, 3450.0, TrailRule.points(20, target=50))
    model = PositionsModel()
    model.load(store.protections())
    model.apply_snapshot(snapshot(long.account_id, {408065: 1530.0, 2953217: 3400.0}))
    assert cell(model, long.id, Column.SIDE) == "Long"
    assert cell(model, long.id, Column.LTP) == "1,530.00"
    assert cell(model, long.id, Column.STOP) == "1,470.00"
    assert cell(model, long.id, Column.DISTANCE) == f"{(1530 - 1470) / 1530 * 100:.2f}%"
    assert cell(model, long.id, Column.PNL) == "+₹300.00"
    assert cell(model, short.id, Column.SIDE) == "Short"
    assert cell(model, short.id, Column.STOP) == "3,470.00"
    assert cell(model, short.id, Column.DISTANCE) == f"{(3470 - 3400) / 3400 * 100:.2f}%"
    assert cell(model, short.id, Column.PNL) == "+₹500.00"
    assert model.row_for(short.id).target_price() == 3400.0  # type: ignore[union-attr]
    model.apply_snapshot(snapshot(long.account_id, {408065: 1490.0}))
    assert cell(model, long.id, Column.PNL) == f"{theme.MINUS}₹100.00"
    assert cell(model, long.id, Column.QTY, Qt.ItemDataRole.TextAlignmentRole) & Qt.AlignmentFlag.AlignRight


def test_snapshots_only_touch_their_account_and_armed_stops(store: ProtectionStore) -> None:
    first = protect(store)
    other_account = store.add_account("upstox", "Upstox")
    second = protect(store, account_id=other_account.id)  # the same instrument key in another account
    pending = protect(store, "SBIN", 779521, status=Status.PENDING)
    model = PositionsModel()
    model.load(store.protections())
    touched = model.apply_snapshot(snapshot(first.account_id, {408065: 1520.0}, {pending.id: 700.0}))
    assert touched == [first.id]
    assert model.row_for(second.id).ltp is None  # type: ignore[union-attr]
    assert model.row_for(pending.id).stop is None  # type: ignore[union-attr]
    # A snapshot without an account (bench, tools) matches by instrument in every account.
    model.apply_snapshot(snapshot(None, {408065: 1525.0}))
    assert model.row_for(second.id).ltp == 1525.0  # type: ignore[union-attr]
    assert model.last_tick_at == 1_700_000_000.0


def test_state_colours(store: ProtectionStore, qtbot: QtBot) -> None:
    armed = protect(store)
    paused = protect(store, "TCS", 2953217)
    store.update(paused.id, kind="paused", paused=True)
    failed = protect(store, "SBIN", 779521)
    store.transition(failed.id, Status.TRIGGERED)
    store.transition(failed.id, Status.EXITING)
    store.transition(failed.id, Status.EXIT_FAILED)
    closed = protect(store, "ITC", 424961)
    store.transition(closed.id, Status.CLOSED, reason="external")
    exiting = protect(store, "HDFCBANK", 341249)
    store.transition(exiting.id, Status.TRIGGERED)
    model = PositionsModel()
    model.set_colors(theme.LIGHT)
    model.load(store.protections())
    c = theme.LIGHT

    def fg(pid: int, column: Column = Column.STATUS) -> Any:
        brush = cell(model, pid, column, Qt.ItemDataRole.ForegroundRole)
        return None if brush is None else brush.color()

    assert fg(armed.id) == c.armed and cell(model, armed.id, Column.STATUS) == "Armed"
    assert fg(paused.id) == c.paused and cell(model, paused.id, Column.STATUS) == "Paused"
    assert fg(failed.id) == c.failed and cell(model, failed.id, Column.STATUS) == "Exit failed"
    assert cell(model, failed.id, Column.SYMBOL, Qt.ItemDataRole.BackgroundRole).color() == c.failed_bg
    assert fg(exiting.id) == c.progress
    for column in Column:  # an ended protection is greyed across the row
        assert fg(closed.id, column) == c.closed
    assert cell(model, closed.id, Column.STATUS, STATE_ROLE) == RowState.CLOSED.value
    assert "external" in cell(model, closed.id, Column.STATUS, Qt.ItemDataRole.ToolTipRole)
    counts = model.counts()
    assert counts[RowState.ARMED] == 1 and counts[RowState.FAILED] == 1 and counts[RowState.CLOSED] == 1
    model.set_colors(theme.DARK)
    assert fg(armed.id) == theme.DARK.armed


def test_fonts_alignment_and_roles_the_model_does_not_answer(store: ProtectionStore) -> None:
    # data() keeps its fonts and brushes and dispatches on the role before anything else (a repaint asks
    # seven roles of every visible cell): the answers must stay what a fresh computation gives.
    armed = protect(store)
    failed = protect(store, "SBIN", 779521)
    store.transition(failed.id, Status.TRIGGERED)
    store.transition(failed.id, Status.EXITING)
    store.transition(failed.id, Status.EXIT_FAILED)
    closed = protect(store, "ITC", 424961)
    store.transition(closed.id, Status.CLOSED, reason="external")
    model = PositionsModel()
    model.load(store.protections())
    font = Qt.ItemDataRole.FontRole

    for pid in (armed.id, failed.id, closed.id):
        assert cell(model, pid, Column.SYMBOL, font).bold()
        assert cell(model, pid, Column.LTP, font) is None
    assert cell(model, failed.id, Column.STATUS, font).bold()
    status_font = cell(model, closed.id, Column.STATUS, font)
    assert status_font.italic() and not status_font.bold()
    assert cell(model, armed.id, Column.STATUS, font) is None
    right = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    left = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    assert cell(model, armed.id, Column.PNL, Qt.ItemDataRole.TextAlignmentRole) == right
    assert cell(model, armed.id, Column.SYMBOL, Qt.ItemDataRole.TextAlignmentRole) == left
    roles = Qt.ItemDataRole
    for role in (roles.DecorationRole, roles.CheckStateRole, roles.SizeHintRole):
        assert cell(model, armed.id, Column.SYMBOL, role) is None
    assert model.data(QModelIndex(), Qt.ItemDataRole.DisplayRole) is None
    assert model.data(QModelIndex(), PID_ROLE) is None


def test_proxy_hides_closed_unless_asked(store: ProtectionStore) -> None:
    protect(store)
    closed = protect(store, "ITC", 424961)
    store.transition(closed.id, Status.REMOVED)
    model = PositionsModel()
    model.load(store.protections())
    proxy = PositionsProxy(recent_s=0.0)
    proxy.setSourceModel(model)
    assert proxy.rowCount() == 1
    proxy.set_show_closed(True)
    assert proxy.rowCount() == 2


def test_a_protection_that_just_ended_stays_in_view_for_a_while(store: ProtectionStore) -> None:
    p = protect(store)
    model = PositionsModel()
    model.load(store.protections())
    proxy = PositionsProxy(recent_s=300.0)
    proxy.setSourceModel(model)
    model.upsert(store.transition(p.id, Status.CLOSED, reason="external"))
    assert proxy.rowCount() == 1  # greyed, still there
    proxy.recent_s = 0.0
    proxy._on_expire()
    assert proxy.rowCount() == 0


def test_upsert_inserts_and_keeps_the_live_price(store: ProtectionStore, qtbot: QtBot) -> None:
    p = protect(store)
    model = PositionsModel()
    model.load([])
    with qtbot.waitSignal(model.rowsInserted):
        model.upsert(p)
    model.apply_snapshot(snapshot(p.account_id, {408065: 1510.0}))
    model.upsert(store.update(p.id, kind="paused", paused=True))
    row = model.row_for(p.id)
    assert row is not None and row.paused and row.ltp == 1510.0
    assert model.rowCount() == 1


def test_many_snapshots_make_few_data_changed(store: ProtectionStore, qtbot: QtBot) -> None:
    protections = [protect(store, f"S{n}", 1000 + n) for n in range(50)]
    account_id = protections[0].account_id
    model = PositionsModel(flush_interval_ms=100)
    model.load(store.protections())
    emitted: list[tuple[int, int]] = []
    model.dataChanged.connect(lambda tl, br, _roles: emitted.append((tl.row(), br.row())))
    for k in range(500):
        model.apply_snapshot(snapshot(account_id, {1000 + n: 1500.0 + k * 0.05 for n in range(0, 50, 7)}))
    assert emitted == []  # nothing until the timer fires
    qtbot.waitUntil(lambda: len(emitted) == 1, timeout=2000)
    assert emitted == [(0, 49)]  # one signal spanning every dirty row
    qtbot.wait(250)
    assert len(emitted) == 1  # and nothing more without new data
    assert model.row_for(protections[0].id).ltp == pytest.approx(1500.0 + 499 * 0.05)  # type: ignore[union-attr]


def test_a_steady_stream_is_flushed_at_most_ten_times_a_second(store: ProtectionStore, qtbot: QtBot) -> None:
    p = protect(store)
    model = PositionsModel(flush_interval_ms=100)
    model.load(store.protections())
    emitted: list[QModelIndex] = []
    model.dataChanged.connect(lambda tl, _br, _roles: emitted.append(tl))
    pushes = [0]

    def push() -> None:
        pushes[0] += 1
        model.apply_snapshot(snapshot(p.account_id, {408065: 1500.0 + pushes[0] * 0.05}))

    timer = QTimer()
    timer.timeout.connect(push)
    timer.start(2)
    qtbot.wait(1000)
    timer.stop()
    assert pushes[0] > 100
    assert 3 <= len(emitted) <= 11


def test_the_model_sorts_itself_and_live_columns_at_most_once_a_second(
    store: ProtectionStore, qtbot: QtBot
) -> None:
    a = protect(store, "AAA", 1)
    b = protect(store, "BBB", 2)
    c = protect(store, "CCC", 3)
    model = PositionsModel(flush_interval_ms=10)
    model.load(store.protections())
    proxy = PositionsProxy()
    proxy.setSourceModel(model)
    model.apply_snapshot(snapshot(a.account_id, {1: 300.0, 2: 100.0, 3: 200.0}))
    model.flush()
    proxy.sort(Column.LTP, Qt.SortOrder.DescendingOrder)
    order = lambda: [proxy.index(r, 0).data(PID_ROLE) for r in range(proxy.rowCount())]  # noqa: E731
    assert order() == [a.id, c.id, b.id]
    layouts: list[bool] = []
    model.layoutChanged.connect(lambda *_: layouts.append(True))
    model.apply_snapshot(snapshot(a.account_id, {1: 50.0}))
    qtbot.waitUntil(lambda: model.row_for(a.id).ltp == 50.0 and not model._dirty, timeout=1000)  # type: ignore[union-attr]
    assert order() == [a.id, c.id, b.id]  # just sorted: the new order waits
    qtbot.waitUntil(lambda: order() == [c.id, b.id, a.id], timeout=2000)
    assert len(layouts) == 1
    proxy.sort(-1)
    assert order() == [a.id, b.id, c.id]  # back to the order they were created in


def test_a_row_that_ends_is_filtered_at_once(store: ProtectionStore) -> None:
    p = protect(store)
    model = PositionsModel()
    model.load(store.protections())
    proxy = PositionsProxy(recent_s=0.0)
    proxy.setSourceModel(model)
    assert proxy.rowCount() == 1
    model.upsert(store.transition(p.id, Status.REMOVED))
    assert proxy.rowCount() == 0


def test_safety_column_shows_level_state_colour_and_tooltip(store: ProtectionStore) -> None:
    plain = protect(store, "SBIN", 779521)
    long = placed(store, protect(store, safety=True), 1455.30)  # stop 1470
    short = placed(
        store, protect(store, "TCS", 2953217, Side.SELL, 3450.0, safety=True), 3553.95, SafetyKind.GTT
    )
    model = PositionsModel()
    model.set_colors(theme.LIGHT)
    c = theme.LIGHT
    model.load(store.protections())
    assert model.headerData(Column.SAFETY, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) == "Safety"
    assert cell(model, plain.id, Column.SAFETY) == theme.EM_DASH
    assert cell(model, long.id, Column.SAFETY) == "1,455.30 placed"
    assert cell(model, short.id, Column.SAFETY) == "3,553.95 placed"
    assert cell(model, long.id, Column.SAFETY, Qt.ItemDataRole.ForegroundRole) is None  # placed: as the row
    tip = cell(model, long.id, Column.SAFETY, Qt.ItemDataRole.ToolTipRole)
    assert "SL-M" in tip and "1 % or 5 ticks" in tip
    assert "GTT" in cell(model, short.id, Column.SAFETY, Qt.ItemDataRole.ToolTipRole)
    assert (
        cell(model, long.id, Column.SAFETY, Qt.ItemDataRole.TextAlignmentRole) & Qt.AlignmentFlag.AlignRight
    )

    def fg(pid: int) -> Any:
        brush = cell(model, pid, Column.SAFETY, Qt.ItemDataRole.ForegroundRole)
        return None if brush is None else brush.color()

    # Moving: muted. The stop moved on: the tooltip says where the safety stop belongs now.
    model.upsert(store.update_safety(long.id, kind="safety_moving", safety_state=SafetyState.MOVING))
    model.apply_snapshot(snapshot(long.account_id, {}, {long.id: 1500.0}))
    assert cell(model, long.id, Column.SAFETY) == "1,455.30 moving" and fg(long.id) == c.muted
    assert "belongs at 1,485.00" in cell(model, long.id, Column.SAFETY, Qt.ItemDataRole.ToolTipRole)
    # Missing: the warning colour, no level held.
    model.upsert(
        store.update_safety(
            long.id,
            kind="safety_missing",
            safety_state=SafetyState.MISSING,
            safety_order_id=None,
            safety_level=None,
        )
    )
    assert cell(model, long.id, Column.SAFETY) == "missing" and fg(long.id) == c.progress
    # Fired: as closed.
    model.upsert(
        store.update_safety(
            short.id, kind="safety_fired", safety_state=SafetyState.FIRED, safety_level=3553.95
        )
    )
    assert cell(model, short.id, Column.SAFETY) == "3,553.95 fired" and fg(short.id) == c.closed
    # Sorting on the column puts a row without a safety level last.
    model.sort(Column.SAFETY, Qt.SortOrder.AscendingOrder)
    assert [row.pid for row in model.rows()] == [short.id, plain.id, long.id]


def test_a_closed_row_leaves_the_view_when_its_time_is_up(store: ProtectionStore) -> None:
    p = protect(store, "ITC", 424961)
    store.transition(p.id, Status.CLOSED, reason="external")
    closed_at = store.get(p.id).closed_at
    assert closed_at is not None
    now = [closed_at.timestamp() + 5.0]
    model = PositionsModel()
    proxy = PositionsProxy(clock=lambda: now[0])
    proxy.setSourceModel(model)
    model.load(store.protections())
    assert proxy.rowCount() == 1  # just closed: still in view, with its realised P&L
    wait = proxy.next_expiry_s()
    assert wait is not None and wait <= 15.0  # seconds, not minutes
    assert proxy._expire.isActive() and proxy._expire.interval() <= 15_050
    now[0] += wait + 0.1
    proxy._expire.timeout.emit()  # the timer firing at that moment
    assert proxy.rowCount() == 0 and proxy.next_expiry_s() is None


def test_a_cell_in_one_call_through_the_proxy_answers_as_data_does(
    store: ProtectionStore, qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A repaint asks seven roles per cell; the proxy hands them to the model in one multiData call instead
    # of one data() call each. The answers must be data()'s, and a repaint must not fall back to data().
    long = placed(store, protect(store, safety=True), 1455.30)
    failed = protect(store, "SBIN", 779521)
    for status in (Status.TRIGGERED, Status.EXITING, Status.EXIT_FAILED):
        store.transition(failed.id, status)
    protect(store, "TCS", 2953217, Side.SELL, 3450.0)
    model = PositionsModel()
    model.load(store.protections())
    model.apply_snapshot(snapshot(long.account_id, {408065: 1530.0, 2953217: 3400.0}))
    model.flush()
    proxy = PositionsProxy()
    proxy.setSourceModel(model)
    roles = [
        Qt.ItemDataRole.DisplayRole,
        Qt.ItemDataRole.DecorationRole,
        Qt.ItemDataRole.FontRole,
        Qt.ItemDataRole.TextAlignmentRole,
        Qt.ItemDataRole.BackgroundRole,
        Qt.ItemDataRole.ForegroundRole,
        Qt.ItemDataRole.CheckStateRole,
        Qt.ItemDataRole.ToolTipRole,
        PID_ROLE,
        STATE_ROLE,
    ]
    for row in range(proxy.rowCount()):
        for column in range(proxy.columnCount()):
            index = proxy.index(row, column)
            for role in roles:
                item = QModelRoleData(role)
                proxy.multiData(index, QModelRoleDataSpan(item))
                assert item.data() == proxy.data(index, role), (row, column, role)

    asked: list[int] = []
    original = PositionsModel.data

    def counting(self: PositionsModel, index: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        asked.append(role)
        return original(self, index, role)

    monkeypatch.setattr(PositionsModel, "data", counting)
    painted = PositionsModel()  # made after the patch: PySide looks a Python override up once per object
    painted.load(store.protections())
    proxy = PositionsProxy()
    proxy.setSourceModel(painted)
    table = QTableView()
    qtbot.addWidget(table)
    table.setModel(proxy)
    table.resize(900, 300)
    table.show()
    qtbot.waitExposed(table)
    table.viewport().grab()
    assert painted.rowCount() == 3 and asked == []


def test_a_stop_on_the_underlying_is_measured_on_the_underlying(store: ProtectionStore) -> None:
    """An option trailing NIFTY 50: its stop (24,300) is a price of the index, so the distance is the
    index's from it, never the option's 110 against 24,300 (which read as -22,000 %)."""
    from trailstop_gui.models.underlying import UnderlyingRule

    put = protect(store, "NIFTY26DEC24000PE", 12345, Side.BUY, 100.0)
    call = protect(store, "NIFTY26DEC24000CE", 12346, Side.BUY, 100.0)
    store.update(put.id, stop=24400.0)  # a short view: the stop sits above the index
    store.update(call.id, stop=24300.0)  # a long view: below
    rules = {
        put.id: UnderlyingRule(256265, "NIFTY 50", "NSE", Side.SELL, 0.05, 24350.0),
        call.id: UnderlyingRule(256265, "NIFTY 50", "NSE", Side.BUY, 0.05, 24350.0),
    }
    model = PositionsModel()
    model.load(store.protections())
    model.apply_snapshot(snapshot(put.account_id, {12345: 110.0, 12346: 95.0, 256265: 24350.0}))
    assert cell(model, call.id, Column.DISTANCE) == theme.format_percent((95 - 24300) / 95 * 100)  # nonsense
    model.set_underlying_rules(rules.get)
    assert cell(model, call.id, Column.DISTANCE) == "—"  # the index's price comes with the next snapshot
    model.apply_snapshot(snapshot(put.account_id, {12345: 110.0, 12346: 95.0, 256265: 24350.0}))
    assert cell(model, call.id, Column.DISTANCE) == f"{(24350 - 24300) / 24350 * 100:.2f}%"
    assert cell(model, put.id, Column.DISTANCE) == f"{(24400 - 24350) / 24350 * 100:.2f}%"
    assert cell(model, call.id, Column.LTP) == "95.00"  # the option's own price stays in its column
    tip = cell(model, call.id, Column.DISTANCE, Qt.ItemDataRole.ToolTipRole)
    assert tip.startswith("Measured on NIFTY 50 (now 24,350.00)")
    stop_tip = cell(model, put.id, Column.STOP, Qt.ItemDataRole.ToolTipRole)
    assert stop_tip == "A price of NIFTY 50, not of NIFTY26DEC24000PE: the stop trails it (short view)"
    header = model.headerData(Column.DISTANCE, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert "stop on the underlying" in header
    model.apply_snapshot(snapshot(put.account_id, {256265: 24410.0}))
    assert model.row_for(put.id).stop_crossed()  # type: ignore[union-attr]
    assert not model.row_for(call.id).stop_crossed()  # type: ignore[union-attr]
    model.upsert(store.get(call.id))  # a row re-read from the store keeps the index's live price
    assert cell(model, call.id, Column.DISTANCE) == f"{(24410 - 24300) / 24410 * 100:.2f}%"
