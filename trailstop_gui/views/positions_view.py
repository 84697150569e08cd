"""The protected positions table with its actions, and the broker's positions that have no protection.

Every action goes to the ProtectionService, which returns at once (broker calls run on its pools). The
one blocking call, ``unprotected_positions``, is awaited by the refresh and Protect flows, coroutines on
the qasync loop, while it runs on a thread of its own (``services/async_calls.BlockingCalls``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import shiboken6
from PySide6.QtCore import (
    QItemSelection,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QFont, QFontMetrics, QKeySequence, QPainter, QPaintEvent, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QMessageBox,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncWrap

from trailstop_gui.models.basket_store import BasketStatus
from trailstop_gui.models.domain import Position, RuleKind, Side, Status, TrailRule
from trailstop_gui.models.engine import initial_stop
from trailstop_gui.models.lifecycle import TERMINAL
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.async_calls import BlockingCalls
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.holdings import DeliveryStock
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.session import not_watched_reason
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService
from trailstop_gui.settings import load_settings
from trailstop_gui.views import theme
from trailstop_gui.views.basket_dialog import BasketDialog
from trailstop_gui.views.positions_model import (
    ACCOUNT_NOT_LOADED,
    PID_ROLE,
    ROUTE_PROBLEMS,
    Column,
    PositionRow,
    PositionsModel,
    PositionsProxy,
    RowState,
)
from trailstop_gui.views.protection_rules_dialog import ProtectionRulesDialog
from trailstop_gui.views.rule_editor import RuleEditor, describe_in_full
from trailstop_gui.views.table_model import RowsTableModel

log = logging.getLogger("trailstop.views")

AnyIndex = QModelIndex | QPersistentModelIndex
DEFAULT_TICK = 0.05
UNPROTECTED_REFRESH_MS = 20_000


def place_safety_beside_stop(header: QHeaderView) -> None:
    """Show Status right after Symbol (always in view, never behind a sideways scroll) and Safety right
    after Stop; the model's column numbers stay as they are."""
    if header.count() > Column.SAFETY:
        header.moveSection(header.visualIndex(Column.SAFETY), header.visualIndex(Column.STOP) + 1)
    if header.count() > Column.STATUS:
        header.moveSection(header.visualIndex(Column.STATUS), header.visualIndex(Column.SYMBOL) + 1)


# What each column usually holds at its widest (its header counts too). Symbol and Status are fitted to
# the rows themselves whenever a row or a state changes (rare), never on every price.
COLUMN_SAMPLES = {
    Column.SIDE: "Short",
    Column.QTY: "10,000",
    Column.PRODUCT: "NRML",
    Column.ENTRY: "24,180.00",
    Column.LTP: "24,180.00",
    Column.STOP: "24,180.00",
    Column.SAFETY: "24,180.00 placed",
    Column.DISTANCE: "−10.00%",
    Column.PNL: "+₹1,00,000.00",
}
PADDING = 18


def size_columns(header: QHeaderView, metrics: QFontMetrics) -> None:
    header.setMinimumSectionSize(40)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    model = header.model()
    for column, sample in COLUMN_SAMPLES.items():
        title = model.headerData(column, Qt.Orientation.Horizontal) if model is not None else ""
        width = max(metrics.horizontalAdvance(sample), metrics.horizontalAdvance(str(title or "")))
        header.resizeSection(column, width + PADDING)


def fit_text_column(header: QHeaderView, column: int, texts: list[str], *, bold: bool = True) -> int:
    """Size ``column`` to its widest text (bold, as states needing attention and symbols are shown)."""
    font = QFont(header.font())
    font.setBold(bold)
    metrics = QFontMetrics(font)
    model = header.model()
    title = str(model.headerData(column, Qt.Orientation.Horizontal) or "") if model is not None else ""
    widest = max([metrics.horizontalAdvance(t) for t in texts] + [metrics.horizontalAdvance(title)])
    header.resizeSection(column, min(widest + PADDING, 320))
    return min(widest + PADDING, 320)


# ----------------------------------------------------------------- shared small widgets


class EmptyStateTableView(QTableView):
    """A table that says what to do when it has no rows, instead of showing a blank grid."""

    resized = Signal()

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.placeholder = placeholder

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.resized.emit()

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        model = self.model()
        if model is not None and model.rowCount() == 0 and self.placeholder:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().placeholderText().color())
            rect = self.viewport().rect().adjusted(24, 12, -24, -12)
            painter.drawText(
                rect, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self.placeholder
            )
            painter.end()


def section_title(text: str, parent: QWidget | None = None) -> QLabel:
    label = QLabel(text, parent)
    font = label.font()
    font.setBold(True)
    font.setPointSizeF(font.pointSizeF() * 1.08)
    label.setFont(font)
    return label


