"""What the order form attaches to the protection it creates, besides its trailing stop: a basket (existing
or new), a timed exit (IST) and a stop on the underlying (another instrument's price).

The services do the work (``BasketService``, ``SquareOffService``, ``UnderlyingService``); this module holds
the controls, their checks (each message names its field) and ``attach``, which the order panel hands to
``ProtectionService.place_entry`` so that all of it is stored before the entry order goes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTime
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QTimeEdit,
    QWidget,
)

from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.basket_store import Basket, BasketStatus
from trailstop_gui.models.domain import Protection, Side, TrailRule
from trailstop_gui.models.engine import checked_initial_stop
from trailstop_gui.models.store import ConcurrentTransition, InstrumentRecord
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService
from trailstop_gui.views.order_form import ComboBox, OrderForm, Problem

FIELD_BASKET = "Basket"
FIELD_EXIT_TIME = "Exit time"
FIELD_UNDERLYING = "Underlying"
ATTACHMENT_FIELDS = (FIELD_BASKET, FIELD_EXIT_TIME, FIELD_UNDERLYING)

NO_BASKET = "none"
NEW_BASKET = "new"
INDEX_TICK = 0.05  # an index's master row has no tick size; its stop sits on NSE's usual grid
# The new basket's rules, as the basket dialog names them.
BASKET_RULES = (
    ("max_loss", "Max loss ₹"),
    ("lock_at", "Lock at ₹"),
    ("lock_profit", "lock ₹"),
    ("trail_every", "Every further ₹"),
    ("trail_by", "raise by ₹"),
)
EARLIEST_EXIT = QTime(9, 16)
TOOLTIP = Qt.ItemDataRole.ToolTipRole
LATEST_EXIT = QTime(15, 29)


@dataclass(frozen=True)
class UnderlyingChoice:
    """The underlying as chosen in the form, with its price now (None: not known yet)."""

    record: InstrumentRecord
    view: Side
    price: float | None

    @property
    def tick_size(self) -> float:
        return self.record.tick_size if self.record.tick_size > 0 else INDEX_TICK

    def stop(self, rule: TrailRule) -> float | None:
        """Where the stop on the underlying starts (its price now, the protection's rule)."""
        if self.price is None or self.price <= 0:
            return None
        try:
            return checked_initial_stop(self.view, self.price, self.tick_size, rule)
        except ValueError:
            return None


def default_view(record: InstrumentRecord | None, side: Side) -> Side:
    """The view that protects the position: a bought call or a sold put loses when the underlying falls
    (a long view, BUY); a bought put or a sold call when it rises (a short view, SELL)."""
    if record is not None and record.instrument_type == "PE":
        return Side.SELL if side.is_long else Side.BUY
    return side


class OrderAttachments:
    """The controls (rows of the order form) and what they make of the protection."""

    def __init__(
        self,
        form: OrderForm,
        *,
        baskets: BasketService | None,
        square_off: SquareOffService | None,
        underlying: UnderlyingService | None,
    ) -> None:
        self.baskets = baskets
        self.square_off = square_off
        self.underlying = underlying
        self.view_touched = False

        self.basket = ComboBox()
        self.basket.setAccessibleName("Basket")
        self.basket.setToolTip(
            "Put the new protection in a basket: the basket exits all its positions together on its MTM"
            " (max loss, lock and trail), each position keeping its own trailing stop too."
        )
        self.basket_name = QLineEdit()
        self.basket_name.setPlaceholderText("new basket's name, e.g. NIFTY strangle")
        self.basket_name.setAccessibleName("New basket name")
        self.basket_rules: dict[str, QLineEdit] = {}
        self.new_basket = QWidget()
        grid = QGridLayout(self.new_basket)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(3)
        grid.addWidget(self.basket_name, 0, 0, 1, 4)
        for i, (name, caption) in enumerate(BASKET_RULES):
            edit = QLineEdit()
            edit.setPlaceholderText("off")
            edit.setAccessibleName(caption.replace("₹", "(₹)").strip())
            self.basket_rules[name] = edit
            row, column = (1, 0) if i == 0 else (1 + (i + 1) // 2, 2 * ((i + 1) % 2))
            grid.addWidget(QLabel(caption), row, column)
            grid.addWidget(edit, row, column + 1)
        self.new_basket.setVisible(False)

        self.exit_at = QCheckBox("Exit at")
        self.exit_at.setAccessibleName("Exit at a time")
        self.exit_time = QTimeEdit(QTime(15, 15))
        self.exit_time.setDisplayFormat("HH:mm")
        self.exit_time.setTimeRange(EARLIEST_EXIT, LATEST_EXIT)
        self.exit_time.setAccessibleName("Exit time (IST)")
        self.exit_time.setEnabled(False)
        self.exit_at.setToolTip(
            "Exit the position at this time (IST) on a day the market is open, through the same path as a"
            " fired stop; for MIS, before the broker's own square-off (which charges a fee per order)."
        )

        self.on_underlying = QCheckBox("Stop on")
        self.on_underlying.setAccessibleName("Stop on the underlying")
        self.on_underlying.setToolTip(
            "Trail and trigger on another instrument's price (NIFTY 50, the stock); the exit still sells"
            " this option or future. No broker-held safety stop with it."
        )
        self.underlying_symbol = QLineEdit()
        self.underlying_symbol.setPlaceholderText("NSE:NIFTY 50")
        self.underlying_symbol.setAccessibleName("Underlying instrument")
        self.view = ComboBox()
        self.view.addItem("long view", Side.BUY.value)
        self.view.addItem("short view", Side.SELL.value)
        self.view.setItemData(0, "Protects against the underlying falling (a bought call)", TOOLTIP)
        self.view.setItemData(1, "Protects against the underlying rising (a bought put)", TOOLTIP)
        self.view.setAccessibleName("View of the underlying")
        self.underlying_info = QLabel("")
        self.underlying_info.setObjectName("hint")
        self.underlying_info.setWordWrap(True)
        self.underlying_info.setVisible(False)
        self._enable_underlying(False)

        self.exit_at.toggled.connect(self.exit_time.setEnabled)
        self.on_underlying.toggled.connect(self._enable_underlying)
        self.basket.currentIndexChanged.connect(
            lambda _i: self.new_basket.setVisible(self.basket.currentData() == NEW_BASKET)
        )
        self.view.activated.connect(self._on_view_chosen)

    # ----------------------------------------------------------------- layout

    @property
    def available(self) -> bool:
        return any(s is not None for s in (self.baskets, self.square_off, self.underlying))

    def add_rows(self, form: OrderForm, layout: QFormLayout) -> None:
        """The attachments' rows, after the safety stop, each with its own error line."""
        if self.baskets is not None:
            layout.addRow("Bas&ket", form.with_error(FIELD_BASKET, self.basket, self.new_basket))
        if self.square_off is not None:
            row = QHBoxLayout()
            row.addWidget(self.exit_at)
            row.addWidget(self.exit_time)
            row.addWidget(QLabel("IST"))
            row.addStretch(1)
            layout.addRow("Timed exit", form.with_error(FIELD_EXIT_TIME, row))
        if self.underlying is not None:
            row = QHBoxLayout()
            row.addWidget(self.on_underlying)
            row.addWidget(self.underlying_symbol, 1)
            row.addWidget(self.view)
            layout.addRow("Underlying", form.with_error(FIELD_UNDERLYING, row, self.underlying_info))

    def tab_chain(self) -> list[QWidget]:
        out: list[QWidget] = []
        if self.baskets is not None:
            out += [self.basket, self.basket_name, *self.basket_rules.values()]
        if self.square_off is not None:
            out += [self.exit_at, self.exit_time]
        if self.underlying is not None:
            out += [self.on_underlying, self.underlying_symbol, self.view]
        return out

    def _enable_underlying(self, on: bool) -> None:
        self.underlying_symbol.setEnabled(on)
        self.view.setEnabled(on)

    def _on_view_chosen(self, _index: int) -> None:
        self.view_touched = True

    # ----------------------------------------------------------------- values

    def list_baskets(self, account_id: int | None) -> None:
        """The account's ACTIVE baskets, "none" and "new"; the current choice stays when it still can."""
        if self.baskets is None:
            return
        current = self.basket.currentData()
        self.basket.blockSignals(True)
        try:
            self.basket.clear()
            self.basket.addItem("No basket", NO_BASKET)
            if account_id is not None:
                for b in self.baskets.baskets.baskets([BasketStatus.ACTIVE]):
                    if b.account_id == account_id:
                        self.basket.addItem(b.name, b.id)  # the rules: in its tooltip and the preview
                        self.basket.setItemData(self.basket.count() - 1, b.rules.describe(), TOOLTIP)
                if isinstance(current, int) and self.basket.findData(current) < 0:
                    # The chosen basket ended meanwhile: it stays chosen, and the check says so, rather
                    # than the order going out without the basket the trader picked.
                    try:
                        gone = self.baskets.baskets.get(current)
                    except KeyError:
                        gone = None
                    if gone is not None and gone.account_id == account_id:
                        self.basket.addItem(f"{gone.name} (ended)", gone.id)
            self.basket.addItem("New basket…", NEW_BASKET)
            index = self.basket.findData(current)
            self.basket.setCurrentIndex(max(index, 0))
        finally:
            self.basket.blockSignals(False)
        self.new_basket.setVisible(self.basket.currentData() == NEW_BASKET)

    def chosen_basket(self) -> Basket | None:
        data = self.basket.currentData()
        if self.baskets is None or not isinstance(data, int):
            return None
        return self.baskets.baskets.get(data)

    def new_basket_rules(self) -> BasketRules:
        """The new basket's rules; ValueError names the field."""
        data: dict[str, Any] = {}
        for name, caption in BASKET_RULES:
            text = self.basket_rules[name].text().strip().replace(",", "").lstrip("₹").strip()
            if not text:
                continue
            try:
                data[name] = float(text)
            except ValueError:
                raise ValueError(f"{caption.rstrip(' ₹').lower()}: not a number ({text!r})") from None
        return BasketRules(**data)

    def exit_at_text(self) -> str | None:
        return self.exit_time.time().toString("HH:mm") if self.exit_at.isChecked() else None

    def set_default_view(self, record: InstrumentRecord | None, side: Side) -> None:
        """Follow the instrument and side until the trader picks a view."""
        if not self.view_touched:
            self.view.setCurrentIndex(self.view.findData(default_view(record, side).value))

    def underlying_view(self) -> Side:
        return Side(self.view.currentData())

    # ----------------------------------------------------------------- checks

    def problems(
        self,
        *,
        record: InstrumentRecord | None,
        underlying: InstrumentRecord | None,
        underlying_price: float | None,
        rule: TrailRule | None,
        safety: QCheckBox,
    ) -> list[Problem]:
        """What is wrong with the attachments, each message naming its field."""
        out: list[Problem] = []
        chosen = self.chosen_basket()
        if chosen is not None and chosen.status is not BasketStatus.ACTIVE:
            out.append(
                (
                    FIELD_BASKET,
                    f"{chosen.name} has ended ({chosen.status.value}); choose another basket or none",
                    self.basket,
                )
            )
        if self.baskets is not None and self.basket.currentData() == NEW_BASKET:
            if not self.basket_name.text().strip():
                out.append((FIELD_BASKET, "a new basket needs a name", self.basket_name))
            try:
                self.new_basket_rules()
            except ValueError as exc:
                out.append((FIELD_BASKET, str(exc), self._rule_widget(str(exc))))
        if self.underlying is not None and self.on_underlying.isChecked():
            text = self.underlying_symbol.text().strip()
            here = self.underlying_symbol
            choice = (
                None
                if underlying is None
                else UnderlyingChoice(underlying, self.underlying_view(), underlying_price)
            )
            if not text:
                out.append((FIELD_UNDERLYING, "type EXCHANGE:SYMBOL, such as NSE:NIFTY 50", here))
            elif underlying is None:
                out.append((FIELD_UNDERLYING, f"{text} is not in the account's instrument list", here))
            elif record is not None and underlying.token == record.token:
                out.append((FIELD_UNDERLYING, "choose another instrument than the one traded", here))
            elif underlying_price is None:
                out.append((FIELD_UNDERLYING, f"no price for {underlying.symbol} yet; wait a moment", here))
            elif rule is not None and choice is not None and choice.stop(rule) is None:
                out.append((FIELD_UNDERLYING, "the stop would be at or below zero; trail less", here))
            if safety.isChecked():
                out.append(
                    (
                        FIELD_UNDERLYING,
                        "switch the broker-held safety stop off: it would hold a price of this instrument"
                        " while the stop is a price of the underlying",
                        safety,
                    )
                )
        return out

    def _rule_widget(self, message: str) -> QWidget:
        for name, caption in BASKET_RULES:
            if message.startswith(name.replace("_", " ")) or message.startswith(caption.rstrip(" ₹").lower()):
                return self.basket_rules[name]
        return self.basket_rules["max_loss"]

    # ----------------------------------------------------------------- storing

    def wanted(self) -> bool:
        """Whether anything is to be attached."""
        return (
            (self.baskets is not None and self.basket.currentData() not in (None, NO_BASKET))
            or (self.square_off is not None and self.exit_at.isChecked())
            or (self.underlying is not None and self.on_underlying.isChecked())
        )

    def attach(self, p: Protection, account_id: int, underlying: UnderlyingChoice | None) -> None:
        """Store every attachment for the PENDING ``p``: the underlying first (the likeliest to refuse),
        the basket last (a new one is created with its first member). ValueError names the field."""
        if self.underlying is not None and self.on_underlying.isChecked():
            if underlying is None or underlying.price is None:
                raise ValueError("underlying: no price for it yet")
            try:
                self.underlying.set_underlying(
                    p.id,
                    instrument=underlying.record.engine_instrument,
                    symbol=underlying.record.symbol,
                    exchange=underlying.record.exchange,
                    view=underlying.view,
                    tick_size=underlying.tick_size,
                    reference=underlying.price,
                )
            except ValueError as exc:
                raise ValueError(_named(FIELD_UNDERLYING, exc)) from None
        at = self.exit_at_text()
        if self.square_off is not None and at is not None:
            try:
                self.square_off.set_exit_time(p.id, at)
            except ValueError as exc:
                raise ValueError(_named(FIELD_EXIT_TIME, exc)) from None
        if self.baskets is None:
            return
        choice = self.basket.currentData()
        try:
            if choice == NEW_BASKET:
                self.baskets.create(account_id, self.basket_name.text(), self.new_basket_rules(), [p.id])
            elif isinstance(choice, int):
                self.baskets.add_members(choice, [p.id])
        except ValueError as exc:
            raise ValueError(_named(FIELD_BASKET, exc)) from None
        except ConcurrentTransition:
            # It ended between the check and the order: nothing is sent (place_entry).
            raise ValueError(f"{FIELD_BASKET}: it has just ended; choose another basket or none") from None

    def describe(self, underlying: UnderlyingChoice | None, rule: TrailRule | None) -> list[str]:
        """One line per attachment, for the confirmation."""
        lines = []
        if self.underlying is not None and self.on_underlying.isChecked() and underlying is not None:
            stop = underlying.stop(rule) if rule is not None else None
            at = "—" if stop is None else f"{stop:,.2f}"
            view = "long" if underlying.view.is_long else "short"
            lines.append(
                f"Stop on {underlying.record.symbol} ({view} view): starts at <b>{at}</b> from its price"
                f" {underlying.price:,.2f} and trails it; the exit sells this position"
            )
        at_text = self.exit_at_text()
        if self.square_off is not None and at_text is not None:
            lines.append(f"Exit at {at_text} IST if still open")
        basket = self.chosen_basket()
        if basket is not None:
            lines.append(f"Joins the basket {basket.name} ({basket.rules.describe()})")
        elif self.baskets is not None and self.basket.currentData() == NEW_BASKET:
            try:
                rules = self.new_basket_rules().describe()
            except ValueError:
                rules = "?"
            lines.append(f"Starts a new basket {self.basket_name.text().strip()} ({rules})")
        return lines

    def clear(self) -> None:
        if self.baskets is not None:
            self.basket.setCurrentIndex(max(self.basket.findData(NO_BASKET), 0))
            self.basket_name.clear()
            for edit in self.basket_rules.values():
                edit.clear()
        self.exit_at.setChecked(False)
        self.exit_time.setTime(QTime(15, 15))
        self.on_underlying.setChecked(False)
        self.underlying_symbol.clear()
        self.view_touched = False
        self.underlying_info.setText("")
        self.underlying_info.setVisible(False)


def _named(field: str, exc: Exception) -> str:
    """``exc``'s message with the field in front ("Basket: name: a basket needs a name")."""
    message = str(exc).strip("'\"")
    head, sep, rest = message.partition(": ")
    return f"{field}: {rest}" if sep and head.lower() == field.lower() else f"{field}: {message}"
