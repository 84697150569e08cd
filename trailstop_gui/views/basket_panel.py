"""The baskets beside the positions: a table (state, MTM, lock, loss limit, distance), New / Edit / Remove,
and the selected basket's MTM charted with its lock as a step line and the loss limit."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QHBoxLayout,
    QHeaderView,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.basket_store import Basket, BasketStatus
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService
from trailstop_gui.views.basket_dialog import BasketDialog
from trailstop_gui.views.detail_pane import PriceChart
from trailstop_gui.views.protection_rules_dialog import ProtectionRulesDialog
from trailstop_gui.views.table_model import RowsTableModel

REFRESH_MS = 500
COLUMNS = ("Basket", "State", "MTM", "Lock", "Loss limit", "Distance", "Rules")


def _money(value: object) -> str:
    if not isinstance(value, int | float):
        return "—"
    return f"-₹{-value:,.2f}" if value < 0 else f"₹{value:,.2f}"


class BasketTableModel(RowsTableModel[tuple[Basket, dict[str, float | None] | None]]):
    """One row per basket: its stored state and, while armed, the live figures."""

    HEADERS = COLUMNS

    def __init__(self, baskets: BasketService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.baskets = baskets

    def _cell(self, row: tuple[Basket, dict[str, float | None] | None], column: int, role: int) -> Any:
        basket, live = row
        live = live or {}
        if role == Qt.ItemDataRole.ToolTipRole:
            # The whole reason ("lock: MTM 1,616.00 reached 1,650.00"); the cell names only its kind.
            return f"{basket.status.value}: {basket.reason}" if column == 1 and basket.reason else None
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if column == 0:
            return basket.name
        if column == 1:
            kind = basket.reason.split(":", 1)[0].strip()
            return basket.status.value + (f" ({kind})" if kind else "")
        if column == 2:
            return _money(live.get("mtm", basket.breach_mtm))
        if column == 3:
            return _money(live.get("lock", basket.lock))
        if column == 4:
            return _money(None if basket.rules.max_loss is None else -basket.rules.max_loss)
        if column == 5:
            return _money(live.get("distance"))
        return basket.rules.describe()

    def reload(self) -> None:
        self.beginResetModel()
        self._rows = [(b, self.baskets.preview(b.id)) for b in self.baskets.baskets.baskets()]
        self.endResetModel()

    def basket_at(self, row: int) -> Basket | None:
        return self._rows[row][0] if 0 <= row < len(self._rows) else None

    def row_of(self, basket_id: int | None) -> int | None:
        return next((row for row, (b, _live) in enumerate(self._rows) if b.id == basket_id), None)


class BasketPanel(QWidget):
    """Baskets: the table, its actions and the chart of the selected basket's MTM with its lock."""

    message_posted = Signal(str)

    def __init__(
        self,
        baskets: BasketService,
        parent: QWidget | None = None,
        *,
        square_off: SquareOffService | None = None,
        underlying: UnderlyingService | None = None,
    ) -> None:
        super().__init__(parent)
        self.baskets = baskets
        self.square_off = square_off
        self.underlying = underlying
        self.rules_dialog: ProtectionRulesDialog | None = None
        self.model = BasketTableModel(baskets, self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setStretchLastSection(True)
        for column in range(len(COLUMNS) - 1):  # every figure whole; the rules take the rest
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.new_button = QPushButton("New basket…")
        self.edit_button = QPushButton("Edit…")
        self.remove_button = QPushButton("Remove")
        self.rules_button = QPushButton("Exit time / underlying…")
        self.rules_button.setToolTip("A protection's timed square-off, or its stop on the underlying")
        self.rules_button.setVisible(square_off is not None and underlying is not None)
        self.chart = PriceChart(self)
        self.chart.price.setName("MTM (₹)")
        self.chart.stop.setName("Lock (₹)")
        self.chart.entry.setName("Loss limit (₹)")
        buttons = QHBoxLayout()
        for button in (self.new_button, self.edit_button, self.remove_button, self.rules_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.chart, 2)
        self.dialog: BasketDialog | None = None
        self._selected: int | None = None
        self.new_button.clicked.connect(self.new_basket)
        self.edit_button.clicked.connect(self.edit_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.rules_button.clicked.connect(self.protection_rules)
        baskets.basket_changed.connect(lambda _id: self.refresh())
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()

    def selected(self) -> Basket | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.basket_at(rows[0].row()) if rows else None

    def refresh(self) -> None:
        current = self.selected()
        keep = self._selected if current is None else current.id
        self.model.reload()
        row = self.model.row_of(keep)
        if row is not None:
            self.table.selectRow(row)
        basket = self.selected()
        self._selected = None if basket is None else basket.id
        self.edit_button.setEnabled(basket is not None and basket.status is BasketStatus.ACTIVE)
        self.remove_button.setEnabled(basket is not None and basket.status is BasketStatus.ACTIVE)
        self.plot(basket)

    def plot(self, basket: Basket | None) -> None:
        if basket is None:
            self.chart.clear()
            return
        points = self.baskets.series(basket.id)
        mtms = [(t, value) for t, value, _lock in points]
        locks = [(t, lock) for t, _value, lock in points if lock is not None]
        loss = None if basket.rules.max_loss is None else -basket.rules.max_loss
        self.chart.plot(mtms, locks, entry=loss, target=None, trigger=None, until=time.time())

    def new_basket(self) -> None:
        self._open(BasketDialog(self.baskets, None, self))

    def edit_selected(self) -> None:
        basket = self.selected()
        if basket is not None:
            self._open(BasketDialog(self.baskets, basket, self))

    def _open(self, dialog: BasketDialog) -> None:
        self.dialog = dialog
        dialog.accepted.connect(lambda: self._saved(dialog))
        dialog.open()

    def _saved(self, dialog: BasketDialog) -> None:
        if dialog.saved is not None:
            self._selected = dialog.saved.id
            self.message_posted.emit(f"Basket {dialog.saved.name}: {dialog.saved.rules.describe()}")
        self.refresh()

    def protection_rules(self, pid: int | None = None) -> ProtectionRulesDialog | None:
        if self.square_off is None or self.underlying is None:
            return None
        dialog = ProtectionRulesDialog(self.square_off, self.underlying, pid, self)
        self.rules_dialog = dialog
        dialog.open()
        return dialog

    def remove_selected(self) -> None:
        basket = self.selected()
        if basket is None:
            return
        answer = QMessageBox.question(
            self,
            "Remove basket",
            f"Stop watching basket {basket.name}? Its positions keep their own stops.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.baskets.remove(basket.id)
            self.refresh()


def add_basket_dock(
    window: QMainWindow,
    baskets: BasketService,
    square_off: SquareOffService | None = None,
    underlying: UnderlyingService | None = None,
) -> BasketPanel:
    """The baskets as a dock of the main window (below the positions; movable, restored with the layout)."""
    panel = BasketPanel(baskets, window, square_off=square_off, underlying=underlying)
    dock = QDockWidget("Baskets", window)
    dock.setObjectName("basketsDock")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    panel.message_posted.connect(lambda text: window.statusBar().showMessage(text, 8000))
    return panel
