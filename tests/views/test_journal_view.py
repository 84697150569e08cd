"""The journal: readable events, filters by account, symbol and kind, CSV export with raw values."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.factories import protection
from trailstop_gui.models.domain import Side, Status, TrailRule
from trailstop_gui.models.store import JournalEntry, ProtectionStore
from trailstop_gui.views.journal_view import CSV_HEADER, JournalView, build_rows, describe_event, write_csv


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "j.db")
    kite = s.add_account("kite", "Zerodha", user_id="AB1234")
    upstox = s.add_account("upstox", "Upstox", user_id="UP9876")
    for account, symbol, instrument in ((kite, "INFY", 408065), (upstox, "TCS", "NSE_EQ|INE467B01029")):
        p = protection(s, account.id, quantity=5, broker=account.broker, symbol=symbol, instrument=instrument)
        s.record_stop(p.id, 1480.0, 1510.0)
        s.flush()
        s.transition(p.id, Status.TRIGGERED, reason="stop", price=1479.5)
    yield s
    s.close()


def entry(kind: str, old: str = "", new: str = "", message: str = "") -> JournalEntry:
    return JournalEntry(1, datetime(2026, 1, 5, 10, 15), 1, 1, kind, old, new, None, message)


def test_events_read_like_sentences() -> None:
    assert describe_event(entry("stop_moved", "1470", "1480.5")) == "Stop 1,470.00 → 1,480.50"
    assert describe_event(entry("transition", "OPEN", "TRIGGERED", "stop")) == "Armed → triggered (stop)"
    assert describe_event(entry("created", "", "OPEN", "2%")) == "Protection created (armed), trail 2%"
    rule = 'rule={"kind": "points", "value": 5.0}'
    assert describe_event(entry("rule_changed", "", rule)) == "Rule now 5 pts"
    assert describe_event(entry("paused", "", "paused=True")) == "Trailing paused: no stop fires"
    assert describe_event(entry("entry_fill", "", "entry_price=1500.5, filled_quantity=3")) == (
        "Entry 3 filled at 1,500.50"
    )
    assert (
        describe_event(entry("exit_placed", "", "X123", "quantity 3")) == "Exit order X123 sent, quantity 3"
    )
    assert describe_event(entry("something_new", "a", "b", "why")) == "a → b (why)"


def test_rows_carry_account_and_symbol_newest_first(store: ProtectionStore) -> None:
    rows = build_rows(store)
    assert rows[0].entry.id > rows[-1].entry.id
    assert {(r.account, r.symbol) for r in rows} == {("Zerodha", "INFY"), ("Upstox", "TCS")}


def test_filters_by_account_symbol_and_kind(qtbot: QtBot, store: ProtectionStore) -> None:
    view = JournalView(store)
    qtbot.addWidget(view)
    total = view.model.rowCount()
    assert total == 6  # two protections: created, stop moved, triggered each
    # The routine stop moves are hidden until asked for.
    assert not view.stop_moves.isChecked() and view.proxy.rowCount() == 4
    assert view.count.text() == f"4 of {total} events"
    view.stop_moves.setChecked(True)
    assert view.proxy.rowCount() == total and view.count.text() == f"{total} events"
    upstox = store.accounts()[1].id
    view.set_filters(account_id=upstox, stop_moves=True)
    assert view.proxy.rowCount() == total // 2
    assert {r.symbol for r in view.proxy.visible_rows()} == {"TCS"}
    view.set_filters(symbol="inf", stop_moves=True)
    assert {r.symbol for r in view.proxy.visible_rows()} == {"INFY"}
    view.set_filters(kind="stop_moved")  # asking for the kind shows them whatever the box says
    assert [r.entry.kind for r in view.proxy.visible_rows()] == ["stop_moved", "stop_moved"]
    assert view.count.text() == f"2 of {total} events"
    assert view.kind.currentData() == "stop_moved" and view.symbol.text() == ""


def test_csv_export_writes_the_filtered_rows(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> None:
    view = JournalView(store)
    qtbot.addWidget(view)
    view.set_filters(kind="transition")
    target = tmp_path / "journal.csv"
    view.ask_path = lambda: str(target)
    with qtbot.waitSignal(view.exported) as blocker:
        view.export_button.click()
    assert blocker.args == [str(target), 2]
    with open(target, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_HEADER
    assert {r[4] for r in rows[1:]} == {"INFY", "TCS"}
    assert {(r[5], r[6], r[7], r[8], r[9]) for r in rows[1:]} == {
        ("transition", "OPEN", "TRIGGERED", "1479.5", "stop")
    }
    view.ask_path = lambda: None  # a cancelled dialog writes nothing
    view.export_button.click()
    assert len(list(tmp_path.glob("*.csv"))) == 1


def test_write_csv_needs_no_widget(store: ProtectionStore, tmp_path: Path) -> None:
    path = tmp_path / "all.csv"
    assert write_csv(path, build_rows(store)) == 6
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(CSV_HEADER)


def test_new_events_are_added_on_top_without_reloading_the_rest(qtbot: QtBot, store: ProtectionStore) -> None:
    view = JournalView(store)
    qtbot.addWidget(view)
    view.set_filters(symbol="INFY")
    shown_before = view.proxy.rowCount()
    first_row = view.model.row_at(0)
    resets: list[bool] = []
    view.model.modelReset.connect(lambda: resets.append(True))
    infy = next(p.id for p in store.protections() if p.symbol == "INFY")
    store.transition(infy, Status.EXITING, exit_order_id="X1")
    wipro = protection(
        store,
        store.accounts()[0].id,
        quantity=2,
        side=Side.SELL,
        rule=TrailRule.points(3.0),
        entry_price=250.0,
        symbol="WIPRO",
        instrument=969473,
    )
    assert view.refresh_new() == 2 and view.refresh_new() == 0
    assert resets == [] and view.model.row_at(2) == first_row  # the old rows stayed where they were
    assert [(r.symbol, r.entry.kind) for r in view.model.rows()[:2]] == [
        ("WIPRO", "created"),
        ("INFY", "transition"),
    ]
    assert view.proxy.rowCount() == shown_before + 1  # the filter applies to the new rows too
    view.set_filters(symbol="WIP")  # the new symbol is known to the filter
    assert [r.entry.protection_id for r in view.proxy.visible_rows()] == [wipro.id]
    assert view.symbol.completer().model().rowCount() == 3


def test_csv_export_escapes_cells_a_spreadsheet_would_run(store: ProtectionStore, tmp_path: Path) -> None:
    account = store.add_account("kite", '=HYPERLINK("http://x")', user_id="EV1234")
    store.journal("alert", account_id=account.id, message="+cmd|' /C calc'!A0")
    store.journal("alert", account_id=account.id, message="@SUM(1+1)")
    store.journal("alert", account_id=account.id, message="-2+3")
    store.journal("alert", account_id=account.id, message="plain words, 2-3 = fine")
    path = tmp_path / "escaped.csv"
    write_csv(path, build_rows(store))
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.reader(handle) if r[1] == str(account.id)]
    assert {r[2] for r in rows} == {'\'=HYPERLINK("http://x")'}
    assert sorted(r[9] for r in rows) == sorted(
        ["'+cmd|' /C calc'!A0", "'@SUM(1+1)", "'-2+3", "plain words, 2-3 = fine"]
    )


def test_the_closing_row_carries_the_realised_pnl_on_screen_and_in_csv(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path
) -> None:
    infy = next(p for p in store.protections() if p.symbol == "INFY")
    store.transition(infy.id, Status.EXITING, exit_order_id="X1")
    store.transition(infy.id, Status.CLOSED, exit_price=1479.0, exit_quantity=5)
    view = JournalView(store)
    qtbot.addWidget(view)
    view.set_filters(symbol="INFY")
    closing = next(n for n, r in enumerate(view.proxy.visible_rows()) if r.entry.new == "CLOSED")
    shown = view.proxy.index(closing, view.model.PNL).data()
    assert shown == "−₹105.00"  # 5 x (1479 - 1500)
    assert {view.proxy.index(n, view.model.PNL).data() for n in range(view.proxy.rowCount())} == {"", shown}
    path = tmp_path / "pnl.csv"
    write_csv(path, build_rows(store))
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["realised_pnl"] for r in rows if r["new"] == "CLOSED"] == ["-105.00"]
