"""RowsTableModel: the table models built on it (journal, unprotected positions) keep Qt's model contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from tests.factories import protection
from trailstop_gui.models.domain import Product, Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import Position
from trailstop_gui.views.journal_view import JournalModel, build_rows
from trailstop_gui.views.positions_view import UnprotectedModel

DISPLAY = Qt.ItemDataRole.DisplayRole
HORIZONTAL = Qt.Orientation.Horizontal


def test_the_journal_model(qtmodeltester: Any, tmp_path: Path) -> None:
    store = ProtectionStore(tmp_path / "t.db")
    try:
        account = store.add_account("kite", "Zerodha", user_id="AB1234")
        p = protection(store, account.id, quantity=5)
        store.transition(p.id, Status.TRIGGERED, reason="stop", price=1479.5)
        model = JournalModel()
        model.set_rows(build_rows(store))
    finally:
        store.close()
    qtmodeltester.check(model)
    assert model.rowCount() >= 2 and model.columnCount() == len(JournalModel.HEADERS)
    assert model.headerData(JournalModel.PRICE, HORIZONTAL, DISPLAY) == "Price"
    assert model.data(model.index(0, JournalModel.SYMBOL)) == "INFY"
    assert model.data(model.index(0, JournalModel.PRICE)) == "1,479.50"
    assert model.data(model.index(model.rowCount(), 0)) is None


def test_the_unprotected_model(qtmodeltester: Any) -> None:
    model = UnprotectedModel()
    position = Position("INFY", "NSE", 408065, "NSE:INFY", -3, 1500.0, Product.MIS, "MIS", 1490.0, 30.0)
    model.set_positions(1, "Zerodha", [position])
    qtmodeltester.check(model)
    assert [model.data(model.index(0, c)) for c in range(3)] == ["Zerodha", "INFY", "Short"]
    numeric = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    assert model.headerData(3, HORIZONTAL, Qt.ItemDataRole.TextAlignmentRole) == numeric
    assert model.headerData(1, HORIZONTAL, Qt.ItemDataRole.ToolTipRole) is None
