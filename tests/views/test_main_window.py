"""The main window opens offscreen and shows what the store holds."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.views.main_window import COLUMNS, MainWindow


def test_window_lists_live_protections(qtbot: QtBot, tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "w.db") as store:
        account = store.add_account("kite", "Zerodha")
        store.create_protection(
            account_id=account.id,
            broker="kite",
            instrument=408065,
            symbol="INFY",
            exchange="NSE",
            side=Side.SELL,
            product=Product.CNC,
            quantity=5,
            filled_quantity=5,
            tick_size=0.05,
            rule=TrailRule.points(5),
            entry_price=1500.0,
            status=Status.OPEN,
            stop=1505.0,
        )
        window = MainWindow(store.live(), str(tmp_path))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "TrailStop"
    table = window.table
    assert table.rowCount() == 1 and table.columnCount() == len(COLUMNS)
    row = [table.item(0, c).text() for c in range(len(COLUMNS))]
    assert row == ["INFY", "Short", "5", "CNC", "1500.00", "1505.00", "5 pts", "OPEN"]
