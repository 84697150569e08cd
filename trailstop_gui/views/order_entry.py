"""The order form: an entry order with its trailing stop, previewed (stop and rupee risk) before it is sent.

Nothing here waits on the network: instrument searches read SQLite, last prices come from the feed's
snapshots or from a background ``broker.ltp()`` call (InstrumentService), and ``place_entry`` persists the
protection and returns at once while the order goes out on the service's pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QCompleter,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import (
    OrderType,
    Product,
    RuleKind,
    Side,
    TrailRule,
    on_grid,
    round_down,
    round_up,
    safety_level,
    tick_decimals,
)
from trailstop_gui.models.engine import initial_stop
from trailstop_gui.models.store import InstrumentRecord, ProtectionStore
from trailstop_gui.services.instruments import InstrumentService, master_key
from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
from trailstop_gui.services.session import AccountSession
from trailstop_gui.settings import Settings
from trailstop_gui.views.number_field import StrictDoubleSpinBox, StrictSpinBox
from trailstop_gui.views.rule_editor import RuleEditor, describe_in_full

# Kite's colours: blue and orange tell BUY from SELL for colour-blind traders too, unlike green and red.
BUY_COLOUR = "#1f6fd1"
SELL_COLOUR = "#e2541b"
ERROR_COLOUR = "#d32f2f"
ERROR_COLOUR_ON_DARK = "#ff6e6e"  # the same red is too dim on a dark window
LIVE_COLOUR = "#2e7d32"

FIELD_ACCOUNT = "Account"
FIELD_INSTRUMENT = "Instrument"
FIELD_QUANTITY = "Quantity"
FIELD_PRODUCT = "Product"
FIELD_PRICE = "Price"
FIELD_LTP = "Last price"
FIELD_ORDER = "Order"
FIELD_SAFETY = "Safety stop"

SEARCH_HINT = "Symbol or company, e.g. INFY or Tata"
SEARCH_DELAY_MS = 60
LTP_POLL_MS = 2_000
LIVE_QUOTE_MAX_AGE = 3.0  # seconds: a snapshot older than this no longer counts as live
SUBMIT_COOLDOWN_MS = 1_200  # a double Enter must not send two orders
MAX_QUANTITY = 10_000_000
MAX_PRICE = 10_000_000.0
# A limit this far (percent) from the last price is flagged beside the field and always confirmed: a price
# typed for another instrument, or a digit too many, is caught before it is sent.
LIMIT_FAR_PERCENT = 5.0
RECORD_ROLE = Qt.ItemDataRole.UserRole + 1
LABEL_ROLE = Qt.ItemDataRole.UserRole + 2

PRODUCT_HELP = {
    Product.MIS: "MIS: intraday; squared off by the broker before the close",
    Product.CNC: "CNC: equity delivery",
    Product.NRML: "NRML: futures and options carried overnight",
}


def format_inr(value: float, decimals: int = 2) -> str:
    """Rupees with Indian digit grouping: ₹1,50,000.00."""
    text = f"{abs(value):.{decimals}f}"
    whole, _, fraction = text.partition(".")
    if len(whole) > 3:
        head, groups = whole[:-3], [whole[-3:]]
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        whole = ",".join(groups)
    sign = "−" if value < 0 and float(text) != 0 else ""
    return f"{sign}₹{whole}" + (f".{fraction}" if fraction else "")


def price_decimals(tick_size: float) -> int:
    return max(2, tick_decimals(tick_size)) if tick_size > 0 else 2


@dataclass(frozen=True)
class Preview:
    """What the order would do if it filled at ``entry``: where the stop starts and what hitting it costs."""

    entry: float
    source: str  # "last price" or "limit price"
    stop: float
    risk: float  # rupees lost if the stop is hit at the stop price
    value: float  # quantity x entry
    target: float | None
    safety: float | None = None  # where the broker-held safety stop starts (None: off)


def compute_preview(
    side: Side,
    quantity: int,
    entry: float,
    tick_size: float,
    rule: TrailRule,
    source: str,
    safety_buffer: tuple[float, int] | None = None,
) -> Preview:
    """``safety_buffer``: (percent, ticks) of the broker-held safety stop when it is on."""
    stop = initial_stop(side, entry, tick_size, rule)
    target = None
    if rule.target is not None:
        raw = entry + (1 if side.is_long else -1) * rule.amount(rule.target, entry)
        target = round_up(raw, tick_size) if side.is_long else round_down(raw, tick_size)
    safety = None
    if safety_buffer is not None and stop > 0:
        safety = safety_level(side, stop, tick_size, *safety_buffer)  # as services/safety_stop.py places it
    return Preview(entry, source, stop, quantity * abs(entry - stop), quantity * entry, target, safety)


def _set_hint(label: QLabel, text: str) -> None:
    """An empty hint takes no room in the form."""
    label.setText(text)
    label.setVisible(bool(text))


class _ComboBox(QComboBox):
    """A combo box that leaves Enter to the form (so that Enter submits) while its list is closed."""

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not self.view().isVisible():
            event.ignore()
            return
        super().keyPressEvent(event)


class OrderEntryPanel(QWidget):
    """Order entry with a trailing stop. Enter submits, Esc clears."""

    order_submitted = Signal(int)  # protection id
    validation_failed = Signal(str, str)  # field, message

    def __init__(
        self,
        service: ProtectionService,
        store: ProtectionStore,
        settings: Settings,
        instruments: InstrumentService,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.store = store
        self.settings = settings
        self.instruments = instruments
        self._instrument: InstrumentRecord | None = None
        self._results: list[InstrumentRecord] = []
        # (account id, instrument token) -> (last price, monotonic time, "live" | "polled")
        self._prices: dict[tuple[int, str], tuple[float, float, str]] = {}
        self._price_times: dict[tuple[int, str], str] = {}  # wall-clock time of a polled price, to show
        self._touched: set[str] = set()
        self._show_all_errors = False
        self._quiet = False
        self._cooling_down = False
        self._last_pid: int | None = None
        # While true, the limit price is the chosen instrument's last price, not one the trader typed: it is
        # filled in when that price arrives (a price typed for another instrument never carries over).
        self._price_from_market = True
        self.confirm_box: QMessageBox | None = None  # while the confirmation is open (tests answer it)
        self.setObjectName("OrderEntryPanel")
        self._build()
        self.setFocusProxy(self.instrument)  # focusing the panel (a shortcut, the window) starts a search
        self._wire()
        self.refresh_accounts()
        self.clear()

    # ================================================================= construction

    def _build(self) -> None:
        dark = self.palette().color(QPalette.ColorRole.Window).lightness() < 128
        self._red = ERROR_COLOUR_ON_DARK if dark else ERROR_COLOUR
        title = QLabel("New order")
        title.setObjectName("title")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        title.setFont(font)

        self.account = _ComboBox()
        self.account.setAccessibleName("Account")
        self.account.setToolTip("Orders go to this account. Only logged-in accounts are listed.")

        self.instrument = QLineEdit()
        self.instrument.setPlaceholderText(SEARCH_HINT)
        self.instrument.setClearButtonEnabled(True)
        self.instrument.setAccessibleName("Instrument")
        self.completion_model = QStandardItemModel(self)
        self.completer = QCompleter(self.completion_model, self)
        self.completer.setCompletionMode(QCompleter.CompletionMode.UnfilteredPopupCompletion)
        self.completer.setCompletionRole(LABEL_ROLE)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setMaxVisibleItems(12)
        self.instrument.setCompleter(self.completer)
        self.instrument_info = QLabel("")
        self.instrument_info.setObjectName("hint")
        self.instrument_info.setWordWrap(True)
        self.instrument_info.setVisible(False)

        self.buy = QPushButton("&BUY")
        self.sell = QPushButton("&SELL")
        self.side_group = QButtonGroup(self)
        for button, side, colour in ((self.buy, Side.BUY, BUY_COLOUR), (self.sell, Side.SELL, SELL_COLOUR)):
            button.setCheckable(True)
            button.setAutoDefault(False)
            button.setMinimumHeight(30)
            button.setProperty("side", side.value)
            button.setToolTip(
                "Buy: a long position; the stop sits below the price (Alt+B)"
                if side is Side.BUY
                else "Sell: a short position; the stop sits above the price (Alt+S)"
            )
            button.setStyleSheet(
                f"QPushButton {{ color: {colour}; font-weight: bold; border: 1px solid {colour};"
                " border-radius: 4px; padding: 4px 14px; }"
                f"QPushButton:checked {{ color: white; background: {colour}; }}"
                f"QPushButton:focus {{ border: 2px solid palette(highlight); }}"
            )
            self.side_group.addButton(button)
        self.side_group.setExclusive(True)

        self.quantity = StrictSpinBox()
        self.quantity.setRange(0, MAX_QUANTITY)
        self.quantity.setAccelerated(True)
        self.quantity.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.quantity.setAccessibleName("Quantity")
        self.quantity.setGroupSeparatorShown(False)
        self.lots = QLabel("")
        self.lots.setObjectName("hint")
        self.lots.setVisible(False)

        self.product = _ComboBox()
        for product in Product:
            self.product.addItem(product.value, product.value)
            self.product.setItemData(
                self.product.count() - 1, PRODUCT_HELP[product], Qt.ItemDataRole.ToolTipRole
            )
        self.product.setToolTip("\n".join(PRODUCT_HELP.values()))
        self.product.setAccessibleName("Product")

        self.order_type = _ComboBox()
        self.order_type.addItem("MARKET", OrderType.MARKET.value)
        self.order_type.addItem("LIMIT", OrderType.LIMIT.value)
        self.order_type.setToolTip(
            "MARKET fills at once at the best price; LIMIT only at your price or better"
        )
        self.order_type.setAccessibleName("Order type")

        self.price = StrictDoubleSpinBox()
        self.price.setRange(0.0, MAX_PRICE)
        self.price.setDecimals(2)
        self.price.setSingleStep(0.05)
        self.price.setAccelerated(True)
        self.price.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.price.setSpecialValueText("at market")
        self.price.setGroupSeparatorShown(False)
        self.price.setAccessibleName("Limit price")
        self.price.setPrefix("₹ ")
        self.price_warning = QLabel("")
        self.price_warning.setObjectName("warning")
        self.price_warning.setWordWrap(True)
        self.price_warning.setVisible(False)

        self.rule_editor = RuleEditor(self.settings.default_rule)

        self.safety = QCheckBox("Broker-held safety stop")
        self.safety.setAccessibleName("Broker-held safety stop")
        self.safety.setToolTip(
            "Also keep a stop order at the broker (SL-M or GTT) a little behind the trailing stop, moved"
            " along with it: the loss stays bounded even when TrailStop is not running."
        )

        # ---- preview
        self.preview_box = QFrame()
        self.preview_box.setObjectName("preview")
        self.preview_box.setFrameShape(QFrame.Shape.StyledPanel)
        self.preview_box.setStyleSheet(
            "QFrame#preview { border: 1px solid palette(mid); border-radius: 6px; }"
            " QFrame#preview QLabel { border: none; }"
        )
        grid = QGridLayout(self.preview_box)
        grid.setContentsMargins(10, 8, 10, 8)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(3)
        self.ltp_caption = QLabel("Last price")
        self.ltp_value = QLabel("—")
        self.entry_caption = QLabel("Entry (estimate)")
        self.entry_value = QLabel("—")
        self.stop_caption = QLabel("Initial stop")
        self.stop_value = QLabel("—")
        self.risk_caption = QLabel("Risk if the stop is hit")
        self.risk_value = QLabel("—")
        self.target_caption = QLabel("Target")
        self.target_value = QLabel("—")
        self.safety_caption = QLabel("Safety stop at the broker")
        self.safety_value = QLabel("—")
        self.preview_note = QLabel("")
        self.preview_note.setObjectName("hint")
        self.preview_note.setWordWrap(True)
        rows = (
            (self.ltp_caption, self.ltp_value),
            (self.entry_caption, self.entry_value),
            (self.stop_caption, self.stop_value),
            (self.risk_caption, self.risk_value),
            (self.target_caption, self.target_value),
            (self.safety_caption, self.safety_value),
        )
        for row, (caption, value) in enumerate(rows):
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(caption, row, 0)
            grid.addWidget(value, row, 1)
        grid.addWidget(self.preview_note, len(rows), 0, 1, 2)
        grid.setColumnStretch(1, 1)
        big = self.stop_value.font()
        big.setBold(True)
        big.setPointSizeF(big.pointSizeF() * 1.15)
        self.stop_value.setFont(big)
        self.risk_value.setFont(big)

        self.submit_button = QPushButton("Place order")
        self.submit_button.setMinimumHeight(38)
        self.submit_button.setAutoDefault(False)
        self.submit_button.setToolTip("Enter")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # ---- layout: each field carries its own red error line, hidden while the field is fine
        self.errors: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setVerticalSpacing(6)
        form.addRow("&Account", self._with_error(FIELD_ACCOUNT, self.account))
        form.addRow("&Instrument", self._with_error(FIELD_INSTRUMENT, self.instrument, self.instrument_info))
        sides = QHBoxLayout()
        sides.setSpacing(6)
        sides.addWidget(self.buy, 1)
        sides.addWidget(self.sell, 1)
        form.addRow("Side", sides)
        qty_row = QHBoxLayout()
        qty_row.addWidget(self.quantity, 1)
        qty_row.addWidget(self.lots)
        form.addRow("&Quantity", self._with_error(FIELD_QUANTITY, qty_row))
        product_row = QHBoxLayout()
        product_row.addWidget(self.product, 1)
        product_row.addWidget(self.order_type, 1)
        form.addRow("&Product / type", self._with_error(FIELD_PRODUCT, product_row))
        form.addRow("P&rice", self._with_error(FIELD_PRICE, self.price, self.price_warning))
        form.addRow("&Trailing stop", self._with_error("rule", self.rule_editor))
        form.addRow("", self.safety)
        for label in (form.labelForField(w) for w in (self.account,)):
            if isinstance(label, QLabel):
                label.setBuddy(self.account)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(8)
        layout.addWidget(title)
        layout.addLayout(form)
        layout.addWidget(self.preview_box)
        self.errors[FIELD_LTP] = self._error_label()
        self.errors[FIELD_ORDER] = self._error_label()
        layout.addWidget(self.errors[FIELD_LTP])
        layout.addWidget(self.errors[FIELD_ORDER])
        layout.addWidget(self.submit_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        # No fixed minimum width: the layout's own minimum keeps every label whole (a fixed 340 cut them).
        self.setStyleSheet(
            f"QLabel#hint {{ color: palette(placeholder-text); }} QLabel#error {{ color: {self._red}; }}"
            f" QLabel#warning {{ color: {self._red}; font-weight: bold; }}"
        )

        chain: list[QWidget] = [
            self.account,
            self.instrument,
            self.buy,
            self.sell,
            self.quantity,
            self.product,
            self.order_type,
            self.price,
            self.rule_editor.kind,
            self.rule_editor.value,
            self.rule_editor.more,
            self.safety,
            self.submit_button,
        ]
        for first, second in zip(chain, chain[1:], strict=False):
            QWidget.setTabOrder(first, second)

    def _error_label(self) -> QLabel:
        label = QLabel("")
        label.setObjectName("error")
        label.setWordWrap(True)
        label.setStyleSheet(f"color: {self._red};")
        label.setVisible(False)
        return label

    def _with_error(self, field: str, content: QWidget | QHBoxLayout, *extra: QWidget) -> QWidget:
        box = QWidget()
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        if isinstance(content, QWidget):
            column.addWidget(content)
        else:
            column.addLayout(content)
        for widget in extra:
            column.addWidget(widget)
        label = self._error_label()
        column.addWidget(label)
        self.errors[field] = label
        return box

    def _wire(self) -> None:
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self._run_search)
        self._ltp_timer = QTimer(self)
        self._ltp_timer.setInterval(LTP_POLL_MS)
        self._ltp_timer.timeout.connect(lambda: self._poll_ltp())
        self._ltp_timer.start()
        self._cooldown = QTimer(self)
        self._cooldown.setSingleShot(True)
        self._cooldown.setInterval(SUBMIT_COOLDOWN_MS)
        self._cooldown.timeout.connect(self._on_cooldown_ended)

        self.account.currentIndexChanged.connect(self._on_account_changed)
        self.instrument.textEdited.connect(self._on_instrument_edited)
        self.instrument.editingFinished.connect(self._on_instrument_editing_finished)
        self.completer.activated.connect(self._on_completion_activated)
        self.side_group.buttonToggled.connect(self._on_side_toggled)
        self.quantity.valueChanged.connect(lambda _v: self._on_field_edited(FIELD_QUANTITY))
        self.quantity.lineEdit().textEdited.connect(lambda _t: self._on_field_edited(FIELD_QUANTITY))
        self.price.lineEdit().textEdited.connect(self._on_price_typed)
        self.product.currentIndexChanged.connect(lambda _i: self._on_field_edited(FIELD_PRODUCT))
        self.order_type.currentIndexChanged.connect(self._on_order_type_changed)
        self.price.valueChanged.connect(self._on_price_typed)  # our own fills block signals
        self.rule_editor.rule_changed.connect(lambda: self._on_field_edited("rule"))
        self.safety.toggled.connect(lambda _on: self._on_field_edited(FIELD_SAFETY))
        self.submit_button.clicked.connect(self.submit)

        self.service.snapshot_ready.connect(self._on_snapshot_ready)
        self.service.session_state_changed.connect(self._on_session_state_changed)
        self.service.protection_changed.connect(self._on_protection_changed)
        self.instruments.master_loaded.connect(self._on_master_loaded)
        self.instruments.master_failed.connect(self._on_master_failed)
        self.instruments.ltp_received.connect(self._on_ltp_received)

    # ================================================================= public API

    def apply_settings(self, settings: Settings) -> None:
        """New defaults (from the settings dialog); fields the trader has not touched follow them."""
        self.settings = settings
        self._quiet = True  # these are not the trader's edits
        try:
            if "rule" not in self._touched:
                self.rule_editor.set_rule(settings.default_rule)
            if FIELD_PRODUCT not in self._touched:
                self._set_product(self._suitable_product(self._instrument, Product(settings.default_product)))
            if FIELD_QUANTITY not in self._touched:
                self.quantity.setValue(self._default_quantity())
            if FIELD_SAFETY not in self._touched:
                self.safety.setChecked(settings.safety_stop)
        finally:
            self._quiet = False
        self._refresh()

    def clear(self) -> None:
        """Back to the defaults from settings; the chosen account stays."""
        self._instrument = None
        self.instrument.clear()
        self.completion_model.clear()
        self._results = []
        self.buy.setChecked(True)
        self._set_product(Product(self.settings.default_product))
        self.order_type.setCurrentIndex(0)
        self.price.setValue(0.0)
        self.price.setEnabled(False)
        self._price_from_market = True
        self.rule_editor.set_rule(self.settings.default_rule)
        self.rule_editor.more.setChecked(False)
        self.quantity.setValue(self._default_quantity())
        self.safety.setChecked(self.settings.safety_stop)
        _set_hint(self.instrument_info, "")
        _set_hint(self.lots, "")
        self._touched.clear()
        self._show_all_errors = False
        self.errors[FIELD_ORDER].setVisible(False)
        self._refresh()

    def refresh_accounts(self) -> None:
        """List the logged-in accounts; keep the current choice when it is still there."""
        current = self.account.currentData()
        self.account.blockSignals(True)
        try:
            self.account.clear()
            for account_id, session in sorted(self.service.sessions.items()):
                if session.broker_if_ready() is not None:
                    self.account.addItem(session.label, account_id)
            if self.account.count() == 0:
                self.account.addItem("No account logged in", None)
                self.account.setEnabled(False)
            else:
                self.account.setEnabled(True)
                index = self.account.findData(current)
                self.account.setCurrentIndex(max(index, 0))
        finally:
            self.account.blockSignals(False)
        if self.account.currentData() != current:
            self._on_account_changed(self.account.currentIndex())
        else:
            self._refresh()

    def session(self) -> AccountSession | None:
        account_id = self.account.currentData()
        return None if account_id is None else self.service.sessions.get(account_id)

    def master(self) -> str | None:
        session = self.session()
        return None if session is None else master_key(session.account)

    def selected_instrument(self) -> InstrumentRecord | None:
        return self._instrument

    def select_instrument(self, record: InstrumentRecord) -> None:
        """Choose ``record`` as if the trader had picked it from the list."""
        changed = self._instrument is None or self._instrument.token != record.token
        self._instrument = record
        self.instrument.setText(record.label)
        self._touched.add(FIELD_INSTRUMENT)
        if FIELD_PRODUCT not in self._touched:
            self._set_product(self._suitable_product(record, Product(self.settings.default_product)))
        if FIELD_QUANTITY not in self._touched or self.quantity.value() % max(record.lot_size, 1):
            self.quantity.blockSignals(True)
            self.quantity.setValue(self._default_quantity())
            self.quantity.blockSignals(False)
        lot = max(record.lot_size, 1)
        self.quantity.setSingleStep(lot)
        decimals = price_decimals(record.tick_size)
        self.price.setDecimals(decimals)
        self.price.setSingleStep(record.tick_size)
        if changed:
            # As Kite's order window does: a new instrument starts from its own last price, never from a
            # limit typed for the previous one (806 for SBIN is not a price for HDFCBANK at 1,716).
            self._price_from_market = True
            self._fill_limit_from_market(reset=True)
        self._describe_instrument(record)
        self._poll_ltp(force=True)
        self._refresh()

    def _fill_limit_from_market(self, reset: bool = False) -> None:
        """Put the last price (on the grid) in a LIMIT order's price while the trader has not typed one."""
        if self.current_order_type() is not OrderType.LIMIT or not self._price_from_market:
            return
        record, known = self._instrument, self.last_price()
        if record is None:
            return
        if known is None:
            if reset:
                self.price.blockSignals(True)
                self.price.setValue(0.0)
                self.price.blockSignals(False)
            return
        price = round_down(known[0], record.tick_size) if record.tick_size > 0 else known[0]
        if abs(self.price.value() - price) > 1e-9:
            self.price.blockSignals(True)
            self.price.setValue(price)
            self.price.blockSignals(False)

    def _on_price_typed(self, *_args: object) -> None:
        self._price_from_market = False
        self._on_field_edited(FIELD_PRICE)

    def limit_warning(self) -> str | None:
        """Why the limit price looks wrong for this instrument (far from its last price), or None."""
        record, known = self._instrument, self.last_price()
        if self.current_order_type() is not OrderType.LIMIT or record is None or known is None:
            return None
        price, ltp = self.price.value(), known[0]
        if price <= 0 or ltp <= 0 or self.price.problem() is not None:
            return None
        off = (price - ltp) / ltp * 100.0
        if abs(off) < LIMIT_FAR_PERCENT:
            return None
        d = price_decimals(record.tick_size)
        where = "above" if off > 0 else "below"
        return (
            f"{abs(off):.1f} % {where} the last price {ltp:,.{d}f} of {record.symbol}:"
            " is this the price you mean?"
        )

    def side(self) -> Side:
        return Side.SELL if self.sell.isChecked() else Side.BUY

    def current_order_type(self) -> OrderType:
        return OrderType(self.order_type.currentData())

    def current_product(self) -> Product:
        return Product(self.product.currentData())

    def _price_key(self) -> tuple[int, str] | None:
        session, record = self.session(), self._instrument
        return None if session is None or record is None else (session.account_id, record.token)

    def last_price(self) -> tuple[float, str] | None:
        """The latest known price of the chosen instrument and where it came from."""
        session, record = self.session(), self._instrument
        if session is None or record is None:
            return None
        known = self._prices.get((session.account_id, record.token))
        return None if known is None else (known[0], known[2])

    def preview(self) -> Preview | None:
        """The preview for the form as it stands, or None while something it needs is missing or bad."""
        record = self._instrument
        rule = self.rule_editor.rule_or_none()
        quantity = self.quantity.value()
        if record is None or not record.tradable or rule is None or quantity <= 0:
            return None
        if self.current_order_type() is OrderType.LIMIT:
            price = self.price.value()
            if price <= 0 or self.price.problem() is not None:
                return None
            entry, source = price, "limit price"
            known = self.last_price()
            if known is not None and known[0] > 0:
                ltp = known[0]
                # A BUY limit at or above the market (a SELL at or below) fills at once near the market
                # price, not at the limit: preview what will happen.
                if (self.side().is_long and price >= ltp) or (not self.side().is_long and price <= ltp):
                    entry, source = ltp, "market price (the limit is marketable)"
        else:
            known = self.last_price()
            if known is None:
                return None
            entry, source = known[0], "last price"
        buffer = self.safety_buffer() if self.safety.isChecked() else None
        try:
            return compute_preview(self.side(), quantity, entry, record.tick_size, rule, source, buffer)
        except ValueError:
            return None

    def safety_buffer(self) -> tuple[float, int]:
        """The safety stop's distance behind the stop (percent, ticks), as the service applies it."""
        return self.settings.safety_buffer_percent, self.settings.safety_buffer_ticks

    def validation_errors(self) -> list[tuple[str, str]]:
        """Every problem with the form, as (field, message), in the order the fields appear."""
        return [(field, message) for field, message, _widget in self._problems()]

    def entry_request(self) -> EntryRequest:
        """The request the form describes; raises ValueError naming the first bad field."""
        problems = self._problems()
        if problems:
            field, message, _widget = problems[0]
            raise ValueError(f"{field}: {message}")
        session, record = self.session(), self._instrument
        assert session is not None and record is not None
        limit = self.current_order_type() is OrderType.LIMIT
        return EntryRequest(
            account_id=session.account_id,
            instrument=record.engine_instrument,
            symbol=record.symbol,
            exchange=record.exchange,
            side=self.side(),
            quantity=self.quantity.value(),
            product=self.current_product(),
            tick_size=record.tick_size,
            rule=self.rule_editor.rule(),
            order_type=self.current_order_type(),
            price=round(self.price.value(), price_decimals(record.tick_size)) if limit else None,
            safety=self.safety.isChecked(),
        )

    def submit(self) -> int | None:
        """Validate, confirm (unless settings say not to), then hand the order to the service."""
        if self._cooling_down:
            return None
        self._resolve_typed_instrument()
        problems = self._problems()
        if problems:
            self._show_all_errors = True
            self._refresh()
            field, message, widget = problems[0]
            widget.setFocus(Qt.FocusReason.OtherFocusReason)
            self.validation_failed.emit(field, message)
            return None
        request = self.entry_request()
        preview = self.preview()
        assert preview is not None
        far = self.limit_warning() is not None
        if (self.settings.confirm_orders or far) and not self._confirm(request, preview):
            self._set_status("Not sent: you cancelled the confirmation.", ok=None)
            return None
        try:
            protection = self.service.place_entry(request)
        except ValueError as exc:
            message = str(exc)
            field, sep, rest = message.partition(": ")
            self._show_error(FIELD_ORDER, f"Order: {message}")
            self.validation_failed.emit(field.capitalize() if sep else FIELD_ORDER, rest if sep else message)
            return None
        self.errors[FIELD_ORDER].setVisible(False)
        self._last_pid = protection.id
        self._cooling_down = True
        self.submit_button.setEnabled(False)
        self._cooldown.start()
        self._set_status(
            f"Sent: {request.side.value} {request.quantity} {request.symbol}. "
            f"Protection #{protection.id} is waiting for the fill.",
            ok=True,
        )
        self.order_submitted.emit(protection.id)
        return protection.id

    # ================================================================= validation and the preview

    def _problems(self) -> list[tuple[str, str, QWidget]]:
        out: list[tuple[str, str, QWidget]] = []
        session, record = self.session(), self._instrument
        if session is None:
            out.append((FIELD_ACCOUNT, "log in to an account first", self.account))
        if record is None:
            text = self.instrument.text().strip()
            message = f"no instrument matches {text!r}; pick one from the list" if text else "choose one"
            out.append((FIELD_INSTRUMENT, message, self.instrument))
        elif not record.tradable:
            out.append(
                (FIELD_INSTRUMENT, f"{record.symbol} is an index; it cannot be traded", self.instrument)
            )
        quantity = self.quantity.value()
        lot = max(record.lot_size, 1) if record is not None else 1
        typed_quantity = self.quantity.problem()
        if typed_quantity is not None:
            out.append((FIELD_QUANTITY, typed_quantity, self.quantity))
        elif quantity <= 0:
            out.append(
                (
                    FIELD_QUANTITY,
                    "must be at least 1" if lot == 1 else f"at least one lot of {lot}",
                    self.quantity,
                )
            )
        elif quantity % lot:
            out.append((FIELD_QUANTITY, f"must be a multiple of the lot size {lot}", self.quantity))
        if record is not None:
            product = self.current_product()
            derivative = bool(record.expiry) or record.instrument_type in ("FUT", "CE", "PE")
            if derivative and product is Product.CNC:
                out.append(
                    (FIELD_PRODUCT, "CNC is for equity delivery; use NRML or MIS for F&O", self.product)
                )
            elif not derivative and product is Product.NRML:
                out.append((FIELD_PRODUCT, "NRML is for F&O; use CNC or MIS for equity", self.product))
        if self.current_order_type() is OrderType.LIMIT:
            price = self.price.value()
            typed_price = self.price.problem()
            if typed_price is not None:
                out.append((FIELD_PRICE, typed_price, self.price))
            elif price <= 0:
                out.append((FIELD_PRICE, "a LIMIT order needs a price", self.price))
            elif record is not None and record.tradable and not on_grid(price, record.tick_size):
                tick = record.tick_size
                below, above = round_down(price, tick), round_up(price, tick)
                d = price_decimals(tick)
                out.append(
                    (
                        FIELD_PRICE,
                        f"must be a multiple of the tick size {tick:g}, e.g. {below:.{d}f} or {above:.{d}f}",
                        self.price,
                    )
                )
        for field, message in self.rule_editor.errors():
            out.append((field, message, self.rule_editor.field_widget(field)))
        if not out and record is not None:
            preview = self.preview()
            if preview is None and self.current_order_type() is OrderType.MARKET:
                out.append(
                    (
                        FIELD_LTP,
                        f"no price for {record.symbol} yet, so the stop and risk are unknown; "
                        "wait a moment or use a LIMIT order",
                        self.instrument,
                    )
                )
            elif preview is not None and preview.stop <= 0:
                out.append(
                    (
                        "Trailing stop",
                        "the stop would be at or below zero; trail less",
                        self.rule_editor.value,
                    )
                )
        return out

    def _refresh(self) -> None:
        """Re-validate and redraw the preview and the submit button; cheap enough for every tick."""
        problems = self._problems()
        shown: dict[str, list[str]] = {}
        for field, message, _widget in problems:
            key = "rule" if field in self._rule_fields() else field
            if self._show_all_errors or key in self._touched:
                shown.setdefault(key, []).append(f"{field}: {message}")
        for key, label in self.errors.items():
            if key == FIELD_ORDER:
                continue
            lines = shown.get(key)
            label.setText("\n".join(lines) if lines else "")
            label.setVisible(bool(lines))
        warning = self.limit_warning()
        _set_hint(self.price_warning, f"⚠ {warning}" if warning else "")
        self._update_rule_reference()
        self._draw_preview()
        self._draw_submit_button()

    def _update_rule_reference(self) -> None:
        """Percent and Points convert at the price the order is expected to fill at."""
        known = self.last_price()
        reference = known[0] if known is not None else None
        if self.current_order_type() is OrderType.LIMIT and self.price.value() > 0:
            reference = self.price.value()
        self.rule_editor.set_reference_price(reference)

    @staticmethod
    def _rule_fields() -> set[str]:
        from trailstop_gui.views import rule_editor

        return {
            rule_editor.FIELD_TRAIL,
            rule_editor.FIELD_ACTIVATION,
            rule_editor.FIELD_LADDER,
            rule_editor.FIELD_BREAKEVEN,
            rule_editor.FIELD_TARGET,
        }

    def _draw_preview(self) -> None:
        record = self._instrument
        decimals = price_decimals(record.tick_size) if record is not None else 2
        known = self.last_price()
        if known is None:
            self.ltp_value.setText("—")
        else:
            price, source = known
            if source == "live":
                where = f"<small style='color:{LIVE_COLOUR}'>● live</small>"
            else:
                at = self._price_times.get(self._price_key() or (0, ""), "")
                where = f"<small style='color:gray'>at {at}</small>"
            self.ltp_value.setText(f"{format_inr(price, decimals)}  {where}")
        preview = self.preview()
        for label in (
            self.entry_value,
            self.stop_value,
            self.risk_value,
            self.target_value,
            self.safety_value,
        ):
            label.setText("—")
        self.entry_caption.setText("Entry (estimate)")
        self.target_caption.setVisible(False)
        self.target_value.setVisible(False)
        self.safety_caption.setVisible(self.safety.isChecked())
        self.safety_value.setVisible(self.safety.isChecked())
        if record is None:
            self.preview_note.setText("Choose an instrument to see where the stop starts and what it risks.")
            return
        if preview is None:
            if self.current_order_type() is OrderType.LIMIT and self.price.value() <= 0:
                self.preview_note.setText("Enter the limit price to see the stop and the risk.")
            elif self.current_order_type() is OrderType.MARKET and known is None:
                self.preview_note.setText(f"Waiting for the last price of {record.symbol}…")
            else:
                self.preview_note.setText("Fix the fields marked in red to see the stop and the risk.")
            return
        rule = self.rule_editor.rule()
        distance = abs(preview.entry - preview.stop)
        pct = 100.0 * distance / preview.entry if preview.entry else 0.0
        sign = "−" if self.side().is_long else "+"
        self.entry_caption.setText("Entry (estimate)" if preview.source == "last price" else "Entry (limit)")
        self.entry_value.setText(format_inr(preview.entry, decimals))
        self.stop_value.setText(
            f"{format_inr(preview.stop, decimals)}"
            # The points are on the risk line below: here only the percent, so the line is never cut.
            f"  <small style='font-weight:normal'>({sign}{pct:.2f} %)</small>"
        )
        self.risk_value.setText(
            f"<span style='color:{self._red}'>{format_inr(preview.risk)}</span>"
            f"  <small style='font-weight:normal'>"
            f"({self.quantity.value():,} × {distance:.{decimals}f})</small>"
        )
        if preview.target is not None:
            gain = self.quantity.value() * abs(preview.target - preview.entry)
            self.target_caption.setVisible(True)
            self.target_value.setVisible(True)
            self.target_value.setText(
                f"{format_inr(preview.target, decimals)}  <small>(+{format_inr(gain)})</small>"
            )
        unit = "%" if rule.kind is RuleKind.PERCENT else " pts"
        where = "below" if self.side().is_long else "above"
        safety_note = ""
        if preview.safety is not None:
            gap = abs(preview.stop - preview.safety)
            self.safety_value.setText(
                f"{format_inr(preview.safety, decimals)}"
                f"  <small style='font-weight:normal'>({gap:.{decimals}f} behind the stop)</small>"
            )
            at = format_inr(preview.safety, decimals)
            safety_note = f" A safety stop at the broker starts at {at} and follows it."
        self.preview_note.setText(
            f"The stop starts {rule.value:g}{unit} {where} the {preview.source} and follows the price."
            f"{safety_note} Position value {format_inr(preview.value)}."
        )

    def _draw_submit_button(self) -> None:
        record = self._instrument
        side = self.side()
        colour = BUY_COLOUR if side is Side.BUY else SELL_COLOUR
        what = f"{side.value} {self.quantity.value():,} {record.symbol}" if record is not None else side.value
        self.submit_button.setText(f"{what}  ⏎")
        self.submit_button.setStyleSheet(
            f"QPushButton {{ background: {colour}; color: white; font-weight: bold; font-size: 11pt;"
            " border: none; border-radius: 5px; padding: 6px; }"
            " QPushButton:disabled { background: palette(mid); color: palette(window); }"
            " QPushButton:focus { border: 2px solid palette(highlight); }"
        )

    # ================================================================= confirmation

    def _confirm(self, request: EntryRequest, preview: Preview) -> bool:
        record = self._instrument
        assert record is not None
        decimals = price_decimals(record.tick_size)
        colour = BUY_COLOUR if request.side is Side.BUY else SELL_COLOUR
        price = "MARKET" if request.price is None else f"LIMIT {format_inr(request.price, decimals)}"
        session = self.session()
        lines = [
            f"<p style='font-size:13pt'><b style='color:{colour}'>{request.side.value}</b>"
            f" <b>{request.quantity:,} {record.symbol}</b> ({record.exchange})</p>",
            f"<p>{price} · {request.product.value} · {session.label if session else ''}</p>",
            f"<p>Trailing stop {describe_in_full(request.rule)}:"
            f" starts at <b>{format_inr(preview.stop, decimals)}</b>"
            f" (from the {preview.source} {format_inr(preview.entry, decimals)})</p>",
            f"<p>Risk if the stop is hit: <b style='color:{self._red}'>{format_inr(preview.risk)}</b></p>",
        ]
        if preview.target is not None:
            lines.append(f"<p>Target: {format_inr(preview.target, decimals)}</p>")
        warning = self.limit_warning()
        if warning is not None:
            lines.insert(2, f"<p style='color:{self._red}'><b>⚠ Limit {warning}</b></p>")
        if preview.safety is not None:
            lines.append(
                f"<p>Broker-held safety stop: starts at {format_inr(preview.safety, decimals)},"
                " a little behind the trailing stop</p>"
            )
        box = QMessageBox(self)
        box.setWindowTitle("Confirm order")
        box.setIcon(QMessageBox.Icon.Question)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText("".join(lines))
        box.setInformativeText("The stop is placed from the actual fill price once the order fills.")
        place = box.addButton(f"Place {request.side.value} order", QMessageBox.ButtonRole.AcceptRole)
        place.setStyleSheet(
            f"QPushButton {{ background: {colour}; color: white; font-weight: bold; padding: 5px 14px;"
            " border-radius: 4px; }"
        )
        box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(place)
        box.setEscapeButton(QMessageBox.StandardButton.Cancel)
        self.confirm_box = box
        try:
            box.exec()
            return box.clickedButton() is place
        finally:
            self.confirm_box = None
            box.deleteLater()

    # ================================================================= slots

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.submit()
            event.accept()
            return
        if key == Qt.Key.Key_Escape:
            self.clear()
            self.instrument.setFocus()
            event.accept()
            return
        super().keyPressEvent(event)

    def _on_account_changed(self, _index: int) -> None:
        session = self.session()
        if session is not None:
            self.instruments.ensure(session)
            master = master_key(session.account)
            if self._instrument is not None and self._instrument.master != master:
                # Another broker keys the same instrument differently: find it again in the new master.
                again = self.instruments.resolve(master, self._instrument.label)
                if again is not None:
                    self.select_instrument(again)
                else:
                    self._instrument = None
                    _set_hint(self.instrument_info, "")
            self._update_search_placeholder()
        self._refresh()

    def _on_session_state_changed(self, _account_id: int, _state: str) -> None:
        self.refresh_accounts()

    def _on_instrument_edited(self, text: str) -> None:
        if self._instrument is not None and text.strip().upper() != self._instrument.label:
            self._instrument = None
            _set_hint(self.instrument_info, "")
        self._touched.discard(FIELD_INSTRUMENT)
        self._search_timer.start()
        self._refresh()

    def _run_search(self) -> None:
        master = self.master()
        text = self.instrument.text()
        self._results = self.instruments.search(master, text, 12) if master and text.strip() else []
        self.completion_model.clear()
        for record in self._results:
            item = QStandardItem(self._completion_text(record))
            item.setData(record.label, LABEL_ROLE)
            item.setData(record.token, RECORD_ROLE)
            item.setToolTip(self._describe(record))
            self.completion_model.appendRow(item)
        if self._results and self.instrument.hasFocus():
            self.completer.setCompletionPrefix("")
            self._size_popup()
            self.completer.complete()
        elif not self._results and self._popup_visible():
            self._hide_popup()

    def _size_popup(self) -> None:
        """Wide enough for "NIFTY25JULFUT    NFO · FUT · Nifty · lot 75", not the width of the field."""
        popup = self.completer.popup()
        if popup is None:
            return
        metrics = popup.fontMetrics()
        widest = max((metrics.horizontalAdvance(self._completion_text(r)) for r in self._results), default=0)
        scroll = popup.verticalScrollBar().sizeHint().width()
        popup.setMinimumWidth(min(max(self.instrument.width(), widest + scroll + 32), 720))

    @staticmethod
    def _completion_text(record: InstrumentRecord) -> str:
        details = [record.exchange]
        if record.instrument_type and record.instrument_type != "EQ":
            details.append(record.instrument_type)
        if record.name and record.name != record.symbol:
            details.append(record.name.title())
        if record.lot_size > 1:
            details.append(f"lot {record.lot_size}")
        return f"{record.symbol}    {' · '.join(details)}"

    def _on_completion_activated(self, label: str) -> None:
        record = next((r for r in self._results if r.label == label), None)
        if record is not None:
            self.select_instrument(record)
            # The completer writes its text after this signal; make sure ours is the one that stays.
            QTimer.singleShot(0, lambda: self.instrument.setText(record.label))

    def _popup_visible(self) -> bool:
        popup = self.completer.popup()
        return popup is not None and popup.isVisible()

    def _hide_popup(self) -> None:
        popup = self.completer.popup()
        if popup is not None:
            popup.hide()

    def _on_instrument_editing_finished(self) -> None:
        # Even with the list open: a symbol typed in full is a choice; picking from the list overrides it.
        self._resolve_typed_instrument()

    def _resolve_typed_instrument(self) -> None:
        """A symbol typed in full ("infy", "NSE:INFY") counts as chosen, without the list."""
        if self._instrument is not None:
            return
        master, text = self.master(), self.instrument.text()
        if master and text.strip():
            record = self.instruments.resolve(master, text)
            if record is not None:
                self.select_instrument(record)
                return
        if text.strip():
            self._touched.add(FIELD_INSTRUMENT)
            self._refresh()

    def _on_side_toggled(self, _button: object, checked: bool) -> None:
        if checked:
            self._refresh()

    def _on_order_type_changed(self, _index: int) -> None:
        limit = self.current_order_type() is OrderType.LIMIT
        self.price.setEnabled(limit)
        if not limit:
            self.price.setValue(0.0)
        else:
            # A starting point on the grid (the instrument's own last price); the trader adjusts it.
            self._price_from_market = True
            self._fill_limit_from_market(reset=True)
        self._on_field_edited(FIELD_PRICE)

    def _on_field_edited(self, field: str) -> None:
        if not self._quiet:
            self._touched.add(field)
        if field == FIELD_QUANTITY and self._instrument is not None:
            self._update_lots()
        self._refresh()

    def _on_snapshot_ready(self, snapshot: dict[str, object]) -> None:
        account_id = snapshot.get("account_id")
        quotes = snapshot.get("quotes")
        if not isinstance(account_id, int) or not isinstance(quotes, dict):
            return
        now = time.monotonic()
        for instrument, quote in quotes.items():
            ltp = getattr(quote, "ltp", None)
            if isinstance(ltp, int | float) and ltp > 0:
                self._prices[(account_id, str(instrument))] = (float(ltp), now, "live")
        session, record = self.session(), self._instrument
        if (
            session is not None
            and record is not None
            and session.account_id == account_id
            and any(str(k) == record.token for k in quotes)
        ):
            self._fill_limit_from_market()
            self._refresh()

    def _on_ltp_received(self, account_id: int, token: str, price: float) -> None:
        known = self._prices.get((account_id, token))
        if known is not None and known[2] == "live" and time.monotonic() - known[1] < LIVE_QUOTE_MAX_AGE:
            return  # the feed's price is fresher
        self._prices[(account_id, token)] = (price, time.monotonic(), "polled")
        self._price_times[(account_id, token)] = time.strftime("%H:%M:%S")
        session, record = self.session(), self._instrument
        if (
            session is not None
            and record is not None
            and (session.account_id, record.token) == (account_id, token)
        ):
            self._fill_limit_from_market()
            self._refresh()

    def _poll_ltp(self, force: bool = False) -> None:
        """Ask for a last price when the feed does not stream this instrument (not yet protected)."""
        session, record = self.session(), self._instrument
        if session is None or record is None or not (force or self.isVisible()):
            return
        known = self._prices.get((session.account_id, record.token))
        if known is not None and known[2] == "live" and time.monotonic() - known[1] < LIVE_QUOTE_MAX_AGE:
            return
        self.instruments.request_ltp(session, record)

    def _on_master_loaded(self, master: str, _count: int) -> None:
        if master == self.master():
            self._update_search_placeholder()
            if self.instrument.hasFocus() and self.instrument.text().strip():
                self._search_timer.start()
            self._resolve_typed_instrument()

    def _on_master_failed(self, master: str, why: str) -> None:
        if master == self.master():
            self.instrument.setPlaceholderText("Instrument list unavailable; type NSE:SYMBOL")
            self._set_status(f"Could not load the instrument list: {why}", ok=False)

    def _on_protection_changed(self, pid: int) -> None:
        if pid != self._last_pid:
            return
        try:
            p = self.store.get(pid)
        except KeyError:
            return
        decimals = price_decimals(p.tick_size)
        text = f"#{pid} {p.side.value} {p.quantity} {p.symbol}: {p.status.value}"
        if p.stop is not None:
            text += f", stop {format_inr(p.stop, decimals)}"
        if p.reason and p.status.value in ("REJECTED", "CANCELLED"):
            text += f" ({p.reason})"
        self._set_status(text, ok=p.status.value not in ("REJECTED", "CANCELLED"))

    def _on_cooldown_ended(self) -> None:
        self._cooling_down = False
        self.submit_button.setEnabled(True)

    # ================================================================= helpers

    def _set_status(self, text: str, *, ok: bool | None) -> None:
        colour = {True: "palette(text)", False: self._red, None: "palette(placeholder-text)"}[ok]
        self.status.setStyleSheet(f"color: {colour};")
        self.status.setText(text)

    def _show_error(self, field: str, text: str) -> None:
        label = self.errors[field]
        label.setText(text)
        label.setVisible(True)

    def _set_product(self, product: Product) -> None:
        self.product.blockSignals(True)
        self.product.setCurrentIndex(self.product.findData(product.value))
        self.product.blockSignals(False)

    @staticmethod
    def _suitable_product(record: InstrumentRecord | None, preferred: Product) -> Product:
        if record is None:
            return preferred
        derivative = bool(record.expiry) or record.instrument_type in ("FUT", "CE", "PE")
        if derivative and preferred is Product.CNC:
            return Product.NRML
        if not derivative and preferred is Product.NRML:
            return Product.CNC
        return preferred

    def _default_quantity(self) -> int:
        record = self._instrument
        lot = max(record.lot_size, 1) if record is not None else 1
        wanted = max(self.settings.default_quantity, 1)
        return max(lot, -(-wanted // lot) * lot)  # the default, rounded up to whole lots

    def _update_lots(self) -> None:
        record = self._instrument
        lot = max(record.lot_size, 1) if record is not None else 1
        quantity = self.quantity.value()
        if lot > 1 and quantity % lot == 0 and quantity > 0:
            _set_hint(self.lots, f"= {quantity // lot} lot{'s' if quantity // lot != 1 else ''} of {lot}")
        elif lot > 1:
            _set_hint(self.lots, f"lot size {lot}")
        else:
            _set_hint(self.lots, "")

    def _describe(self, record: InstrumentRecord) -> str:
        kind = {"EQ": "equity", "FUT": "future", "CE": "call option", "PE": "put option"}.get(
            record.instrument_type, record.instrument_type or record.segment
        )
        parts = [record.name.title() if record.name else record.symbol, f"{record.exchange} {kind}"]
        if record.expiry:
            try:
                parts.append(f"expiry {date.fromisoformat(record.expiry):%d %b %Y}")
            except ValueError:
                parts.append(f"expiry {record.expiry}")
        parts.append(f"lot {record.lot_size}" if record.lot_size > 1 else "lot 1")
        parts.append(f"tick {record.tick_size:g}")
        return " · ".join(parts)

    def _describe_instrument(self, record: InstrumentRecord) -> None:
        _set_hint(self.instrument_info, self._describe(record))
        self._update_lots()

    def _update_search_placeholder(self) -> None:
        master = self.master()
        if master is None:
            return
        if self.instruments.store.instrument_count(master) == 0:
            self.instrument.setPlaceholderText("Loading the instrument list…")
        else:
            self.instrument.setPlaceholderText(SEARCH_HINT)
