"""RowsTableModel: what the table models here share (a flat list of rows, fixed headers): the journal,
the unprotected positions, the baskets and the accounts.

PositionsModel keeps its own: its data() is on the repaint path ten times a second while prices move,
where an extra Python call per cell costs more than the lines it would save.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt

AnyIndex = QModelIndex | QPersistentModelIndex
R = TypeVar("R")


class RowsTableModel(QAbstractTableModel, Generic[R]):
    """A flat, read-only table over ``self._rows``; subclasses name their headers and say each cell.

    ``HEADERS`` gives the columns; ``_cell(row, column, role)`` answers every role for a valid index;
    ``_alignment`` and ``_header_tip`` shape the header (and are free for cells to use too); None leaves
    it to Qt.
    """

    HEADERS: tuple[str, ...] = ()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[R] = []

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation is not Qt.Orientation.Horizontal or not 0 <= section < len(self.HEADERS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._header_tip(section)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self._alignment(section)
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        return self._cell(self._rows[index.row()], index.column(), role)

    def _cell(self, row: R, column: int, role: int) -> Any:
        raise NotImplementedError

    def _alignment(self, column: int) -> int | None:
        return None  # Qt's own (a header centred)

    def _header_tip(self, column: int) -> str | None:
        return None
