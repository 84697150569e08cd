"""The order form's fields and their checks: every problem is (field, message naming it, widget to focus).

``OrderForm`` holds the widgets (account, instrument, side, quantity, product, order type, price, trailing
rule, safety stop), each with its own red error line; ``form_problems`` says what is wrong with them. What
the fields are for (search, prices, submitting) is the panel's (views/order_entry.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import OrderType, Product, Side, TrailRule, on_grid, round_down, round_up
from trailstop_gui.models.store import InstrumentRecord
from trailstop_gui.views import rule_editor
from trailstop_gui.views.number_field import StrictDoubleSpinBox, StrictSpinBox
from trailstop_gui.views.order_preview import Preview, price_decimals
from trailstop_gui.views.rule_editor import RuleEditor

# Kite's colours: blue and orange tell BUY from SELL for colour-blind traders too, unlike green and red.
BUY_COLOUR = "#1f6fd1"
SELL_COLOUR = "#e2541b"
ERROR_COLOUR = "#d32f2f"
ERROR_COLOUR_ON_DARK = "#ff6e6e"  # the same red is too dim on a dark window

FIELD_ACCOUNT = "Account"
FIELD_INSTRUMENT = "Instrument"
FIELD_QUANTITY = "Quantity"
FIELD_PRODUCT = "Product"
FIELD_PRICE = "Price"
FIELD_LTP = "Last price"
FIELD_ORDER = "Order"
FIELD_SAFETY = "Safety stop"
RULE_FIELDS = frozenset(
    {
        rule_editor.FIELD_TRAIL,
        rule_editor.FIELD_ACTIVATION,
        rule_editor.FIELD_LADDER,
        rule_editor.FIELD_BREAKEVEN,
        rule_editor.FIELD_TARGET,
    }
)

SEARCH_HINT = "Symbol or company, e.g. INFY or Tata"
MAX_QUANTITY = 10_000_000
MAX_PRICE = 10_000_000.0

PRODUCT_HELP = {
    Product.MIS: "MIS: intraday; squared off by the broker before the close",
    Product.CNC: "CNC: equity delivery",
    Product.NRML: "NRML: futures and options carried overnight",
}

Problem = tuple[str, str, QWidget]  # field, message, the widget to focus


def set_hint(label: QLabel, text: str) -> None:
    """An empty hint takes no room in the form."""
    label.setText(text)
    label.setVisible(bool(text))


def error_label(red: str) -> QLabel:
    label = QLabel("")
    label.setObjectName("error")
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {red};")
    label.setVisible(False)
    return label


class ComboBox(QComboBox):
    """A combo box that leaves Enter to the form (so that Enter submits) while its list is closed."""

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not self.view().isVisible():
            event.ignore()
            return
        super().keyPressEvent(event)


def is_derivative(record: InstrumentRecord) -> bool:
    return bool(record.expiry) or record.instrument_type in ("FUT", "CE", "PE")


def suitable_product(record: InstrumentRecord | None, preferred: Product) -> Product:
    """The product the form starts with for ``record``: NRML for F&O, CNC for equity, MIS either way."""
    if record is None:
        return preferred
    derivative = is_derivative(record)
    if derivative and preferred is Product.CNC:
        return Product.NRML
    if not derivative and preferred is Product.NRML:
        return Product.CNC
    return preferred


def describe_instrument(record: InstrumentRecord) -> str:
    """ "Infosys · NSE equity · lot 1 · tick 0.05": what the trader picked, in words."""
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


def completion_text(record: InstrumentRecord) -> str:
    """One line of the search list: "NIFTY25JULFUT    NFO · FUT · Nifty · lot 75"."""
    details = [record.exchange]
    if record.instrument_type and record.instrument_type != "EQ":
        details.append(record.instrument_type)
    if record.name and record.name != record.symbol:
        details.append(record.name.title())
    if record.lot_size > 1:
        details.append(f"lot {record.lot_size}")
    return f"{record.symbol}    {' · '.join(details)}"


def lots_text(quantity: int, lot: int) -> str:
    if lot > 1 and quantity % lot == 0 and quantity > 0:
        return f"= {quantity // lot} lot{'s' if quantity // lot != 1 else ''} of {lot}"
    if lot > 1:
        return f"lot size {lot}"
    return ""


class OrderForm(QWidget):
    """The fields of an entry order, laid out with an error line under each."""

    def __init__(self, default_rule: TrailRule, red: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._red = red
        self.errors: dict[str, QLabel] = {}

        self.account = ComboBox()
        self.account.setAccessibleName("Account")
        self.account.setToolTip("Orders go to this account. Only logged-in accounts are listed.")

        self.instrument = QLineEdit()
        self.instrument.setPlaceholderText(SEARCH_HINT)
        self.instrument.setClearButtonEnabled(True)
        self.instrument.setAccessibleName("Instrument")
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

        self.product = ComboBox()
        for product in Product:
            self.product.addItem(product.value, product.value)
            self.product.setItemData(
                self.product.count() - 1, PRODUCT_HELP[product], Qt.ItemDataRole.ToolTipRole
            )
        self.product.setToolTip("\n".join(PRODUCT_HELP.values()))
        self.product.setAccessibleName("Product")

        self.order_type = ComboBox()
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

        self.rule_editor = RuleEditor(default_rule)

        self.safety = QCheckBox("Broker-held safety stop")
        self.safety.setAccessibleName("Broker-held safety stop")
        self.safety.setToolTip(
            "Also keep a stop order at the broker (SL-M or GTT) a little behind the trailing stop, moved"
            " along with it: the loss stays bounded even when TrailStop is not running."
        )

        self.layout_form = form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setHorizontalSpacing(8)  # as when it was nested in the panel's column (spacing 8)
        form.setVerticalSpacing(6)
        form.addRow("&Account", self.with_error(FIELD_ACCOUNT, self.account))
        form.addRow("&Instrument", self.with_error(FIELD_INSTRUMENT, self.instrument, self.instrument_info))
        sides = QHBoxLayout()
        sides.setSpacing(6)
        sides.addWidget(self.buy, 1)
        sides.addWidget(self.sell, 1)
        form.addRow("Side", sides)
        qty_row = QHBoxLayout()
        qty_row.addWidget(self.quantity, 1)
        qty_row.addWidget(self.lots)
        form.addRow("&Quantity", self.with_error(FIELD_QUANTITY, qty_row))
        product_row = QHBoxLayout()
        product_row.addWidget(self.product, 1)
        product_row.addWidget(self.order_type, 1)
        form.addRow("&Product / type", self.with_error(FIELD_PRODUCT, product_row))
        form.addRow("P&rice", self.with_error(FIELD_PRICE, self.price, self.price_warning))
        form.addRow("&Trailing stop", self.with_error("rule", self.rule_editor))
        form.addRow("", self.safety)
        label = form.labelForField(self.account)
        if isinstance(label, QLabel):
            label.setBuddy(self.account)

    def tab_chain(self) -> list[QWidget]:
        """The fields in the order Tab visits them."""
        return [
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
        ]

    def with_error(self, field: str, content: QWidget | QHBoxLayout, *extra: QWidget) -> QWidget:
        """``content`` with ``extra`` hints under it and the field's red error line last."""
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
        label = error_label(self._red)
        column.addWidget(label)
        self.errors[field] = label
        return box

    # ----------------------------------------------------------------- what the fields say

    def side(self) -> Side:
        return Side.SELL if self.sell.isChecked() else Side.BUY

    def current_order_type(self) -> OrderType:
        return OrderType(self.order_type.currentData())

    def current_product(self) -> Product:
        return Product(self.product.currentData())

    def set_product(self, product: Product) -> None:
        """Choose ``product`` without it counting as the trader's edit."""
        self.product.blockSignals(True)
        self.product.setCurrentIndex(self.product.findData(product.value))
        self.product.blockSignals(False)


