"""The order panel: an entry order with its trailing stop, previewed (stop and rupee risk) before it is sent.

It composes the parts a newcomer finds by name: the fields and their checks (``order_form``), the live
preview (``order_preview``) and the confirmation (``order_confirmation``); here are the instrument search,
the prices, and submitting.

Nothing here waits on the network: instrument searches read SQLite, last prices come from the feed's
snapshots or from a background ``broker.ltp()`` call (InstrumentService), and ``place_entry`` persists the
protection and returns at once while the order goes out on the service's pool.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCompleter,
    QFrame,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import OrderType, Product, Side, round_down
from trailstop_gui.models.store import InstrumentRecord, ProtectionStore
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.instruments import InstrumentService, master_key
from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
from trailstop_gui.services.session import AccountSession
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService
from trailstop_gui.settings import Settings
from trailstop_gui.views.order_attachments import (
    FIELD_BASKET,
    FIELD_EXIT_TIME,
    FIELD_UNDERLYING,
    NEW_BASKET,
    OrderAttachments,
    UnderlyingChoice,
)
from trailstop_gui.views.order_confirmation import Confirmation, confirmation_box
from trailstop_gui.views.order_form import (
    BUY_COLOUR,
    ERROR_COLOUR,
    ERROR_COLOUR_ON_DARK,
    FIELD_INSTRUMENT,
    FIELD_LTP,
    FIELD_ORDER,
    FIELD_PRICE,
    FIELD_PRODUCT,
    FIELD_QUANTITY,
    FIELD_SAFETY,
    RULE_FIELDS,
    SEARCH_HINT,
    SELL_COLOUR,
    OrderForm,
    Problem,
    completion_text,
    describe_instrument,
    error_label,
    form_problems,
    lots_text,
    set_hint,
    suitable_product,
)
from trailstop_gui.views.order_preview import (
    OrderPreviewBox,
    Preview,
    PreviewInputs,
    compute_preview,
    format_inr,
    price_decimals,
)


def _rupees_or_dash(value: float | None) -> str:
    return "—" if value is None else format_inr(value)


__all__ = ["OrderEntryPanel", "Preview", "compute_preview", "format_inr", "price_decimals"]

SEARCH_DELAY_MS = 60
LTP_POLL_MS = 2_000
LIVE_QUOTE_MAX_AGE = 3.0  # seconds: a snapshot older than this no longer counts as live
SUBMIT_COOLDOWN_MS = 1_200  # a double Enter must not send two orders
# A limit this far (percent) from the last price is flagged beside the field and always confirmed: a price
# typed for another instrument, or a digit too many, is caught before it is sent.
LIMIT_FAR_PERCENT = 5.0
RECORD_ROLE = Qt.ItemDataRole.UserRole + 1
LABEL_ROLE = Qt.ItemDataRole.UserRole + 2


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
        *,
        baskets: BasketService | None = None,
        square_off: SquareOffService | None = None,
        underlying: UnderlyingService | None = None,
    ) -> None:
        """``baskets``, ``square_off``, ``underlying``: what the form can attach to the protection (a basket,
        a timed exit, a stop on the underlying); each control shows only with its service."""
        super().__init__(parent)
        self.service = service
        self.store = store
        self.settings = settings
        self.instruments = instruments
        self._rule_services = (baskets, square_off, underlying)
        self._instrument: InstrumentRecord | None = None
        self._underlying: InstrumentRecord | None = None  # the underlying typed in the form, once resolved
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

        self.form = form = OrderForm(self.settings.default_rule, self._red)
        # The fields by their names, as the panel's own (tests, tools and the window use them so).
        self.account, self.instrument, self.instrument_info = (
            form.account,
            form.instrument,
            form.instrument_info,
        )
        self.buy, self.sell, self.side_group = form.buy, form.sell, form.side_group
        self.quantity, self.lots, self.product, self.order_type = (
            form.quantity,
            form.lots,
            form.product,
            form.order_type,
        )
        self.price, self.price_warning = form.price, form.price_warning
        self.rule_editor, self.safety = form.rule_editor, form.safety
        self.errors = form.errors
        baskets, square_off, underlying = self._rule_services
        self.attachments = OrderAttachments(
            form, baskets=baskets, square_off=square_off, underlying=underlying
        )
        self.attachments.add_rows(form, form.layout_form)
        self.completion_model = QStandardItemModel(self)
        self.completer = QCompleter(self.completion_model, self)
        self.completer.setCompletionMode(QCompleter.CompletionMode.UnfilteredPopupCompletion)
        self.completer.setCompletionRole(LABEL_ROLE)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setMaxVisibleItems(12)
        self.instrument.setCompleter(self.completer)

        self.preview_box = box = OrderPreviewBox(self._red)
        self.ltp_value, self.entry_value, self.stop_value = box.ltp_value, box.entry_value, box.stop_value
        self.risk_value, self.target_value, self.safety_value = (
            box.risk_value,
            box.target_value,
            box.safety_value,
        )
        self.preview_note = box.note
        self.underlying_caption, self.underlying_value = QLabel("Stop on the underlying"), QLabel("—")
        self.basket_caption, self.basket_value = QLabel("Basket"), QLabel("—")
        self.exit_caption, self.exit_value = QLabel("Timed exit"), QLabel("—")
        for caption, value in (
            (self.underlying_caption, self.underlying_value),
            (self.basket_caption, self.basket_value),
            (self.exit_caption, self.exit_value),
        ):
            value.setWordWrap(True)
            caption.setVisible(False)
            value.setVisible(False)
            if self.attachments.available:
                box.add_row(caption, value)

        self.submit_button = QPushButton("Place order")
        self.submit_button.setMinimumHeight(38)
        self.submit_button.setAutoDefault(False)
        self.submit_button.setToolTip("Enter")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # The form scrolls rather than squeezes when the window is short (a laptop screen with the
        # Baskets dock open): squeezed, its rows were drawn over each other.
        self.content = QWidget()
        self.content.setObjectName("orderContent")
        self.scroll_area = QScrollArea(self)
        self.scroll_area.setObjectName("orderScroll")
        self.scroll_area.setWidget(self.content)
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)
        layout = QVBoxLayout(self.content)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(8)
        layout.addWidget(title)
        layout.addWidget(form)
        layout.addWidget(self.preview_box)
        self.errors[FIELD_LTP] = error_label(self._red)
        self.errors[FIELD_ORDER] = error_label(self._red)
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
        chain = [*form.tab_chain(), *self.attachments.tab_chain(), self.submit_button]
        for first, second in zip(chain, chain[1:], strict=False):
            QWidget.setTabOrder(first, second)

    def minimumSizeHint(self) -> QSize:
        """As wide as the form needs (it never scrolls sideways), and short: it scrolls."""
        return QSize(self.content.minimumSizeHint().width() + self._scrollbar_width(), 120)

    def sizeHint(self) -> QSize:
        hint = self.content.sizeHint()
        return QSize(hint.width() + self._scrollbar_width(), hint.height())

    def _scrollbar_width(self) -> int:
        bar = self.scroll_area.verticalScrollBar()
        return bar.sizeHint().width() if bar is not None else 0

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
        self._wire_attachments()
        self.submit_button.clicked.connect(self.submit)

        self.service.snapshot_ready.connect(self._on_snapshot_ready)
        self.service.session_state_changed.connect(self._on_session_state_changed)
        self.service.protection_changed.connect(self._on_protection_changed)
        self.instruments.master_loaded.connect(self._on_master_loaded)
        self.instruments.master_failed.connect(self._on_master_failed)
        self.instruments.ltp_received.connect(self._on_ltp_received)

    def _wire_attachments(self) -> None:
        a = self.attachments
        a.basket.currentIndexChanged.connect(lambda _i: self._on_field_edited(FIELD_BASKET))
        a.basket_name.textChanged.connect(lambda _t: self._on_field_edited(FIELD_BASKET))
        for edit in a.basket_rules.values():
            edit.textChanged.connect(lambda _t: self._on_field_edited(FIELD_BASKET))
        a.exit_at.toggled.connect(lambda _on: self._on_field_edited(FIELD_EXIT_TIME))
        a.exit_time.timeChanged.connect(lambda _t: self._on_field_edited(FIELD_EXIT_TIME))
        a.on_underlying.toggled.connect(self._on_underlying_toggled)
        a.underlying_symbol.textEdited.connect(self._on_underlying_edited)
        a.underlying_symbol.editingFinished.connect(self._resolve_underlying)
        a.view.currentIndexChanged.connect(lambda _i: self._on_field_edited(FIELD_UNDERLYING))
        if a.baskets is not None:
            a.baskets.basket_changed.connect(self._on_basket_changed)

    # ================================================================= public API

    def apply_settings(self, settings: Settings) -> None:
        """New defaults (from the settings dialog); fields the trader has not touched follow them."""
        self.settings = settings
        self._quiet = True  # these are not the trader's edits
        try:
            if "rule" not in self._touched:
                self.rule_editor.set_rule(settings.default_rule)
            if FIELD_PRODUCT not in self._touched:
                self.form.set_product(suitable_product(self._instrument, Product(settings.default_product)))
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
        self.form.set_product(Product(self.settings.default_product))
        self.order_type.setCurrentIndex(0)
        self.price.setValue(0.0)
        self.price.setEnabled(False)
        self._price_from_market = True
        self.rule_editor.set_rule(self.settings.default_rule)
        self.rule_editor.more.setChecked(False)
        self.quantity.setValue(self._default_quantity())
        self.safety.setChecked(self.settings.safety_stop)
        set_hint(self.instrument_info, "")
        set_hint(self.lots, "")
        self.attachments.clear()
        self._underlying = None
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
            self.form.set_product(suitable_product(record, Product(self.settings.default_product)))
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
        return self.form.side()

    def current_order_type(self) -> OrderType:
        return self.form.current_order_type()

    def current_product(self) -> Product:
        return self.form.current_product()

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
        """Validate, confirm (unless settings say not to), then hand the order to the service.

        Not an async slot, unlike the login exchange, Check order route, refresh and Protect (issue 16
        asks for one where a flow reads better so): this flow has no broker reply to await. place_entry
        writes the PENDING protection (SQLite, milliseconds) and returns; the send, the look-up by tag
        after a lost reply and the watch until the fill (up to ENTRY_WATCH_SECONDS) belong to that
        protection, not to this form, and run on the service's pool (ProtectionService.actions): they must
        finish when the form is cleared, another order is placed or the window closes, and the headless
        self-test places entries the same way. What the broker says comes back as the protection's row
        (protection_changed, shown in the status line by _on_protection_changed; a refusal also as
        action_failed, which the main window shows), which the positions table follows too. A coroutine
        here would await only the send and leave the watch a runnable: one flow split in two places,
        and the form held for nothing.
        """
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
            if self.attachments.wanted():
                account_id, choice = request.account_id, self.underlying_choice()
                protection = self.service.place_entry(
                    request, attach=lambda p: self.attachments.attach(p, account_id, choice)
                )
            else:
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

    def _problems(self) -> list[Problem]:
        out = form_problems(
            self.form, has_session=self.session() is not None, record=self._instrument, preview=self.preview
        )
        choice = self.underlying_choice()
        return out + self.attachments.problems(
            record=self._instrument,
            underlying=self._underlying,
            underlying_price=None if choice is None else choice.price,
            rule=self.rule_editor.rule_or_none(),
            safety=self.safety,
        )

    def _refresh(self) -> None:
        """Re-validate and redraw the preview and the submit button; cheap enough for every tick."""
        problems = self._problems()
        shown: dict[str, list[str]] = {}
        for field, message, _widget in problems:
            key = "rule" if field in RULE_FIELDS else field
            if self._show_all_errors or key in self._touched:
                shown.setdefault(key, []).append(f"{field}: {message}")
        for key, label in self.errors.items():
            if key == FIELD_ORDER:
                continue
            lines = shown.get(key)
            label.setText("\n".join(lines) if lines else "")
            label.setVisible(bool(lines))
        warning = self.limit_warning()
        set_hint(self.price_warning, f"⚠ {warning}" if warning else "")
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

    def _draw_preview(self) -> None:
        limit = self.current_order_type() is OrderType.LIMIT
        self.preview_box.draw(
            PreviewInputs(
                record=self._instrument,
                last_price=self.last_price(),
                polled_at=self._price_times.get(self._price_key() or (0, ""), ""),
                preview=self.preview(),
                side=self.side(),
                quantity=self.quantity.value(),
                rule=self.rule_editor.rule_or_none(),
                limit_without_price=limit and self.price.value() <= 0,
                market=not limit,
                safety_on=self.safety.isChecked(),
            )
        )
        self._draw_attachments()

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
        session = self.session()
        box, place = confirmation_box(
            self,
            Confirmation(
                request=request,
                preview=preview,
                record=record,
                account_label=session.label if session else "",
                limit_warning=self.limit_warning(),
                red=self._red,
                extras=tuple(self.attachments.describe(self.underlying_choice(), request.rule)),
                stop_on_underlying=self.underlying_choice() is not None,
            ),
        )
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
                    set_hint(self.instrument_info, "")
            self._update_search_placeholder()
        self.attachments.list_baskets(self.account.currentData())
        self._underlying = None
        self._resolve_underlying()
        self._refresh()

    def _on_session_state_changed(self, _account_id: int, _state: str) -> None:
        self.refresh_accounts()

    def _on_instrument_edited(self, text: str) -> None:
        if self._instrument is not None and text.strip().upper() != self._instrument.label:
            self._instrument = None
            set_hint(self.instrument_info, "")
        self._touched.discard(FIELD_INSTRUMENT)
        self._search_timer.start()
        self._refresh()

    def _run_search(self) -> None:
        master = self.master()
        text = self.instrument.text()
        self._results = self.instruments.search(master, text, 12) if master and text.strip() else []
        self.completion_model.clear()
        for record in self._results:
            item = QStandardItem(completion_text(record))
            item.setData(record.label, LABEL_ROLE)
            item.setData(record.token, RECORD_ROLE)
            item.setToolTip(describe_instrument(record))
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
        widest = max((metrics.horizontalAdvance(completion_text(r)) for r in self._results), default=0)
        scroll = popup.verticalScrollBar().sizeHint().width()
        popup.setMinimumWidth(min(max(self.instrument.width(), widest + scroll + 32), 720))

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
        elif (
            session is not None
            and self._underlying is not None
            and session.account_id == account_id
            and any(str(k) == self._underlying.token for k in quotes)
        ):
            self._refresh()

    def _on_ltp_received(self, account_id: int, token: str, price: float) -> None:
        known = self._prices.get((account_id, token))
        if known is not None and known[2] == "live" and time.monotonic() - known[1] < LIVE_QUOTE_MAX_AGE:
            return  # the feed's price is fresher
        self._prices[(account_id, token)] = (price, time.monotonic(), "polled")
        self._price_times[(account_id, token)] = time.strftime("%H:%M:%S")
        session, record = self.session(), self._instrument
        underlying = self._underlying
        if (
            session is not None
            and underlying is not None
            and (session.account_id, underlying.token)
            == (
                account_id,
                token,
            )
        ):
            self._refresh()
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
        self._poll_price_of(session, record)
        if self._underlying is not None and self.attachments.on_underlying.isChecked():
            self._poll_price_of(session, self._underlying)

    def _poll_price_of(self, session: AccountSession, record: InstrumentRecord) -> None:
        known = self._prices.get((session.account_id, record.token))
        if known is not None and known[2] == "live" and time.monotonic() - known[1] < LIVE_QUOTE_MAX_AGE:
            return
        self.instruments.request_ltp(session, record)

    # ================================================================= the attachments

    def underlying_choice(self) -> UnderlyingChoice | None:
        """The underlying as the form has it (with its last known price), or None when off or unknown."""
        session, record = self.session(), self._underlying
        if not self.attachments.on_underlying.isChecked() or session is None or record is None:
            return None
        known = self._prices.get((session.account_id, record.token))
        return UnderlyingChoice(
            record, self.attachments.underlying_view(), None if known is None else known[0]
        )

    def _on_underlying_toggled(self, on: bool) -> None:
        if on:
            self.attachments.set_default_view(self._instrument, self.side())
            if self.safety.isChecked() and FIELD_SAFETY not in self._touched:
                self.safety.setChecked(False)  # the default; a safety stop the trader chose is reported
            self._resolve_underlying()
        self._on_field_edited(FIELD_UNDERLYING)

    def _on_underlying_edited(self, _text: str) -> None:
        self._underlying = None
        set_hint(self.attachments.underlying_info, "")
        self._touched.discard(FIELD_UNDERLYING)
        self._refresh()

    def _resolve_underlying(self) -> None:
        """The typed underlying ("NSE:NIFTY 50", "NIFTY 50") in the account's master; its price asked for."""
        master, text = self.master(), self.attachments.underlying_symbol.text()
        session = self.session()
        record = self.instruments.resolve(master, text) if master and text.strip() else None
        self._underlying = record
        info = "" if record is None else f"{record.name.title() or record.symbol} · {record.exchange}"
        set_hint(self.attachments.underlying_info, info)
        if record is not None and session is not None and self.attachments.on_underlying.isChecked():
            self._poll_price_of(session, record)
        if text.strip():
            self._touched.add(FIELD_UNDERLYING)
        self._refresh()

    def _on_basket_changed(self, _basket_id: int) -> None:
        self.attachments.list_baskets(self.account.currentData())
        self._refresh()

    def _draw_attachments(self) -> None:
        a = self.attachments
        choice = self.underlying_choice()
        rule = self.rule_editor.rule_or_none()
        on_underlying = a.underlying is not None and a.on_underlying.isChecked()
        self.underlying_caption.setVisible(on_underlying)
        self.underlying_value.setVisible(on_underlying)
        if on_underlying:
            stop = None if choice is None or rule is None else choice.stop(rule)
            if choice is None or choice.price is None or stop is None:
                self.underlying_value.setText("—")
            else:
                decimals = price_decimals(choice.tick_size)
                distance = abs(choice.price - stop)
                sign = "−" if choice.view.is_long else "+"
                self.underlying_value.setText(
                    f"<b>{stop:,.{decimals}f}</b> on {choice.record.symbol}"
                    f"  <small>({sign}{distance:,.{decimals}f} from {choice.price:,.{decimals}f};"
                    f" {'long' if choice.view.is_long else 'short'} view)</small>"
                )
                self.preview_note.setText(
                    f"The stop is a price of {choice.record.symbol}, not of this instrument: it is set at"
                    f" {stop:,.{decimals}f} from {choice.record.symbol}'s price now"
                    f" ({choice.price:,.{decimals}f}) and trails it once the entry fills; crossing it"
                    " exits this position."
                )
        # This instrument's own stop, risk and target do not apply: the stop is on the underlying.
        box = self.preview_box
        for caption, value in (
            (box.stop_caption, box.stop_value),
            (box.risk_caption, box.risk_value),
            (box.target_caption, box.target_value),
        ):
            if on_underlying:
                caption.setVisible(False)
                value.setVisible(False)
            elif caption is not box.target_caption:
                caption.setVisible(True)
                value.setVisible(True)
        basket = a.chosen_basket()
        new = a.baskets is not None and a.basket.currentData() == NEW_BASKET
        self.basket_caption.setVisible(basket is not None or new)
        self.basket_value.setVisible(basket is not None or new)
        if basket is not None and a.baskets is not None:
            live = a.baskets.preview(basket.id)
            if live is None:
                self.basket_value.setText(f"{basket.name}: {basket.rules.describe()}")
            else:
                self.basket_value.setText(
                    f"{basket.name}: MTM {format_inr(live['mtm'] or 0.0)}"
                    f" · lock {_rupees_or_dash(live['lock'])}"
                    f" · loss limit {_rupees_or_dash(live['loss_limit'])}"
                    f" · distance {_rupees_or_dash(live['distance'])}"
                )
        elif new:
            try:
                rules = a.new_basket_rules()
                name = a.basket_name.text().strip() or "new basket"
                self.basket_value.setText(f"{name} (new): {rules.describe()}")
            except ValueError:
                self.basket_value.setText("—")
        at = a.exit_at_text() if a.square_off is not None else None
        self.exit_caption.setVisible(at is not None)
        self.exit_value.setVisible(at is not None)
        if at is not None:
            self.exit_value.setText(f"{at} IST, if still open")

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

    def _default_quantity(self) -> int:
        record = self._instrument
        lot = max(record.lot_size, 1) if record is not None else 1
        wanted = max(self.settings.default_quantity, 1)
        return max(lot, -(-wanted // lot) * lot)  # the default, rounded up to whole lots

    def _update_lots(self) -> None:
        record = self._instrument
        lot = max(record.lot_size, 1) if record is not None else 1
        set_hint(self.lots, lots_text(self.quantity.value(), lot))

    def _describe_instrument(self, record: InstrumentRecord) -> None:
        set_hint(self.instrument_info, describe_instrument(record))
        self._update_lots()

    def _update_search_placeholder(self) -> None:
        master = self.master()
        if master is None:
            return
        if self.instruments.store.instrument_count(master) == 0:
            self.instrument.setPlaceholderText("Loading the instrument list…")
        else:
            self.instrument.setPlaceholderText(SEARCH_HINT)
