"""The settings dialog: order defaults, confirmations, alerts, window behaviour and where the data lives."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QTime, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTimeEdit,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import Product, RuleKind
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.settings import Settings, save_settings
from trailstop_gui.views.number_field import StrictDoubleSpinBox, StrictSpinBox

ERROR_COLOUR = "#d32f2f"

FIELD_RULE = "Default trailing stop"
FIELD_QUANTITY = "Default quantity"
FIELD_MARKET_PROTECTION = "Market protection"

THEMES = (("system", "Follow the system"), ("light", "Light"), ("dark", "Dark"))


def open_folder(path: str | os.PathLike[str]) -> bool:
    """Show ``path`` in the system's file manager."""
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(os.fspath(path))))


class SettingsDialog(QDialog):
    """Edits ``Settings``; Save validates (naming the field), stores them and emits ``settings_saved``."""

    settings_saved = Signal(object)  # the new Settings

    def __init__(
        self,
        store: ProtectionStore,
        settings: Settings,
        data_folder: str | os.PathLike[str],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("TrailStop settings")
        self.store = store
        self.original = settings
        self.saved: Settings | None = None
        self.data_folder = Path(data_folder)

        # ---- new orders
        self.rule_kind = QComboBox()
        self.rule_kind.addItem("Percent (%)", RuleKind.PERCENT.value)
        self.rule_kind.addItem("Points (₹)", RuleKind.POINTS.value)
        # Strict fields, as in the order form: "1o" is refused beside the field, never saved as 1.
        self.rule_value = StrictDoubleSpinBox()
        self.rule_value.setRange(0.0, 1_000_000.0)
        self.rule_value.setDecimals(2)
        self.rule_value.setSingleStep(0.25)
        self.rule_value.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.product = QComboBox()
        for product, text in (
            (Product.MIS, "MIS (intraday)"),
            (Product.CNC, "CNC (delivery)"),
            (Product.NRML, "NRML (F&O overnight)"),
        ):
            self.product.addItem(text, product.value)
        self.quantity = StrictSpinBox()
        self.quantity.setRange(0, 10_000_000)
        self.quantity.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.quantity.setToolTip("For F&O the form rounds this up to whole lots")
        self.confirm_orders = QCheckBox("Ask me to confirm each order before it is sent")

        # ---- protection
        self.confirm_exit_all = QCheckBox('Ask me to confirm "Exit all"')
        self.safety_stop = QCheckBox("Also keep a broker-held safety stop for new protections")
        self.safety_stop.setToolTip(
            "An SL-M order (MIS) or a GTT (CNC/NRML, Upstox) at the broker, a little behind the trailing\n"
            "stop and moved with it: the loss stays bounded while TrailStop is closed or offline.\n"
            "The order form can still switch it per order."
        )
        self.market_protection = StrictSpinBox()
        self.market_protection.setRange(0, 100)
        self.market_protection.setSpecialValueText("Automatic (the broker decides)")
        self.market_protection.setSuffix(" %")
        self.market_protection.setToolTip(
            "How far from the last price a market exit may fill (Kite's market protection).\n"
            "Automatic lets the broker choose; a percentage caps the slippage."
        )

        self.auto_protect_holdings = QCheckBox("Auto-protect also covers my delivery holdings")
        self.auto_protect_holdings.setToolTip(
            "With --auto-protect, holdings get a trailing stop too, not only today's positions.\n"
            "Off by default: a stop on long-term holdings sells them when it is hit."
        )

        self.mis_square_off = QCheckBox("Square off MIS positions at (IST)")
        self.mis_square_off.setToolTip(
            "Every MIS protection without its own exit time is exited at this time (IST), through the\n"
            "same path as a fired stop, before the broker's own auto square-off (which charges a fee).\n"
            "Only on days the market is open (Upstox publishes holidays and half days; else weekdays)."
        )
        self.mis_square_off_time = QTimeEdit(QTime(15, 15))
        self.mis_square_off_time.setDisplayFormat("HH:mm")
        self.mis_square_off_time.setTimeRange(QTime(9, 16), QTime(15, 29))

        # ---- alerts and window
        self.notifications = QCheckBox(
            "Show desktop notifications (stop hit, exit filled or failed, feed down)"
        )
        self.sound = QCheckBox("Play a sound with them")
        self.close_to_tray = QCheckBox("Closing the window keeps protecting from the system tray")
        self.theme = QComboBox()
        for value, text in THEMES:
            self.theme.addItem(text, value)

        # ---- data
        self.folder = QLineEdit(str(self.data_folder))
        self.folder.setReadOnly(True)
        self.folder.setToolTip("The database and the logs live here. Start with --data-dir to use another.")
        self.open_button = QPushButton("Open folder")
        self.open_button.setAutoDefault(False)

        # Beside each typed field: what is wrong with it (shown once Save was pressed, then as it is fixed),
        # and, for the trail, that switching Percent and Points cleared the number.
        self.field_errors = {
            FIELD_RULE: _error_label(),
            FIELD_QUANTITY: _error_label(),
            FIELD_MARKET_PROTECTION: _error_label(),
        }
        self.unit_note = QLabel("")
        self.unit_note.setObjectName("hint")
        self.unit_note.setVisible(False)
        self._kind_shown: str | None = None
        self._checked = False  # Save was pressed: problems are shown, and updated as they are fixed

        self.error_label = QLabel("")
        self.error_label.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.error_label.setWordWrap(True)
        self.error_label.setVisible(False)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )

        orders = QGroupBox("New orders")
        form = QFormLayout(orders)
        rule_row = QHBoxLayout()
        rule_row.addWidget(self.rule_kind, 1)
        rule_row.addWidget(self.rule_value, 1)
        form.addRow("Trailing stop", rule_row)
        form.addRow("", self.unit_note)
        form.addRow("", self.field_errors[FIELD_RULE])
        form.addRow("Product", self.product)
        form.addRow("Quantity", self.quantity)
        form.addRow("", self.field_errors[FIELD_QUANTITY])
        form.addRow(self.confirm_orders)

        protection = QGroupBox("Protection")
        form = QFormLayout(protection)
        form.addRow(self.confirm_exit_all)
        form.addRow(self.safety_stop)
        form.addRow("Market exits", self.market_protection)
        form.addRow("", self.field_errors[FIELD_MARKET_PROTECTION])
        form.addRow(self.auto_protect_holdings)
        square_off_row = QHBoxLayout()
        square_off_row.addWidget(self.mis_square_off)
        square_off_row.addWidget(self.mis_square_off_time)
        square_off_row.addStretch(1)
        form.addRow(square_off_row)

        alerts = QGroupBox("Alerts and window")
        form = QFormLayout(alerts)
        form.addRow(self.notifications)
        sound_row = QHBoxLayout()
        sound_row.setContentsMargins(20, 0, 0, 0)
        sound_row.addWidget(self.sound)
        form.addRow(sound_row)
        form.addRow(self.close_to_tray)
        form.addRow("Theme", self.theme)

        data = QGroupBox("Data folder")
        row = QHBoxLayout(data)
        row.addWidget(self.folder, 1)
        row.addWidget(self.open_button)

        layout = QVBoxLayout(self)
        for box in (orders, protection, alerts, data):
            layout.addWidget(box)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(480)

        self.rule_kind.currentIndexChanged.connect(self._on_kind_changed)
        self.notifications.toggled.connect(self.sound.setEnabled)
        self.mis_square_off.toggled.connect(self.mis_square_off_time.setEnabled)
        for spin in (self.rule_value, self.quantity, self.market_protection):
            spin.valueChanged.connect(self._on_value_changed)
            # A bad keystroke changes no value: the text is checked as typed.
            spin.lineEdit().textEdited.connect(self._on_value_changed)
        self.open_button.clicked.connect(self._on_open_clicked)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.show_settings(settings)

    # ----------------------------------------------------------------- values in and out

    def show_settings(self, s: Settings) -> None:
        self.rule_kind.blockSignals(True)
        self.rule_kind.setCurrentIndex(self.rule_kind.findData(s.default_rule_kind))
        self.rule_kind.blockSignals(False)
        self._kind_shown = str(self.rule_kind.currentData())
        self.rule_value.setValue(s.default_rule_value)
        self.product.setCurrentIndex(self.product.findData(s.default_product))
        self.quantity.setValue(s.default_quantity)
        self.confirm_orders.setChecked(s.confirm_orders)
        self.confirm_exit_all.setChecked(s.confirm_exit_all)
        self.safety_stop.setChecked(s.safety_stop)
        self.market_protection.setValue(0 if s.market_protection == -1 else s.market_protection)
        self.notifications.setChecked(s.notifications)
        self.sound.setChecked(s.sound)
        self.sound.setEnabled(s.notifications)
        self.close_to_tray.setChecked(s.close_to_tray)
        self.auto_protect_holdings.setChecked(s.auto_protect_holdings)
        self.mis_square_off.setChecked(bool(s.mis_square_off))
        if s.mis_square_off:
            self.mis_square_off_time.setTime(QTime.fromString(s.mis_square_off, "HH:mm"))
        self.mis_square_off_time.setEnabled(bool(s.mis_square_off))
        self.theme.setCurrentIndex(max(self.theme.findData(s.theme), 0))
        self._on_kind_changed(self.rule_kind.currentIndex())

    def errors(self) -> list[tuple[str, str]]:
        """Every problem, as (field, message), in the order the fields appear."""
        out: list[tuple[str, str]] = []
        value = self.rule_value.value()
        typed = self.rule_value.problem()
        if typed is not None:
            out.append((FIELD_RULE, typed))
        elif value <= 0:
            out.append((FIELD_RULE, "must be greater than 0"))
        elif self.rule_kind.currentData() == RuleKind.PERCENT.value and value >= 100:
            out.append((FIELD_RULE, "a percentage must be below 100"))
        typed = self.quantity.problem()
        if typed is not None:
            out.append((FIELD_QUANTITY, typed))
        elif self.quantity.value() <= 0:
            out.append((FIELD_QUANTITY, "must be at least 1"))
        typed = self.market_protection.problem()
        if typed is not None:
            out.append((FIELD_MARKET_PROTECTION, typed))
        return out

    def values(self) -> Settings:
        """The settings shown; raises ValueError naming the first bad field."""
        problems = self.errors()
        if problems:
            field, message = problems[0]
            raise ValueError(f"{field}: {message}")
        protection = self.market_protection.value()
        return replace(
            self.original,
            default_rule_kind=str(self.rule_kind.currentData()),
            default_rule_value=float(self.rule_value.value()),
            default_product=str(self.product.currentData()),
            default_quantity=int(self.quantity.value()),
            confirm_orders=self.confirm_orders.isChecked(),
            confirm_exit_all=self.confirm_exit_all.isChecked(),
            safety_stop=self.safety_stop.isChecked(),
            market_protection=-1 if protection == 0 else protection,
            notifications=self.notifications.isChecked(),
            sound=self.sound.isChecked(),
            close_to_tray=self.close_to_tray.isChecked(),
            auto_protect_holdings=self.auto_protect_holdings.isChecked(),
            mis_square_off=(
                self.mis_square_off_time.time().toString("HH:mm") if self.mis_square_off.isChecked() else ""
            ),
            theme=str(self.theme.currentData()),
        )

    def accept(self) -> None:
        problems = self.errors()
        if problems:
            self._checked = True
            self._show_errors(problems)
            self._field_widget(problems[0][0]).setFocus(Qt.FocusReason.OtherFocusReason)
            return
        settings = self.values()
        save_settings(self.store, settings)
        self.saved = settings
        self.settings_saved.emit(settings)
        super().accept()

    # ----------------------------------------------------------------- slots

    def _on_kind_changed(self, _index: int) -> None:
        kind = str(self.rule_kind.currentData())
        percent = kind == RuleKind.PERCENT.value
        self.rule_value.setSuffix(" %" if percent else " pts")
        if self._kind_shown is not None and kind != self._kind_shown:
            # 10 points must not silently become 10 %, and a default has no price to convert at: cleared,
            # to be entered again in the new unit (Save says so until it is).
            self.rule_value.blockSignals(True)
            self.rule_value.clear()
            self.rule_value.blockSignals(False)
            unit = "percent" if percent else "points"
            _show(self.unit_note, f"Switched to {unit}: enter the distance again.")
        self._kind_shown = kind
        self._on_value_changed()

    def _on_value_changed(self, *_args: object) -> None:
        if self.sender() is self.rule_value or self.sender() is self.rule_value.lineEdit():
            _show(self.unit_note, "")
        if self._checked:
            self._show_errors(self.errors())

    def _on_open_clicked(self) -> None:
        open_folder(self.data_folder)

    def _field_widget(self, field: str) -> QWidget:
        return {FIELD_RULE: self.rule_value, FIELD_QUANTITY: self.quantity}.get(field, self.market_protection)

    def _show_errors(self, problems: list[tuple[str, str]]) -> None:
        for field, label in self.field_errors.items():
            _show(label, next((message for f, message in problems if f == field), ""))
        lines = [f"{field}: {message}" for field, message in problems]
        self.error_label.setText("\n".join(lines))
        self.error_label.setVisible(bool(lines))


def _error_label() -> QLabel:
    label = QLabel("")
    label.setStyleSheet(f"color: {ERROR_COLOUR};")
    # One short line: a wrapped label in a form row is given one line's height and cut.
    label.setVisible(False)
    return label


def _show(label: QLabel, text: str) -> None:
    label.setText(text)
    label.setVisible(bool(text))
