"""The journal: every event of every protection, filterable by account, symbol and kind, exportable to CSV."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QCompleter,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import Protection, TrailRule
from trailstop_gui.models.store import JournalEntry, ProtectionStore
from trailstop_gui.views import theme
from trailstop_gui.views.table_model import RowsTableModel

AnyIndex = QModelIndex | QPersistentModelIndex

KIND_LABELS = {
    "created": "Created",
    "transition": "State change",
    "stop_moved": "Stop moved",
    "rule_changed": "Rule changed",
    "paused": "Paused",
    "resumed": "Resumed",
    "entry_placed": "Entry placed",
    "entry_fill": "Entry filled",
    "exit_placed": "Exit placed",
    "quantity_changed": "Quantity changed",
    "exit_waiting_login": "Exit waiting for login",
    "updated": "Updated",
}

STATE_WORDS = {
    "PENDING": "pending",
    "OPEN": "armed",
    "TRIGGERED": "triggered",
    "EXITING": "exiting",
    "EXIT_FAILED": "exit failed",
    "CLOSED": "closed",
    "CANCELLED": "cancelled",
    "REJECTED": "rejected",
    "REMOVED": "removed",
}

CSV_HEADER = (
    "time",
    "account_id",
    "account",
    "protection_id",
    "symbol",
    "kind",
    "old",
    "new",
    "price",
    "message",
    "realised_pnl",  # on the row where the protection closed: what the trade made or lost
)


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " ").capitalize())


def _number(text: str) -> str:
    try:
        return theme.format_price(float(text))
    except ValueError:
        return text


def _fields(text: str) -> dict[str, str]:
    """``a=1, b=2`` (how the store describes an update) -> {"a": "1", "b": "2"}; JSON values kept whole."""
    out: dict[str, str] = {}
    rest = text
    while rest:
        name, sep, value = rest.partition("=")
        if not sep:
            break
        if value.startswith("{"):
            depth, end = 0, len(value)
            for n, ch in enumerate(value):
                depth += ch == "{"
                depth -= ch == "}"
                if depth == 0:
                    end = n + 1
                    break
            out[name.strip()] = value[:end]
            rest = value[end:].lstrip(", ")
        else:
            item, _, rest = value.partition(", ")
            out[name.strip()] = item
    return out


def describe_event(entry: JournalEntry) -> str:
    """One line a trader can read: "Stop 98.00 → 99.50", "Armed → triggered (stop)", ..."""
    kind = entry.kind
    arrow = " \u2192 "
    if kind == "stop_moved":
        return f"Stop {_number(entry.old)}{arrow}{_number(entry.new)}"
    if kind == "transition":
        old = STATE_WORDS.get(entry.old, entry.old.lower())
        new = STATE_WORDS.get(entry.new, entry.new.lower())
        text = f"{old.capitalize()}{arrow}{new}"
        return text + (f" ({entry.message})" if entry.message else "")
    if kind == "created":
        state = STATE_WORDS.get(entry.new, entry.new.lower())
        return f"Protection created ({state})" + (f", trail {entry.message}" if entry.message else "")
    fields = _fields(entry.new) if "=" in entry.new else {}
    if kind == "rule_changed" and "rule" in fields:
        try:
            return "Rule now " + TrailRule.from_dict(json.loads(fields["rule"])).describe()
        except (ValueError, TypeError):
            pass
    if kind in ("paused", "resumed"):
        return "Trailing paused: no stop fires" if kind == "paused" else "Trailing resumed"
    if kind == "entry_placed" and "entry_order_id" in fields:
        return f"Entry order {fields['entry_order_id']} sent"
    if kind == "entry_fill":
        parts = []
        if "filled_quantity" in fields:
            parts.append(f"{fields['filled_quantity']} filled")
        if "entry_price" in fields:
            parts.append(f"at {_number(fields['entry_price'])}")
        return "Entry " + " ".join(parts) if parts else "Entry filled"
    if kind == "exit_placed":
        return f"Exit order {entry.new} sent" + (f", {entry.message}" if entry.message else "")
    pieces = [p for p in (entry.old, entry.new) if p]
    text = arrow.join(pieces)
    if entry.message:
        text = f"{text} ({entry.message})" if text else entry.message
    return text


@dataclass(frozen=True, slots=True)
class JournalRow:
    entry: JournalEntry
    account: str
    symbol: str
    realised: float | None = None  # the protection's realised P&L, on its closing row


def realised_pnl(p: Protection) -> float | None:
    """What a closed protection made or lost at its exit price (None: no entry or no exit price)."""
    if p.entry_price is None or p.exit_price is None:
        return None
    qty = p.exit_quantity or p.filled_quantity or p.quantity
    move = p.exit_price - p.entry_price if p.side.is_long else p.entry_price - p.exit_price
    return move * qty


def build_rows(
    store: ProtectionStore,
    *,
    protection_id: int | None = None,
    kinds: Iterable[str] | None = None,
    limit: int | None = None,
    after_id: int | None = None,
    symbols: dict[int, str] | None = None,
) -> list[JournalRow]:
    """Journal entries with their account label and symbol, newest first.

    ``after_id``: only entries newer than that one. ``symbols``: protection id -> symbol, known already;
    missing ones are looked up (and added to it), so that a refresh reads only what is new.
    """
    accounts = {a.id: a.label for a in store.accounts()}
    known = symbols if symbols is not None else {}
    realised: dict[int, float | None] = {}
    if protection_id is not None and protection_id not in known:
        try:
            known[protection_id] = store.get(protection_id).symbol
        except KeyError:
            pass
    elif protection_id is None and after_id is None:
        known.update((p.id, p.symbol) for p in store.protections())  # everything: one query
    entries = store.events(protection_id=protection_id, kinds=kinds, limit=limit, after_id=after_id)
    for pid in {e.protection_id for e in entries if e.protection_id is not None} - known.keys():
        try:
            known[pid] = store.get(pid).symbol
        except KeyError:
            known[pid] = ""
    for e in entries:
        if e.kind == "transition" and e.new == "CLOSED" and e.protection_id is not None:
            try:
                realised[e.protection_id] = realised_pnl(store.get(e.protection_id))
            except KeyError:
                realised[e.protection_id] = None
    return [
        JournalRow(
            e,
            accounts.get(e.account_id, "") if e.account_id is not None else "",
            known.get(e.protection_id, "") if e.protection_id is not None else "",
            realised.get(e.protection_id) if _closes(e) and e.protection_id is not None else None,
        )
        for e in reversed(entries)
    ]


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection, OWASP): a broker's
# message or an account label could carry one. Such text cells get a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A text cell as it is safe to open in a spreadsheet."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _closes(e: JournalEntry) -> bool:
    return e.kind == "transition" and e.new == "CLOSED"


def write_csv(path: str | os.PathLike[str], rows: Iterable[JournalRow]) -> int:
    """Write rows as CSV with raw values (ISO times, plain numbers). Returns how many were written."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for row in rows:
            e = row.entry
            writer.writerow(
                (
                    e.ts.isoformat(sep=" ", timespec="milliseconds"),
                    "" if e.account_id is None else e.account_id,
                    csv_text(row.account),
                    "" if e.protection_id is None else e.protection_id,
                    csv_text(row.symbol),
                    csv_text(e.kind),
                    csv_text(e.old),
                    csv_text(e.new),
                    "" if e.price is None else f"{e.price:.10g}",
                    csv_text(e.message),
                    "" if row.realised is None else f"{row.realised:.2f}",  # a number, as the price
                )
            )
            count += 1
    return count