def ask_confirmation(parent: QWidget | None, title: str, text: str, accept_text: str) -> bool:
    """A question whose safe answer is the default: Enter never sends an order by accident."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(text)
    yes = box.addButton(accept_text, QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    box.exec()
    return box.clickedButton() is yes


# ----------------------------------------------------------------- the rule dialog


def parse_rule(kind_text: str, value_text: str, target_text: str, base: TrailRule | None = None) -> TrailRule:
    """Build a rule from the dialog's fields; ValueError names the field a trader sees.

    The optional activation, ladder and breakeven of ``base`` are kept when the unit stays the same
    (they are expressed in the rule's unit, so they would mean something else in the other one).
    """
    kind = RuleKind(kind_text)
    value_text, target_text = value_text.strip(), target_text.strip()
    if not value_text:
        raise ValueError("Trail value: enter how far the stop trails the price")
    try:
        value = float(value_text.replace(",", ""))
    except ValueError:
        raise ValueError(f"Trail value: {value_text!r} is not a number") from None
    if not value > 0:
        raise ValueError("Trail value: must be greater than 0")
    if kind is RuleKind.PERCENT and value >= 100:
        raise ValueError("Trail value: a percent must be below 100")
    target: float | None = None
    if target_text:
        try:
            target = float(target_text.replace(",", ""))
        except ValueError:
            raise ValueError(f"Target: {target_text!r} is not a number") from None
        if not target > 0:
            raise ValueError("Target: must be greater than 0, or left empty for no target")
    options: dict[str, float | None] = {"target": target}
    if base is not None and base.kind is kind:
        options.update(
            activation=base.activation,
            ladder_step=base.ladder_step,
            ladder_raise=base.ladder_raise,
            breakeven=base.breakeven,
        )
    try:
        return TrailRule(kind, value, **options)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("target"):
            raise ValueError("Target" + message[len("target") :]) from None
        raise ValueError("Trail value: " + message.split(": ", 1)[-1]) from None


class RuleDialog(QDialog):
    """The whole trailing rule (distance, activation, ladder, breakeven, target), with a live preview."""

    def __init__(
        self,
        parent: QWidget | None,
        *,
        title: str,
        subject: str,
        side: Side,
        quantity: int,
        reference_price: float | None,
        tick_size: float = DEFAULT_TICK,
        rule: TrailRule | None = None,
        current_stop: float | None = None,
        accept_text: str = "Apply",
        entry_price: float | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setModal(True)
        self._side = side
        self._quantity = quantity
        self._reference = reference_price
        self._entry = entry_price if entry_price is not None else reference_price
        self._tick = tick_size
        self._current_stop = current_stop
        self._rule: TrailRule | None = None

        heading = QLabel(subject, self)
        heading.setWordWrap(True)
        font = heading.font()
        font.setBold(True)
        heading.setFont(font)

        self.editor = RuleEditor(rule or TrailRule.percent(2.0), self)
        self.editor.set_reference_price(reference_price)
        self.kind = self.editor.kind
        self.value = self.editor.value
        self.target = self.editor.target
        self.preview = QLabel(self)
        self.preview.setWordWrap(True)
        self.preview.setTextFormat(Qt.TextFormat.RichText)
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {theme.colors().failed.name()};")
        self.error.hide()

        self.buttons = QDialogButtonBox(self)
        self.ok = self.buttons.addButton(accept_text, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.editor)
        layout.addWidget(self.preview)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        self.editor.rule_changed.connect(self._validate)
        self.setMinimumWidth(420)
        self._validate()

    def rule(self) -> TrailRule | None:
        return self._rule

    def _validate(self) -> None:
        problems = self.editor.errors()
        if problems:
            self._rule = None
            self.error.setText("\n".join(f"{field}: {message}" for field, message in problems))
            self.error.show()
            self.preview.setText("")
            self.ok.setEnabled(False)
            return
        self._rule = self.editor.rule()
        self.error.hide()
        self.ok.setEnabled(True)
        self.preview.setText(self._describe_preview(self._rule))

    def _describe_preview(self, rule: TrailRule) -> str:
        price = self._reference
        full = describe_in_full(rule)
        if price is None or price <= 0:
            return f"Trails {full} behind the price."
        stop = initial_stop(self._side, price, self._tick, rule)
        if self._current_stop is not None:
            # A new rule never loosens a stop already reached.
            stop = max(stop, self._current_stop) if self._side is Side.BUY else min(stop, self._current_stop)
        shown = theme.format_price(stop, self._tick)
        at = f"At {theme.format_price(price, self._tick)} the stop is <b>{shown}</b>"
        entry = self._entry
        if entry is None or entry <= 0:
            return f"{at}; trails {full}."
        # Measured from the entry: a stop past the entry locks a profit in, it risks nothing.
        result = (stop - entry if self._side is Side.BUY else entry - stop) * self._quantity
        if result >= 0:
            outcome = (
                f"hitting it locks in {theme.format_inr(result, signed=False)} of profit on {self._quantity}"
            )
        else:
            outcome = f"{theme.format_inr(-result, signed=False)} at risk from the entry on {self._quantity}"
        return f"{at}: {outcome}.<br>Trails {full}."

    def accept(self) -> None:
        if self._rule is None:
            return
        super().accept()


def ask_rule(
    parent: QWidget | None,
    *,
    title: str,
    subject: str,
    side: Side,
    quantity: int,
    reference_price: float | None,
    tick_size: float = DEFAULT_TICK,
    rule: TrailRule | None = None,
    current_stop: float | None = None,
    accept_text: str = "Apply",
    entry_price: float | None = None,
) -> TrailRule | None:
    dialog = RuleDialog(
        parent,
        title=title,
        subject=subject,
        side=side,
        quantity=quantity,
        reference_price=reference_price,
        tick_size=tick_size,
        rule=rule,
        current_stop=current_stop,
        accept_text=accept_text,
        entry_price=entry_price,
    )
    return dialog.rule() if dialog.exec() == QDialog.DialogCode.Accepted else None


# ----------------------------------------------------------------- the broker's unprotected positions


# A row of the unprotected list: a broker position, or one stock's delivery shares (holdings, today's buys).
Unprotected = Position | DeliveryStock


def _product_text(pos: Unprotected) -> str:
    if isinstance(pos, DeliveryStock) and pos.is_holding:
        return "CNC holding"
    return pos.product.value if pos.product is not None else pos.raw_product


class UnprotectedModel(RowsTableModel[tuple[int, str, Unprotected]]):
    """Broker positions and holdings with no live protection, per account; refreshed a few times a minute."""

    HEADERS = ("Account", "Symbol", "Side", "Qty", "Product", "Avg price", "LTP", f"P&L ({theme.RUPEE})")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._colors = theme.colors()

    def _alignment(self, column: int) -> int:
        horizontal = (
            Qt.AlignmentFlag.AlignRight if column >= 3 and column != 4 else Qt.AlignmentFlag.AlignLeft
        )
        return int(horizontal | Qt.AlignmentFlag.AlignVCenter)

    def _cell(self, row: tuple[int, str, Unprotected], column: int, role: int) -> Any:
        _account_id, label, pos = row
        if role == Qt.ItemDataRole.DisplayRole:
            values = (
                label,
                pos.symbol,
                "Long" if pos.quantity > 0 else "Short",
                theme.group_indian(abs(pos.quantity)),
                _product_text(pos),
                theme.format_price(pos.average_price),
                theme.format_price(pos.last_price),
                theme.format_inr(pos.pnl),
            )
            return values[column]
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self._alignment(column)
        if role == Qt.ItemDataRole.ForegroundRole and column == 7 and pos.pnl:
            return self._colors.profit if pos.pnl > 0 else self._colors.loss
        if role == Qt.ItemDataRole.ToolTipRole and column == 1:
            if isinstance(pos, DeliveryStock) and pos.is_holding:
                return (
                    f"{pos.exchange}:{pos.symbol}: {pos.quantity} delivery shares you can sell "
                    f"({pos.held} in holdings) have no trailing stop. Protect them to arm one."
                )
            return f"{pos.exchange}:{pos.symbol} has no trailing stop. Protect it to arm one."
        return None

    def set_positions(self, account_id: int, label: str, positions: list[Unprotected]) -> None:
        self.beginResetModel()
        self._rows = [r for r in self._rows if r[0] != account_id]
        self._rows.extend((account_id, label, p) for p in positions if p.quantity != 0)
        self._rows.sort(key=lambda r: (r[0], r[2].symbol))
        self.endResetModel()

    def drop_accounts(self, keep: set[int]) -> None:
        if any(r[0] not in keep for r in self._rows):
            self.beginResetModel()
            self._rows = [r for r in self._rows if r[0] in keep]
            self.endResetModel()

    def position_at(self, row: int) -> tuple[int, Unprotected] | None:
        if 0 <= row < len(self._rows):
            account_id, _label, pos = self._rows[row]
            return account_id, pos
        return None

    def set_colors(self, colors: theme.Colors) -> None:
        self._colors = colors
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(self.HEADERS) - 1))


# ----------------------------------------------------------------- the view


ConfirmFn = Callable[[str, str, str], bool]
AskRuleFn = Callable[..., TrailRule | None]


class PositionsView(QWidget):
    """The positions table, its actions and the unprotected-positions section."""

    selection_changed = Signal(int)  # the protection id now selected
    message_posted = Signal(str)  # a short status line for the status bar
    action_failed = Signal(str, str)  # what, why

    def __init__(
        self,
        service: ProtectionService,
        store: ProtectionStore,
        parent: QWidget | None = None,
        *,
        model: PositionsModel | None = None,
        refresh_interval_ms: int = UNPROTECTED_REFRESH_MS,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.store = store
        self.model = model or PositionsModel(self)
        self.proxy = PositionsProxy(self)
        self.proxy.setSourceModel(self.model)
        # Replaceable in tests: a question and a rule dialog, both modal in the real app.
        self.confirm: ConfirmFn = lambda title, text, accept: ask_confirmation(self, title, text, accept)
        self.ask_rule: AskRuleFn = lambda **kw: ask_rule(self, **kw)

        self._colors = theme.colors(self.palette())
        self._feed_problems: dict[int, str] = {}  # account id -> why its feed does not watch ("" if it does)
        self._route_problems: dict[int, str] = {}  # account id -> why its orders would not go out
        self._baskets: BasketService | None = None
        self._square_off: SquareOffService | None = None
        self._underlying: UnderlyingService | None = None
        self._build_actions()
        self._build_ui()

        self.flows = BlockingCalls("positions", workers=1)  # one broker question at a time is plenty
        self._in_flight: set[int] = set()  # accounts whose positions are being asked for
        # Exits the trader asked for: "exit sent" is said only once the broker took the order.
        self._exits_asked: dict[int, str] = {}
        self._fetch_debounce = QTimer(self)
        self._fetch_debounce.setSingleShot(True)
        self._fetch_debounce.setInterval(400)
        self._fetch_debounce.timeout.connect(self.fetch_unprotected_now)
        self._fetch_timer = QTimer(self)
        self._fetch_timer.setInterval(refresh_interval_ms)
        self._fetch_timer.timeout.connect(self.refresh_unprotected)
        self._fetch_timer.start()

        service.protection_changed.connect(self._on_protection_changed)
        service.session_state_changed.connect(self._on_session_state_changed)
        for account_id, session in service.sessions.items():
            state = getattr(session, "state", None)
            if state is not None:
                self._feed_problems[account_id] = not_watched_reason(state) or ""
        self.reload_all()
        self.refresh_unprotected()

    # ----------------------------------------------------------------- building

    def _build_actions(self) -> None:
        def action(text: str, shortcut: str | None, tip: str, slot: Callable[[], object]) -> QAction:
            act = QAction(text, self)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
                # Row actions answer only while the positions have focus: a key typed in the order
                # form must never touch a position.
                act.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            act.setToolTip(tip + (f" ({shortcut})" if shortcut else ""))
            act.setStatusTip(tip)
            act.triggered.connect(slot)
            return act

        self.act_modify = action(
            "&Modify rule…", "Ctrl+M", "Change how far the stop trails", self.modify_selected
        )
        self.act_pause = action("&Pause", "Ctrl+P", "Pause or resume trailing", self.toggle_pause_selected)
        self.act_exit = action(
            "E&xit now…", "Ctrl+Shift+E", "Send a market exit for this position", self.exit_selected
        )
        self.act_retry = action("&Retry exit", "Ctrl+R", "Send the failed exit again", self.retry_selected)
        self.act_remove = action(
            "Re&move protection…", "Del", "Stop protecting; the position stays open", self.remove_selected
        )
        self.act_protect = action(
            "Pro&tect…", None, "Arm a trailing stop on this broker position", self.protect_selected
        )
        self.act_refresh = action(
            "Re&fresh broker positions", "F5", "Ask the broker for its positions", self.refresh_unprotected
        )
        # Grouping and timing, shown once the window has the services behind them (set_basket_tools).
        self.act_basket = action(
            "Put in a &basket…",
            "Ctrl+B",
            "Watch the selected positions' MTM together: max loss, lock and trail",
            lambda: self.basket_selected(),  # not the slot itself: `checked` would arrive as a basket id
        )
        self.act_protection_rules = action(
            "Exit &time and underlying…",
            "Ctrl+T",
            "Exit this position at a time (IST), or trail and trigger it on another instrument",
            lambda: self.protection_rules_selected(),
        )
        self.group_actions = [self.act_basket, self.act_protection_rules]
        for act in self.group_actions:
            act.setVisible(False)
        self.act_show_closed = QAction("Show &closed", self)
        self.act_show_closed.setCheckable(True)
        self.act_show_closed.setShortcut(QKeySequence("Ctrl+H"))
        self.act_show_closed.setToolTip("Also list protections that have ended (Ctrl+H)")
        self.act_show_closed.toggled.connect(self.proxy.set_show_closed)
        self.row_actions = [self.act_modify, self.act_pause, self.act_exit, self.act_retry, self.act_remove]
        for act in (self.act_refresh, self.act_show_closed):
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        for act in [*self.row_actions, *self.group_actions, self.act_refresh, self.act_show_closed]:
            self.addAction(act)

    def _build_ui(self) -> None:
        self.title = section_title("Protected positions", self)
        self.show_closed = QCheckBox("Show closed", self)
        self.show_closed.setToolTip(self.act_show_closed.toolTip())
        self.show_closed.toggled.connect(self.act_show_closed.setChecked)
        self.act_show_closed.toggled.connect(self.show_closed.setChecked)

        # The sum a trader looks for first (Kite's positions page has it): open and closed today.
        self.total_pnl = QLabel(self)
        self.total_pnl.setObjectName("totalPnl")
        self.total_pnl.setTextFormat(Qt.TextFormat.RichText)

        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        buttons.addWidget(self.title)
        buttons.addSpacing(12)
        buttons.addWidget(self.total_pnl)
        buttons.addStretch(1)
        self._buttons: list[QToolButton] = []
        for act in self.row_actions:
            button = QToolButton(self)
            button.setDefaultAction(act)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setAutoRaise(False)
            buttons.addWidget(button)
            self._buttons.append(button)
        buttons.addSpacing(8)
        buttons.addWidget(self.show_closed)

        self.table = EmptyStateTableView(
            "No protections yet.\nPlace an order with a trailing stop, or protect a broker position below.",
            self,
        )
        self.table.setObjectName("positionsTable")
        self.table.setAccessibleName("Protected positions")
        theme.draw_cells_in_cpp(self.table)  # repainted ten times a second while prices move
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Several rows at once go into a basket; the row actions answer only to one row.
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        # Each column as wide as what it holds (the state has room for "Not watched: login needed"), the
        # symbol takes the rest: P&L and Status are never pushed behind a sideways scroll by equal shares.
        size_columns(header, self.fontMetrics())
        self.table.resized.connect(self._fit_columns)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        place_safety_beside_stop(header)
        self.table.setSortingEnabled(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._show_context_menu)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.table.doubleClicked.connect(lambda _index: self.modify_selected())

        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(buttons)
        top_layout.addWidget(self.table)

        # The broker's positions that nothing protects.
        self.unprotected_model = UnprotectedModel(self)
        self.unprotected_title = section_title("Broker positions without protection", self)
        self.protect_button = QToolButton(self)
        self.protect_button.setDefaultAction(self.act_protect)
        self.refresh_button = QToolButton(self)
        self.refresh_button.setDefaultAction(self.act_refresh)
        self.refresh_button.setText("Refresh")
        self.unprotected_status = QLabel(self)
        self.unprotected_status.setEnabled(False)  # a quiet note in both schemes
        bar = QHBoxLayout()
        bar.setSpacing(4)
        bar.addWidget(self.unprotected_title)
        bar.addSpacing(8)
        bar.addWidget(self.unprotected_status)
        bar.addStretch(1)
        bar.addWidget(self.protect_button)
        bar.addWidget(self.refresh_button)
        self.unprotected_table = EmptyStateTableView(
            "Every open broker position and holding is protected.", self
        )
        self.unprotected_table.setObjectName("unprotectedTable")
        self.unprotected_table.setAccessibleName("Broker positions without protection")
        self.unprotected_table.setModel(self.unprotected_model)
        self.unprotected_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.unprotected_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.unprotected_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.unprotected_table.setAlternatingRowColors(True)
        self.unprotected_table.setShowGrid(False)
        self.unprotected_table.verticalHeader().setVisible(False)
        self.unprotected_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        self.unprotected_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.unprotected_table.horizontalHeader().setHighlightSections(False)
        self.unprotected_table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.unprotected_table.customContextMenuRequested.connect(self._show_unprotected_menu)
        self.unprotected_table.doubleClicked.connect(lambda _index: self.protect_selected())
        self.unprotected_table.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())

        bottom = QWidget(self)
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addLayout(bar)
        bottom_layout.addWidget(self.unprotected_table)

        for signal in (self.model.dataChanged, self.model.modelReset, self.model.rowsInserted):
            signal.connect(self._update_total)
        self._update_total()

        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.setObjectName("positionsSplitter")
        self.splitter.addWidget(top)
        self.splitter.addWidget(bottom)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        self.setTabOrder(self.table, self.unprotected_table)
        self._update_actions()

    # ----------------------------------------------------------------- loading

    def reload_all(self) -> None:
        """Live protections, plus those that ended today (shown greyed when "Show closed" is on)."""
        today = datetime.now().date()
        protections = [
            p
            for p in self.store.protections()
            if p.status not in TERMINAL or (p.closed_at is not None and p.closed_at.date() == today)
        ]
        self._mark_watch({p.account_id for p in protections} | set(self._feed_problems))
        self.model.load(protections)
        self._fit_columns()
        self._update_safety_column()
        self._update_counts()
        self._update_actions()

    def _on_protection_changed(self, pid: int) -> None:
        before = self.model.row_for(pid)
        try:
            p = self.store.get(pid)
        except KeyError:
            return
        self.model.set_not_watched(p.account_id, self._watch_problem(p.account_id))  # a row of a new account
        self.model.upsert(p)
        if before is None or before.status_text != (self.model.row_for(pid) or before).status_text:
            self._fit_columns()
        self._update_safety_column()
        self._update_counts()
        if pid == self.selected_pid():
            self._update_actions()
        self._report_exit(p)
        # A protection that ended, or a position adopted, changes what is unprotected at the broker.
        if before is None or (before.status is not p.status and (p.status in TERMINAL or before.is_terminal)):
            self.refresh_unprotected()

    def set_route_state(self, account_id: int, route_state: str) -> None:
        """The order route's last check (RouteState value): a refused or unreachable route is shown on
        the account's rows, as an exit from them would fail."""
        self._route_problems[account_id] = ROUTE_PROBLEMS.get(route_state, "")
        self._show_watch(account_id)

    def _watch_problem(self, account_id: int) -> str | None:
        """Why the account's protections are not watched now, or None while they are."""
        if account_id not in self.service.sessions:
            return ACCOUNT_NOT_LOADED  # no session at all: no feed, no engine, no route for its exits
        # No feed is the deeper trouble (nothing fires at all); a failing route comes next.
        return self._feed_problems.get(account_id) or self._route_problems.get(account_id) or None

    def _show_watch(self, account_id: int) -> None:
        self.model.set_not_watched(account_id, self._watch_problem(account_id))
        self._fit_columns()
        self._update_counts()
        self._update_actions()

    def refresh_watch(self) -> None:
        """Mark again which rows are watched, after accounts were added or removed."""
        self._mark_watch({row.account_id for row in self.model.rows_view()})
        self._fit_columns()
        self._update_counts()
        self._update_actions()

    def _mark_watch(self, account_ids: set[int]) -> None:
        for account_id in account_ids:
            self.model.set_not_watched(account_id, self._watch_problem(account_id))

    def _on_session_state_changed(self, account_id: int, state: str) -> None:
        self._feed_problems[account_id] = not_watched_reason(state) or ""
        self._show_watch(account_id)
        if state == "live":
            self.refresh_unprotected()

    def _report_exit(self, p: Any) -> None:
        """Say what happened to an exit the trader asked for, once it happened."""
        symbol = self._exits_asked.get(p.id)
        if symbol is None:
            return
        if p.status is Status.EXITING or (p.status is Status.CLOSED and p.exit_order_id):
            order = f" (order {p.exit_order_id})" if p.exit_order_id else ""
            self._exits_asked.pop(p.id, None)
            self.message_posted.emit(f"{symbol}: exit sent{order}")
        elif p.status is Status.EXIT_FAILED:
            self._exits_asked.pop(p.id, None)
            self.message_posted.emit(f"{symbol}: exit NOT sent: {p.reason or 'refused'}")
        elif p.status in TERMINAL:
            self._exits_asked.pop(p.id, None)

    def _update_total(self, *_args: object) -> None:
        unrealised, realised, priced, closed = self.model.total_pnl()
        if not priced and not closed:
            self.total_pnl.setText("")
            return
        colors = self._colors
        total = unrealised + realised
        colour = colors.profit if total > 0.005 else colors.loss if total < -0.005 else None
        style = f" style='color:{colour.name()}'" if colour is not None else ""
        self.total_pnl.setText(f"Total P&amp;L <b{style}>{theme.format_inr(total)}</b>")
        self.total_pnl.setToolTip(
            f"Unrealised {theme.format_inr(unrealised)} on {priced} open"
            f" · realised {theme.format_inr(realised)} on {closed} closed today"
        )

    def _fit_columns(self) -> None:
        header = self.table.horizontalHeader()
        rows = self.model.rows_view()
        symbol = fit_text_column(header, Column.SYMBOL, [row.symbol for row in rows] or ["BANKNIFTY"])
        # A paused row's words change with the price ("Paused: stop crossed"): room for them from the start.
        states = ["Paused: stop crossed" if row.state is RowState.PAUSED else row.status_text for row in rows]
        fit_text_column(header, Column.STATUS, states or ["Pending entry"])
        # What is left of the width goes to the symbol: no gap at the end, and never a symbol cut short.
        others = sum(
            header.sectionSize(c)
            for c in range(header.count())
            if c != Column.SYMBOL and not header.isSectionHidden(c)
        )
        header.resizeSection(Column.SYMBOL, max(symbol, self.table.viewport().width() - others))

    def _update_safety_column(self) -> None:
        """The Safety column only when some protection has a broker-held stop: room for what matters."""
        wanted = any(not row.safety_off or row.safety_enabled for row in self.model.rows_view())
        if self.table.isColumnHidden(Column.SAFETY) == wanted:
            self.table.setColumnHidden(Column.SAFETY, not wanted)
            self._fit_columns()

    def _update_counts(self) -> None:
        counts = self.model.counts()
        live = sum(n for state, n in counts.items() if state is not RowState.CLOSED)
        self.title.setText(f"Protected positions ({live})" if live else "Protected positions")

    # ----------------------------------------------------------------- selection

    def selected_pid(self) -> int | None:
        """The protection of the one selected row (None for none, or for several)."""
        pids = self.selected_pids()
        return pids[0] if len(pids) == 1 else None

    def selected_pids(self) -> list[int]:
        """Every selected row's protection, top to bottom."""
        indexes = sorted(self.table.selectionModel().selectedRows(), key=lambda index: index.row())
        return [int(pid) for pid in (index.data(PID_ROLE) for index in indexes) if pid is not None]

    def selected_row(self) -> PositionRow | None:
        pid = self.selected_pid()
        return None if pid is None else self.model.row_for(pid)

    def select_pid(self, pid: int) -> bool:
        source_row = self.model.row_number(pid)
        if source_row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(source_row, 0))
        if not index.isValid():
            return False
        self.table.selectRow(index.row())
        self.table.scrollTo(index)
        return True

    def _on_selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self._update_actions()
        pid = self.selected_pid()
        # No selection (the row left the filter, or a reset): the detail pane keeps what it showed.
        if pid is not None:
            self.selection_changed.emit(pid)

    def _update_actions(self) -> None:
        row = self.selected_row()
        status = row.status if row is not None else None
        paused = row is not None and row.paused
        self.act_modify.setEnabled(status in (Status.OPEN, Status.PENDING))
        self.act_pause.setEnabled(status is Status.OPEN)
        self.act_pause.setText("Res&ume…" if paused else "&Pause…")
        self.act_exit.setEnabled(status is Status.OPEN)
        # A TRIGGERED row whose exit never went out (no connected broker) is stuck: retry and remove stay.
        self.act_retry.setEnabled(status in (Status.EXIT_FAILED, Status.TRIGGERED))
        self.act_remove.setEnabled(
            status in (Status.OPEN, Status.PENDING, Status.EXIT_FAILED, Status.TRIGGERED)
        )
        self.act_protect.setEnabled(bool(self.unprotected_table.selectionModel().selectedRows()))
        self.act_basket.setEnabled(self._baskets is not None and self._basket_candidates() is not None)
        self.act_protection_rules.setEnabled(
            self._square_off is not None and status in (Status.OPEN, Status.PENDING)
        )

    def _show_context_menu(self, point: QPoint) -> None:
        index = self.table.indexAt(point)
        if index.isValid():
            self.table.selectRow(index.row())
        menu = QMenu(self)
        for act in self.row_actions:
            menu.addAction(act)
        if self._baskets is not None:
            menu.addSeparator()
            menu.addAction(self.act_basket)
            self._add_to_basket_menu(menu)
            menu.addAction(self.act_protection_rules)
        menu.addSeparator()
        menu.addAction(self.act_show_closed)
        menu.popup(self.table.viewport().mapToGlobal(point))

    def _add_to_basket_menu(self, menu: QMenu) -> None:
        """ "Add to basket ▸" with the selection's account's ACTIVE baskets (none: left out)."""
        candidates = self._basket_candidates()
        if self._baskets is None or candidates is None:
            return
        account_id, pids = candidates
        active = [
            b for b in self._baskets.baskets.baskets([BasketStatus.ACTIVE]) if b.account_id == account_id
        ]
        if not active:
            return
        submenu = menu.addMenu("Add to basket")
        for basket in active:
            act = submenu.addAction(basket.name)
            act.triggered.connect(lambda _checked=False, b=basket.id: self.basket_selected(b))

    def _show_unprotected_menu(self, point: QPoint) -> None:
        index = self.unprotected_table.indexAt(point)
        if index.isValid():
            self.unprotected_table.selectRow(index.row())
        menu = QMenu(self)
        menu.addAction(self.act_protect)
        menu.addAction(self.act_refresh)
        menu.popup(self.unprotected_table.viewport().mapToGlobal(point))

    # ----------------------------------------------------------------- actions

    def set_basket_tools(
        self,
        baskets: BasketService | None,
        square_off: SquareOffService | None = None,
        underlying: UnderlyingService | None = None,
    ) -> None:
        """Let the table put its rows into baskets and give them an exit time or a stop on the underlying."""
        self._baskets = baskets
        self._square_off = square_off if underlying is not None else None
        self._underlying = underlying
        self.act_basket.setVisible(baskets is not None)
        self.act_protection_rules.setVisible(self._square_off is not None)
        self._update_actions()

    def _basket_candidates(self) -> tuple[int, list[int]] | None:
        """(account, protections) when the selection can join a basket: live rows of one account."""
        rows = [self.model.row_for(pid) for pid in self.selected_pids()]
        if not rows or any(r is None or r.status not in (Status.OPEN, Status.PENDING) for r in rows):
            return None
        accounts = {r.account_id for r in rows if r is not None}
        if len(accounts) != 1:
            return None  # a basket is one account's: its MTM is that account's money
        return accounts.pop(), [r.pid for r in rows if r is not None]

    def basket_selected(self, basket_id: int | None = None) -> BasketDialog | None:
        """The basket dialog with the selected rows ticked: a new basket, or (``basket_id``) that one."""
        candidates = self._basket_candidates()
        if self._baskets is None:
            return None
        if candidates is None:
            if len({r.account_id for r in map(self.model.row_for, self.selected_pids()) if r}) > 1:
                self.message_posted.emit("A basket holds one account's positions: select rows of one account")
            return None
        _account_id, pids = candidates
        basket = None if basket_id is None else self._baskets.baskets.get(basket_id)
        dialog = BasketDialog(self._baskets, basket, self, selected=pids)
        self.basket_dialog = dialog

        def saved() -> None:
            if dialog.saved is not None:
                self.message_posted.emit(f"Basket {dialog.saved.name}: {dialog.saved.rules.describe()}")

        dialog.accepted.connect(saved)
        dialog.open()
        return dialog

    def protection_rules_selected(self) -> ProtectionRulesDialog | None:
        """The exit time and stop on the underlying of the selected row."""
        pid = self.selected_pid()
        if self._square_off is None or self._underlying is None or pid is None:
            return None
        dialog = ProtectionRulesDialog(self._square_off, self._underlying, pid, self)
        self.rules_dialog = dialog
        dialog.open()
        return dialog

    def _act(self, what: str, fn: Callable[[], object]) -> bool:
        try:
            fn()
        except Exception as exc:
            log.warning("%s failed: %s", what, exc)
            self.action_failed.emit(what, str(exc))
            return False
        return True

    def modify_selected(self) -> None:
        row = self.selected_row()
        if row is None or not self.act_modify.isEnabled():
            return
        rule = self.ask_rule(
            title="Modify trailing rule",
            subject=f"{row.describe()} · now {describe_in_full(row.rule)}",
            side=row.side,
            quantity=row.quantity,
            reference_price=row.ltp or row.entry,
            tick_size=row.tick_size,
            rule=row.rule,
            current_stop=row.stop if row.status is Status.OPEN else None,
            accept_text="Apply rule",
            entry_price=row.entry,
        )
        if rule is None:
            return
        if self._act("Modify rule", lambda: self.service.modify_rule(row.pid, rule)):
            self.message_posted.emit(f"{row.symbol}: trailing {describe_in_full(rule)}")

    def toggle_pause_selected(self) -> None:
        row = self.selected_row()
        if row is None or row.status is not Status.OPEN:
            return
        stop = theme.format_price(row.stop, row.tick_size)
        if row.paused:
            crossed = row.stop_crossed()
            if crossed:
                ltp = theme.format_price(row.ltp, row.tick_size)
                text = (
                    f"Resume {row.describe()}?\n\nThe price ({ltp}) is already through the stop ({stop}):"
                    " resuming sends a MARKET exit at once."
                )
                accept = "Resume and exit now"
            else:
                where = f" ({theme.format_percent(row.distance_percent())} away)" if row.ltp else ""
                text = (
                    f"Resume {row.describe()}?\n\nThe stop arms again at {stop}{where} and trails from the"
                    " next price on."
                )
                accept = "Resume"
            if not self.confirm("Resume protection", text, accept):
                return
            if self._act("Resume", lambda: self.service.resume(row.pid)):
                what = "the stop was crossed, exiting" if crossed else f"the stop is armed at {stop}"
                self.message_posted.emit(f"{row.symbol}: protection resumed; {what}")
            return
        text = (
            f"Pause {row.describe()}?\n\nWhile paused the stop ({stop}) neither trails nor fires: a fall"
            " through it sends NO exit. Prices keep updating; resume to arm it again."
        )
        if not self.confirm("Pause protection", text, "Pause"):
            return
        if self._act("Pause", lambda: self.service.pause(row.pid)):
            self.message_posted.emit(f"{row.symbol}: paused; no stop fires until you resume")

    def exit_selected(self) -> None:
        row = self.selected_row()
        if row is None or row.status is not Status.OPEN:
            return
        ltp = f" (LTP {theme.format_price(row.ltp, row.tick_size)})" if row.ltp else ""
        text = (
            f"Exit {row.describe()} now{ltp}?\n\n"
            "TrailStop sends a MARKET order to close the position; the protection ends when it fills."
        )
        if not self.confirm("Exit now", text, "Exit now"):
            return
        self._ask_exit("Exit now", row, lambda: self.service.exit_now(row.pid))

    def _ask_exit(self, what: str, row: PositionRow, fn: Callable[[], object]) -> None:
        self._exits_asked[row.pid] = row.symbol
        if not self._act(what, fn):
            self._exits_asked.pop(row.pid, None)
            return
        current = self.model.row_for(row.pid)
        if current is not None and current.status not in (Status.OPEN, Status.TRIGGERED):
            return  # already reported by the change it caused
        why = self.model.not_watched(row.account_id)
        if why:
            when = (
                "a run of TrailStop loads the account"
                if why == ACCOUNT_NOT_LOADED
                else "the account is live again"
            )
            self.message_posted.emit(f"{row.symbol}: exit NOT sent yet ({why}); it goes out once {when}")
        else:
            self.message_posted.emit(f"{row.symbol}: exit requested; waiting for the broker to take it")

    def ask_exits(self, protections: list[Any], fn: Callable[[], list[int]]) -> list[int]:
        """Several exits the trader asked for at once (Exit all; ``fn`` returns the ids it exited): each
        is reported as Exit now's is, "exit sent" only once the broker took its order."""
        for p in protections:
            self._exits_asked[p.id] = p.symbol
        try:
            done = fn()
        except BaseException:
            for p in protections:
                self._exits_asked.pop(p.id, None)
            raise
        for p in protections:
            if p.id not in done:
                self._exits_asked.pop(p.id, None)
        return done

    def retry_selected(self) -> None:
        row = self.selected_row()
        if row is None or row.status not in (Status.EXIT_FAILED, Status.TRIGGERED):
            return
        self._ask_exit("Retry exit", row, lambda: self.service.retry_exit(row.pid))

    def remove_selected(self) -> None:
        row = self.selected_row()
        if row is None or row.status not in (
            Status.OPEN,
            Status.PENDING,
            Status.EXIT_FAILED,
            Status.TRIGGERED,
        ):
            return
        text = (
            f"Stop protecting {row.describe()}?\n\n"
            "The position stays open at the broker with NO stop-loss. TrailStop sends no order."
        )
        if row.status is Status.TRIGGERED:
            text += (
                "\n\nIts exit has not gone out: removing withdraws it. (An exit the broker took meanwhile"
                " still fills.)"
            )
        if not self.confirm("Remove protection", text, "Remove protection"):
            return
        if self._act("Remove protection", lambda: self.service.remove(row.pid)):
            self.message_posted.emit(f"{row.symbol}: protection removed; the position is unprotected")

    # ----------------------------------------------------------------- unprotected positions

    def selected_unprotected(self) -> tuple[int, Unprotected] | None:
        rows = self.unprotected_table.selectionModel().selectedRows()
        return self.unprotected_model.position_at(rows[0].row()) if rows else None

    def protect_selected(self) -> None:
        """The Protect action: starts its flow (``protect``) on the qasync loop."""
        self.flows.start(self.protect())

    async def protect(self) -> None:
        """Protect the selected broker position: ask the rule, store and arm the protection (local, at
        once), then ask the broker again so that the position leaves the unprotected list.

        The questions are modal dialogs: ``asyncWrap`` runs each on Qt's own loop, outside this task's
        step (a dialog's nested event loop inside a step would run other tasks' steps inside it).
        """
        chosen = self.selected_unprotected()
        if chosen is None:
            return
        account_id, pos = chosen
        if pos.side is None or pos.product is None:
            self.action_failed.emit(
                "Protect", f"{pos.symbol}: the broker's product {pos.raw_product!r} is unknown"
            )
            return
        default_rule = load_settings(self.store).default_rule
        tick = self.service.tick_size_for(account_id, pos)  # the instrument master's (a local lookup)
        side_text = "Long" if pos.side is Side.BUY else "Short"
        if isinstance(pos, DeliveryStock):
            side_text = "holding" if pos.is_holding else "Long"
            warning = self.service.demat_warning(account_id)
            if warning and not await asyncWrap(self.confirm, "Delivery shares", warning, "Protect anyway"):
                return
        rule = await asyncWrap(
            lambda: self.ask_rule(
                title="Protect position",
                subject=(
                    f"{pos.symbol} {side_text} {abs(pos.quantity)} {pos.product.value} "
                    f"at {theme.format_price(pos.average_price)}"
                ),
                side=pos.side,
                quantity=abs(pos.quantity),
                reference_price=pos.reference_price if isinstance(pos, DeliveryStock) else pos.average_price,
                tick_size=tick,
                rule=default_rule,
                accept_text="Protect",
            )
        )
        if rule is None or not shiboken6.isValid(self):
            return
        if not self._act("Protect", lambda: self.service.adopt(account_id, pos, rule, tick)):
            return
        self.message_posted.emit(f"{pos.symbol}: protected, trailing {rule.describe()}")
        await self.fetch_unprotected(account_id)

    def refresh_unprotected(self) -> None:
        """Ask again shortly (several reasons to refresh in a burst become one question)."""
        self._fetch_debounce.start()

    def fetch_unprotected_now(self) -> None:
        """Ask every ready account's broker for its positions without protection, each in its own flow."""
        sessions = self.service.sessions
        self.unprotected_model.drop_accounts(set(sessions))
        asked = 0
        for account_id, session in sessions.items():
            if account_id in self._in_flight or session.broker_if_ready() is None:
                continue
            self.flows.start(self.fetch_unprotected(account_id))
            asked += 1
        if asked:
            self.unprotected_status.setText("checking the broker…")

    async def fetch_unprotected(self, account_id: int) -> None:
        """The refresh of one account: ask its broker (off the GUI thread), then show the answer."""
        if account_id in self._in_flight:
            return  # an answer is on its way
        self._in_flight.add(account_id)
        try:
            positions = await self.flows.run(self.service.unprotected_positions, account_id)
        except Exception as exc:
            log.warning("positions of account %s: %s", account_id, exc)
            if shiboken6.isValid(self):
                self.unprotected_status.setText(f"could not check the broker: {str(exc)[:80]}")
            return
        finally:
            self._in_flight.discard(account_id)
        if not shiboken6.isValid(self):
            return  # the view went away while the broker answered: nobody to tell
        session = self.service.sessions.get(account_id)
        label = session.account.label if session is not None else str(account_id)
        self.unprotected_model.set_positions(account_id, label, positions)
        count = self.unprotected_model.rowCount()
        self.unprotected_title.setText(
            f"Broker positions without protection ({count})"
            if count
            else "Broker positions without protection"
        )
        self.unprotected_status.setText(f"checked {datetime.now():%H:%M:%S}")
        self._update_actions()

    def wait_for_flows(self, msecs: int = 5000) -> bool:
        """Let the loop run until every refresh and Protect flow has ended; False on timeout."""
        return self.flows.wait(msecs)

    def stop(self) -> None:
        self._fetch_timer.stop()
        self._fetch_debounce.stop()
        self.flows.shutdown()

    def set_colors(self, colors: theme.Colors) -> None:
        self._colors = colors
        self.model.set_colors(colors)
        self.unprotected_model.set_colors(colors)
