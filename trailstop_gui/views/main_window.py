"""The main window. For now it shows the stored protections; the full trading views come next."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QMainWindow,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import Protection

COLUMNS = ("Symbol", "Side", "Qty", "Product", "Entry", "Stop", "Rule", "Status")


class MainWindow(QMainWindow):
    """Top-level window: remembers its geometry, lists the protections it was given."""

    def __init__(self, protections: list[Protection], data_location: str) -> None:
        super().__init__()
        self.setWindowTitle("TrailStop")
        self.setMinimumSize(720, 420)
        central = QWidget(self)
        layout = QVBoxLayout(central)
        heading = QLabel("<b>Protected positions</b>", central)
        layout.addWidget(heading)
        # A snapshot table is enough until the live positions model lands; it never updates per tick.
        self.table = QTableWidget(len(protections), len(COLUMNS), central)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for row, p in enumerate(protections):
            values = (
                p.symbol,
                "Long" if p.side.is_long else "Short",
                str(p.filled_quantity or p.quantity),
                p.product.value,
                "" if p.entry_price is None else f"{p.entry_price:.2f}",
                "" if p.stop is None else f"{p.stop:.2f}",
                p.rule.describe(),
                p.status.value,
            )
            for column, text in enumerate(values):
                item = QTableWidgetItem(text)
                if column in (2, 4, 5):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        layout.addWidget(self.table)
        if not protections:
            layout.addWidget(QLabel("No protections yet.", central))
        self.setCentralWidget(central)
        self.statusBar().showMessage(f"Data: {data_location}")
        self._restore_geometry()

    def _restore_geometry(self) -> None:
        saved = QSettings().value("main_window/geometry")
        if isinstance(saved, QByteArray) and not saved.isEmpty():
            self.restoreGeometry(saved)
        else:
            self.resize(960, 600)

    def closeEvent(self, event: QCloseEvent) -> None:
        QSettings().setValue("main_window/geometry", self.saveGeometry())
        super().closeEvent(event)