class JournalModel(RowsTableModel[JournalRow]):
    """Journal rows, newest first."""

    TIME, ACCOUNT, SYMBOL, EVENT, DETAILS, PRICE, PNL = range(7)
    HEADERS = ("Time", "Account", "Symbol", "Event", "Details", "Price", f"Realised P&L ({theme.RUPEE})")
    KIND_ROLE = Qt.ItemDataRole.UserRole + 1
    ACCOUNT_ROLE = Qt.ItemDataRole.UserRole + 2
    SORT_ROLE = Qt.ItemDataRole.UserRole + 3

    def __init__(self, parent: QObject | None = None, *, time_format: str = "%d %b %H:%M:%S") -> None:
        super().__init__(parent)
        self._time_format = time_format
        self._colors = theme.colors()

    def _alignment(self, column: int) -> int:
        numeric = column in (self.PRICE, self.PNL)
        horizontal = Qt.AlignmentFlag.AlignRight if numeric else Qt.AlignmentFlag.AlignLeft
        return int(horizontal | Qt.AlignmentFlag.AlignVCenter)

    def _cell(self, row: JournalRow, column: int, role: int) -> Any:
        e = row.entry
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.TIME:
                return e.ts.strftime(self._time_format)
            if column == self.ACCOUNT:
                return row.account
            if column == self.SYMBOL:
                return row.symbol
            if column == self.EVENT:
                if e.kind == "transition":  # the state reached says more than "state change"
                    return STATE_WORDS.get(e.new, e.new.lower()).capitalize()
                return kind_label(e.kind)
            if column == self.DETAILS:
                return describe_event(e)
            if column == self.PNL:
                return "" if row.realised is None else theme.format_inr(row.realised)
            return "" if e.price is None else theme.format_price(e.price)
        if role == self.SORT_ROLE:
            if column == self.TIME:
                return float(e.id)  # ids follow time, and never tie
            if column == self.PRICE:
                return -1.0 if e.price is None else float(e.price)
            if column == self.PNL:
                return -1e18 if row.realised is None else row.realised
            return self._cell(row, column, Qt.ItemDataRole.DisplayRole)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self._alignment(column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == self.TIME:
                return e.ts.isoformat(sep=" ", timespec="milliseconds")
            if column == self.DETAILS:
                return describe_event(e)
        if role == Qt.ItemDataRole.ForegroundRole and column == self.PNL and row.realised:
            return self._colors.profit if row.realised > 0 else self._colors.loss
        if role == Qt.ItemDataRole.ForegroundRole and column in (self.EVENT, self.DETAILS):
            if e.kind == "stop_moved":
                return self._colors.muted  # the routine trail: quieter than what happened
            if e.kind == "transition" and e.new == "EXIT_FAILED":
                return self._colors.failed
            if e.kind == "transition" and e.new in ("TRIGGERED", "EXITING"):
                return self._colors.progress
            if e.kind == "transition" and e.new == "CLOSED":
                return self._colors.armed
        if role == self.KIND_ROLE:
            return e.kind
        if role == self.ACCOUNT_ROLE:
            return -1 if e.account_id is None else e.account_id
        return None

    def set_rows(self, rows: list[JournalRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def prepend_rows(self, rows: list[JournalRow]) -> None:
        """Newer entries (newest first) go on top; the rows already shown stay as they are."""
        if not rows:
            return
        self.beginInsertRows(QModelIndex(), 0, len(rows) - 1)
        self._rows[0:0] = rows
        self.endInsertRows()

    def rows(self) -> list[JournalRow]:
        return list(self._rows)

    def row_at(self, row: int) -> JournalRow:
        return self._rows[row]

    def set_colors(self, colors: theme.Colors) -> None:
        self._colors = colors
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(self.HEADERS) - 1))


class JournalProxy(QSortFilterProxyModel):
    """Filters by account id, symbol (substring, any case) and kind."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.account_id: int | None = None
        self.symbol = ""
        self.kind: str | None = None
        self.stop_moves = True
        self.setSortRole(JournalModel.SORT_ROLE)

    def set_filters(
        self,
        *,
        account_id: int | None = None,
        symbol: str = "",
        kind: str | None = None,
        stop_moves: bool = True,
    ) -> None:
        """``stop_moves=False`` hides the routine stop moves, unless ``kind`` asks for exactly those."""
        self.beginFilterChange()
        self.account_id, self.symbol, self.kind = account_id, symbol.strip().upper(), kind
        self.stop_moves = stop_moves
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        model = self.sourceModel()
        if not isinstance(model, JournalModel):
            return True
        row = model.row_at(source_row)
        if self.account_id is not None and row.entry.account_id != self.account_id:
            return False
        if self.symbol and self.symbol not in row.symbol.upper():
            return False
        if self.kind is None:
            return self.stop_moves or row.entry.kind != "stop_moved"
        return row.entry.kind == self.kind

    def visible_rows(self) -> list[JournalRow]:
        model = self.sourceModel()
        assert isinstance(model, JournalModel)
        return [model.row_at(self.mapToSource(self.index(r, 0)).row()) for r in range(self.rowCount())]


class JournalView(QWidget):
    """The whole journal in its own window, with filters and CSV export."""

    exported = Signal(str, int)  # path, rows written

    def __init__(
        self,
        store: ProtectionStore,
        parent: QWidget | None = None,
        *,
        changed: Any = None,
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.store = store
        self.setWindowTitle("TrailStop – Journal")
        self.setObjectName("journalView")
        self.model = JournalModel(self)
        self._last_id = 0  # the newest entry shown: a refresh reads only what came after it
        self._symbols: dict[int, str] = {}  # protection id -> symbol, for the rows
        self._known_symbols: set[str] = set()  # in the symbol filter's completer
        self.proxy = JournalProxy(self)
        self.proxy.setSourceModel(self.model)
        # Replaceable in tests: where to save the CSV (None: cancelled).
        self.ask_path: Callable[[], str | None] = self._ask_path

        self.account = QComboBox(self)
        self.account.setToolTip("Only this account's events")
        self.symbol = QLineEdit(self)
        self.symbol.setPlaceholderText("Symbol, e.g. INFY")
        self.symbol.setClearButtonEnabled(True)
        self.kind = QComboBox(self)
        self.kind.setToolTip("Only this kind of event")
        self.stop_moves = QCheckBox("S&top moves", self)
        self.stop_moves.setToolTip("Also list every move of every stop (there are many)")
        self.refresh_button = QPushButton("&Refresh", self)
        self.export_button = QPushButton("&Export CSV…", self)
        self.count = QLabel(self)

        filters = QHBoxLayout()
        account_label = QLabel("A&ccount", self)
        account_label.setBuddy(self.account)
        filters.addWidget(account_label)
        filters.addWidget(self.account)
        symbol_label = QLabel("&Symbol", self)
        symbol_label.setBuddy(self.symbol)
        filters.addWidget(symbol_label)
        filters.addWidget(self.symbol)
        kind_label_widget = QLabel("&Kind", self)
        kind_label_widget.setBuddy(self.kind)
        filters.addWidget(kind_label_widget)
        filters.addWidget(self.kind)
        filters.addWidget(self.stop_moves)
        filters.addStretch(1)
        filters.addWidget(self.count)
        filters.addWidget(self.refresh_button)
        filters.addWidget(self.export_button)

        self.table = QTableView(self)
        self.table.setObjectName("journalTable")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(JournalModel.DETAILS, QHeaderView.ResizeMode.Stretch)
        title = str(self.model.headerData(JournalModel.PNL, Qt.Orientation.Horizontal))
        header.resizeSection(JournalModel.PNL, self.fontMetrics().horizontalAdvance(title) + 24)
        for column, width in (
            (JournalModel.TIME, 130),
            (JournalModel.ACCOUNT, 150),
            (JournalModel.SYMBOL, 100),
            (JournalModel.EVENT, 120),
            (JournalModel.PRICE, 90),
        ):
            header.resizeSection(column, width)
        header.moveSection(header.visualIndex(JournalModel.PRICE), header.visualIndex(JournalModel.DETAILS))
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)

        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table)

        self.account.currentIndexChanged.connect(self._apply_filters)
        self.kind.currentIndexChanged.connect(self._apply_filters)
        self.symbol.textChanged.connect(self._apply_filters)
        self.stop_moves.toggled.connect(self._apply_filters)
        self.refresh_button.clicked.connect(self.reload)
        self.export_button.clicked.connect(self.export)
        QShortcut(QKeySequence.StandardKey.Refresh, self, self.reload)
        QShortcut(QKeySequence("Ctrl+S"), self, self.export)
        QShortcut(QKeySequence("Ctrl+F"), self, self.symbol.setFocus)
        QShortcut(QKeySequence.StandardKey.Close, self, self.close)
        self.setTabOrder(self.account, self.symbol)
        self.setTabOrder(self.symbol, self.kind)
        self.setTabOrder(self.kind, self.table)

        # Follow new events while open, at most once a second.
        self._reload_soon = QTimer(self)
        self._reload_soon.setSingleShot(True)
        self._reload_soon.setInterval(1000)
        self._reload_soon.timeout.connect(self._reload_if_visible)
        if changed is not None:
            changed.connect(lambda *_: self._reload_soon.start())
        self.resize(980, 560)
        self.reload()

    def reload(self) -> None:
        """Everything again (the Refresh button): what another process may have changed included."""
        self._symbols = {}
        rows = build_rows(self.store, symbols=self._symbols)
        self._last_id = rows[0].entry.id if rows else 0
        self.model.set_rows(rows)
        self._fill_filters(self.model.rows())
        self._update_count()

    def refresh_new(self) -> int:
        """Add the entries written since the last look; returns how many. Cheap for any journal size."""
        rows = build_rows(self.store, after_id=self._last_id, symbols=self._symbols)
        if not rows:
            return 0
        self._last_id = rows[0].entry.id
        self.model.prepend_rows(rows)
        kinds = {self.kind.itemData(i) for i in range(self.kind.count())}
        if {r.entry.kind for r in rows} - kinds or {r.symbol for r in rows if r.symbol} - self._known_symbols:
            self._fill_filters(self.model.rows())  # a new kind or symbol for the filters: rare
        else:
            self._update_count()  # the proxy filters the inserted rows by itself
        return len(rows)

    def _reload_if_visible(self) -> None:
        if self.isVisible():
            self.refresh_new()

    def _fill_filters(self, rows: list[JournalRow]) -> None:
        account_id, kind = self.account.currentData(), self.kind.currentData()
        for combo in (self.account, self.kind):
            combo.blockSignals(True)
            combo.clear()
        self.account.addItem("All accounts", None)
        for account in self.store.accounts():
            self.account.addItem(account.label, account.id)
        self.kind.addItem("All events", None)
        for k in sorted({r.entry.kind for r in rows}, key=kind_label):
            self.kind.addItem(kind_label(k), k)
        for combo, value in ((self.account, account_id), (self.kind, kind)):
            found = combo.findData(value)
            combo.setCurrentIndex(max(found, 0))
            combo.blockSignals(False)
        self._known_symbols = {r.symbol for r in rows if r.symbol}
        completer = QCompleter(sorted(self._known_symbols), self.symbol)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.symbol.setCompleter(completer)
        self._apply_filters()

    def set_filters(
        self,
        *,
        account_id: int | None = None,
        symbol: str = "",
        kind: str | None = None,
        stop_moves: bool = False,
    ) -> None:
        """Set the filter widgets (and so the filters) from code; stop moves hidden, as by default."""
        widgets = (self.account, self.kind, self.symbol, self.stop_moves)
        for widget in widgets:
            widget.blockSignals(True)
        self.account.setCurrentIndex(max(self.account.findData(account_id), 0))
        self.kind.setCurrentIndex(max(self.kind.findData(kind), 0))
        self.symbol.setText(symbol)
        self.stop_moves.setChecked(stop_moves)
        for widget in widgets:
            widget.blockSignals(False)
        self._apply_filters()

    def _apply_filters(self) -> None:
        self.proxy.set_filters(
            account_id=self.account.currentData(),
            symbol=self.symbol.text(),
            kind=self.kind.currentData(),
            stop_moves=self.stop_moves.isChecked(),
        )
        self._update_count()

    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count.setText(f"{shown} of {total} events" if shown != total else f"{total} events")

    def export_csv(self, path: str | os.PathLike[str]) -> int:
        """Write the rows shown (after filtering) to ``path``."""
        written = write_csv(path, self.proxy.visible_rows())
        self.exported.emit(os.fspath(path), written)
        return written

    def export(self) -> None:
        path = self.ask_path()
        if path:
            self.export_csv(path)

    def _ask_path(self) -> str | None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export journal", "trailstop-journal.csv", "CSV files (*.csv);;All files (*)"
        )
        return path or None

    def set_colors(self, colors: theme.Colors) -> None:
        self.model.set_colors(colors)