def form_problems(
    form: OrderForm,
    *,
    has_session: bool,
    record: InstrumentRecord | None,
    preview: Callable[[], Preview | None],
) -> list[Problem]:
    """Every problem with the form, in the order the fields appear; each message names its field."""
    out: list[Problem] = []
    if not has_session:
        out.append((FIELD_ACCOUNT, "log in to an account first", form.account))
    if record is None:
        text = form.instrument.text().strip()
        message = f"no instrument matches {text!r}; pick one from the list" if text else "choose one"
        out.append((FIELD_INSTRUMENT, message, form.instrument))
    elif not record.tradable:
        out.append((FIELD_INSTRUMENT, f"{record.symbol} is an index; it cannot be traded", form.instrument))
    quantity = form.quantity.value()
    lot = max(record.lot_size, 1) if record is not None else 1
    typed_quantity = form.quantity.problem()
    if typed_quantity is not None:
        out.append((FIELD_QUANTITY, typed_quantity, form.quantity))
    elif quantity <= 0:
        out.append(
            (
                FIELD_QUANTITY,
                "must be at least 1" if lot == 1 else f"at least one lot of {lot}",
                form.quantity,
            )
        )
    elif quantity % lot:
        out.append((FIELD_QUANTITY, f"must be a multiple of the lot size {lot}", form.quantity))
    if record is not None:
        product = form.current_product()
        derivative = is_derivative(record)
        if derivative and product is Product.CNC:
            out.append((FIELD_PRODUCT, "CNC is for equity delivery; use NRML or MIS for F&O", form.product))
        elif not derivative and product is Product.NRML:
            out.append((FIELD_PRODUCT, "NRML is for F&O; use CNC or MIS for equity", form.product))
    if form.current_order_type() is OrderType.LIMIT:
        price = form.price.value()
        typed_price = form.price.problem()
        if typed_price is not None:
            out.append((FIELD_PRICE, typed_price, form.price))
        elif price <= 0:
            out.append((FIELD_PRICE, "a LIMIT order needs a price", form.price))
        elif record is not None and record.tradable and not on_grid(price, record.tick_size):
            tick = record.tick_size
            below, above = round_down(price, tick), round_up(price, tick)
            d = price_decimals(tick)
            out.append(
                (
                    FIELD_PRICE,
                    f"must be a multiple of the tick size {tick:g}, e.g. {below:.{d}f} or {above:.{d}f}",
                    form.price,
                )
            )
    for field, message in form.rule_editor.errors():
        out.append((field, message, form.rule_editor.field_widget(field)))
    if not out and record is not None:
        shown = preview()
        if shown is None and form.current_order_type() is OrderType.MARKET:
            out.append(
                (
                    FIELD_LTP,
                    f"no price for {record.symbol} yet, so the stop and risk are unknown; "
                    "wait a moment or use a LIMIT order",
                    form.instrument,
                )
            )
        elif shown is not None and shown.stop <= 0:
            out.append(
                (
                    "Trailing stop",
                    "the stop would be at or below zero; trail less",
                    form.rule_editor.value,
                )
            )
    return out
