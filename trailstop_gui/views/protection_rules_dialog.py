"""A protection's timed square-off and its stop on the underlying, set from the window.

Instruments of the underlying come from the account's instrument master (a local look-up); its price from
the feed when it is watched, else the trader types it (nothing here waits on the network).
"""

from __future__ import annotations

from PySide6.QtCore import QTime
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QTimeEdit,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import Side, Status
from trailstop_gui.models.square_off import parse_exit_time
from trailstop_gui.services.instruments import master_key
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService
from trailstop_gui.views import theme


class ProtectionRulesDialog(QDialog):
    """Exit time (IST) and stop on the underlying for one live protection."""

    def __init__(
        self,
        square_off: SquareOffService,
        underlying: UnderlyingService,
        pid: int | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.square_off = square_off
        self.underlying = underlying
        self.service = square_off.service
        self.store = square_off.store
        self.setWindowTitle("Exit time and underlying")
        self.protection = QComboBox()
        for p in self.store.protections([Status.PENDING, Status.OPEN]):
            self.protection.addItem(f"#{p.id} {p.exchange}:{p.symbol} {p.side.value} {p.quantity}", p.id)
        if pid is not None:
            self.protection.setCurrentIndex(max(self.protection.findData(pid), 0))
        self.exit_at = QCheckBox("Exit at (IST)")
        self.exit_time = QTimeEdit(QTime(15, 15))
        self.exit_time.setDisplayFormat("HH:mm")
        self.exit_time.setTimeRange(QTime(9, 16), QTime(15, 29))
        self.on_underlying = QCheckBox("Trail and trigger on another instrument")
        self.underlying_symbol = QLineEdit()
        self.underlying_symbol.setPlaceholderText("NSE:NIFTY 50")
        self.view = QComboBox()
        self.view.addItem("Long view: protect against a fall (a bought call)", Side.BUY.value)
        self.view.addItem("Short view: protect against a rise (a bought put)", Side.SELL.value)
        self.reference = QLineEdit()
        self.reference.setPlaceholderText("its price now")
        self.error_label = QLabel("")
        self.error_label.setStyleSheet(f"color: {theme.colors().loss.name()};")
        self.error_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        form = QFormLayout()
        form.addRow("Protection", self.protection)
        row = QHBoxLayout()
        row.addWidget(self.exit_at)
        row.addWidget(self.exit_time)
        row.addStretch(1)
        form.addRow(row)
        form.addRow(self.on_underlying)
        form.addRow("Underlying", self.underlying_symbol)
        form.addRow("View", self.view)
        form.addRow("Underlying price", self.reference)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.protection.currentIndexChanged.connect(self._load)
        self.exit_at.toggled.connect(self.exit_time.setEnabled)
        self.on_underlying.toggled.connect(self._enable_underlying)
        self.underlying_symbol.editingFinished.connect(self._fill_price)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._load()

    def _enable_underlying(self, on: bool) -> None:
        for widget in (self.underlying_symbol, self.view, self.reference):
            widget.setEnabled(on)

    def _load(self, *_args: object) -> None:
        pid = self.protection.currentData()
        at = None if pid is None else self.square_off.times.get(pid)
        self.exit_at.setChecked(at is not None)
        self.exit_time.setEnabled(at is not None)
        if at is not None:
            self.exit_time.setTime(QTime(at.hour, at.minute))
        rule = None if pid is None else self.underlying.rule(pid)
        self.on_underlying.setChecked(rule is not None)
        self._enable_underlying(rule is not None)
        if rule is not None:
            self.underlying_symbol.setText(f"{rule.exchange}:{rule.symbol}")
            self.view.setCurrentIndex(self.view.findData(rule.view.value))
            self.reference.setText(f"{rule.reference:g}")
            self.on_underlying.setEnabled(False)  # set once: its stop is already in the underlying's terms

    def _instrument(self) -> tuple[str, str, object, float]:
        """(exchange, symbol, the instrument's key, tick size) from the account's master."""
        text = self.underlying_symbol.text().strip()
        exchange, sep, symbol = text.partition(":")
        if not sep or not exchange or not symbol:
            raise ValueError("underlying: EXCHANGE:SYMBOL, such as NSE:NIFTY 50")
        p = self.store.get(int(self.protection.currentData()))
        session = self.service.sessions.get(p.account_id)
        if session is None:
            raise ValueError("underlying: the protection's account is not connected")
        record = self.store.find_instrument(master_key(session.account), exchange.upper(), symbol.upper())
        if record is None:
            raise ValueError(f"underlying: {text} is not in the account's instrument list")
        tick = record.tick_size if record.tick_size > 0 else 0.05  # an index's master row has none
        return exchange.upper(), record.symbol, record.engine_instrument, tick

    def _fill_price(self) -> None:
        try:
            _exchange, _symbol, key, _tick = self._instrument()
        except ValueError:
            return
        p = self.store.get(int(self.protection.currentData()))
        session = self.service.sessions.get(p.account_id)
        feed = session.feed if session is not None else None
        quote = feed.latest_quote(key) if feed is not None else None  # type: ignore[arg-type]
        if quote is not None and not self.reference.text().strip():
            self.reference.setText(f"{quote.ltp:g}")

    def accept(self) -> None:
        """Check every field first and store only then: a refused Save stores nothing (the exit time too)."""
        pid = self.protection.currentData()
        if pid is None:
            self.error_label.setText("protection: there is no live protection")
            return
        try:
            at = self.exit_time.time().toString("HH:mm") if self.exit_at.isChecked() else None
            if at is not None:
                parse_exit_time(at)
            asked = self._underlying_asked() if self.on_underlying.isEnabled() else None
            if asked is not None:
                exchange, symbol, key, tick, reference = asked
                self.underlying.set_underlying(  # its own refusals come before it writes
                    int(pid),
                    instrument=key,  # type: ignore[arg-type]
                    symbol=symbol,
                    exchange=exchange,
                    view=str(self.view.currentData()),
                    tick_size=tick,
                    reference=reference,
                )
            self.square_off.set_exit_time(int(pid), at)
        except (ValueError, KeyError) as exc:
            self.error_label.setText(str(exc))
            return
        super().accept()

    def _underlying_asked(self) -> tuple[str, str, object, float, float] | None:
        """The underlying the form asks for (exchange, symbol, key, tick size, price), checked, or None."""
        if not self.on_underlying.isChecked():
            return None
        exchange, symbol, key, tick = self._instrument()
        try:
            reference = float(self.reference.text().strip())
        except ValueError:
            raise ValueError("underlying price: a number, its price now") from None
        return exchange, symbol, key, tick, reference
