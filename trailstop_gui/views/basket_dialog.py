"""Create or edit a basket: members (or the whole account), MTM rules, an optional square-off time, and a live
preview of the MTM, the lock, the loss limit and the distance to the nearer of them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import Qt, QTime, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QTimeEdit,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.basket import BasketRules, Leg, mtm
from trailstop_gui.models.basket_store import Basket, BasketStatus, realised_today
from trailstop_gui.models.domain import InstrumentId, Protection, Status
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.feed_worker import FeedWorker
from trailstop_gui.views import theme

PREVIEW_MS = 250
RULE_FIELDS = (
    ("max_loss", "Max loss (₹)"),
    ("lock_at", "Lock when MTM reaches (₹)"),
    ("lock_profit", "… lock this profit (₹)"),
    ("trail_every", "For every further (₹)"),
    ("trail_by", "… raise the lock by (₹)"),
)


def _rupees(value: float | None) -> str:
    if value is None:
        return "—"
    return f"-₹{-value:,.2f}" if value < 0 else f"₹{value:,.2f}"


class BasketDialog(QDialog):
    """A new basket for one account, or (``basket``) an existing one's rules, members and square-off.

    ``selected``: protections the trader picked in the positions table, ticked (and their account chosen)."""

    def __init__(
        self,
        baskets: BasketService,
        basket: Basket | None = None,
        parent: QWidget | None = None,
        *,
        selected: Iterable[int] = (),
    ) -> None:
        super().__init__(parent)
        self.baskets = baskets
        self.service = baskets.service
        self.store = baskets.store
        self.basket = basket
        self.selected = set(selected)
        self._owner = f"basket dialog {id(self)}"  # the feed's name for what this preview watches
        self._watching: tuple[FeedWorker, set[InstrumentId]] | None = None
        self.saved: Basket | None = None
        self.setWindowTitle("Edit basket" if basket else "New basket")

        self.account = QComboBox()
        for account_id, session in self.service.sessions.items():
            self.account.addItem(session.account.label, account_id)
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. NIFTY strangle")
        # Only protections join (a broker position TrailStop does not protect has no exit path here): say so.
        self.whole = QCheckBox(
            "Every protected position in this account, those protected later too\n"
            "(broker positions TrailStop does not protect are not included)"
        )
        self.members = QListWidget()
        self.members.setMinimumHeight(120)
        self.rules: dict[str, QLineEdit] = {}
        for name, _label in RULE_FIELDS:
            edit = QLineEdit()
            edit.setPlaceholderText("off")
            self.rules[name] = edit
        self.square_off = QCheckBox("Square off the basket at (IST)")
        self.square_off_time = QTimeEdit(QTime(15, 15))
        self.square_off_time.setDisplayFormat("HH:mm")
        self.square_off_time.setTimeRange(QTime(9, 16), QTime(15, 29))
        self.square_off_time.setEnabled(False)
        self.preview = QLabel("")
        self.preview.setObjectName("basketPreview")
        self.preview.setWordWrap(True)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet(f"color: {theme.colors().loss.name()};")
        self.error_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )

        form = QFormLayout()
        form.addRow("Account", self.account)
        form.addRow("Name", self.name)
        form.addRow(self.whole)
        form.addRow("Positions", self.members)
        for name, label in RULE_FIELDS:
            form.addRow(label, self.rules[name])
        square_off_row = QHBoxLayout()
        square_off_row.addWidget(self.square_off)
        square_off_row.addWidget(self.square_off_time)
        square_off_row.addStretch(1)
        form.addRow(square_off_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(460)

        self.account.currentIndexChanged.connect(self._load_members)
        self.square_off.toggled.connect(self.square_off_time.setEnabled)
        self.whole.toggled.connect(lambda on: self.members.setEnabled(not on))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        if basket is not None:
            self._show(basket)
        elif self.selected:
            account_id = self.store.get(min(self.selected)).account_id
            self.account.setCurrentIndex(max(self.account.findData(account_id), 0))
        self._load_members()
        self._timer = QTimer(self)
        self._timer.setInterval(PREVIEW_MS)
        self._timer.timeout.connect(self.update_preview)
        self._timer.start()
        self.update_preview()

    # ----------------------------------------------------------------- values in and out

    def _show(self, basket: Basket) -> None:
        self.account.setCurrentIndex(max(self.account.findData(basket.account_id), 0))
        self.account.setEnabled(False)
        self.name.setText(basket.name)
        self.name.setReadOnly(True)
        self.whole.setChecked(basket.whole_account)
        self.whole.setEnabled(False)
        for name, value in basket.rules.to_dict().items():
            self.rules[name].setText(f"{value:g}")
        if basket.square_off is not None:
            self.square_off.setChecked(True)
            self.square_off_time.setTime(QTime(basket.square_off.hour, basket.square_off.minute))
        if basket.status is not BasketStatus.ACTIVE:
            self.buttons.button(QDialogButtonBox.StandardButton.Save).setEnabled(False)

    def _load_members(self, *_args: object) -> None:
        self.members.clear()
        account_id = self.account.currentData()
        if account_id is None:
            return
        chosen = set(self.basket.members) if self.basket is not None else set()
        for p in self.store.protections([Status.PENDING, Status.OPEN], account_id):
            side = "long" if p.side.is_long else "short"
            item = QListWidgetItem(
                f"{p.exchange}:{p.symbol}  {side} {p.filled_quantity or p.quantity}  #{p.id}"
            )
            item.setData(Qt.ItemDataRole.UserRole, p.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            ticked = p.id in chosen or p.id in self.selected
            item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
            if p.id in chosen:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)  # members stay members
            self.members.addItem(item)

    def checked_members(self) -> list[int]:
        out = []
        for row in range(self.members.count()):
            item = self.members.item(row)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(int(item.data(Qt.ItemDataRole.UserRole)))
        return out

    def values(self) -> BasketRules:
        """The rules shown; ValueError names the first bad field."""
        data: dict[str, Any] = {}
        for name, label in RULE_FIELDS:
            text = self.rules[name].text().strip().replace(",", "").lstrip("₹")
            if not text:
                continue
            try:
                data[name] = float(text)
            except ValueError:
                raise ValueError(f"{label.strip('… ')}: not a number ({text!r})") from None
        return BasketRules(**data)

    # ----------------------------------------------------------------- the live preview

    def update_preview(self) -> None:
        try:
            rules: BasketRules | None = self.values()
            self.error_label.setText("")
        except ValueError as exc:
            rules = None
            self.error_label.setText(str(exc))
        value = self._mtm_now()
        if value is None:
            self.preview.setText("MTM: — (no prices yet for these positions)")
            return
        lock = None
        if self.basket is not None:
            live = self.baskets.preview(self.basket.id)
            lock = None if live is None else live["lock"]
        if rules is not None:
            candidate = rules.lock_for(value)
            lock = candidate if lock is None else max(lock, candidate or lock)
        loss = None if rules is None or rules.max_loss is None else -rules.max_loss
        floors = [x for x in (lock, loss) if x is not None]
        distance = None if not floors else value - max(floors)
        self.preview.setText(
            f"MTM {_rupees(value)} · lock {_rupees(lock)} · loss limit {_rupees(loss)} · "
            f"distance {_rupees(distance)}"
        )

    def _mtm_now(self) -> float | None:
        account_id = self.account.currentData()
        session = self.service.sessions.get(account_id) if account_id is not None else None
        feed = session.feed if session is not None else None
        members = self._preview_members(account_id)
        legs = [
            Leg(p.id, p.engine_instrument, p.side, p.filled_quantity, p.entry_price)
            for p in members
            if p.status is Status.OPEN and p.entry_price
        ]
        self._watch({leg.instrument for leg in legs}, feed)
        if not members:
            return None
        prices: dict[InstrumentId, float] = {}
        for leg in legs:
            quote = feed.latest_quote(leg.instrument) if feed is not None else None
            if quote is not None:
                prices[leg.instrument] = quote.ltp
        if legs and not all(leg.instrument in prices for leg in legs):
            return None
        today = self.baskets.today()
        return mtm(legs, prices, realised=sum(realised_today(p, today) for p in members))

    def _watch(self, instruments: set[InstrumentId], feed: FeedWorker | None) -> None:
        """The positions' own prices, for the preview: one whose stop is on the underlying is watched there,
        and its own instrument comes only for a saved basket (BasketService asks for those)."""
        if self._watching is not None and (self._watching[0] is not feed or not instruments):
            self._watching[0].watch_instruments((), owner=self._owner)  # another account now, or none
            self._watching = None
        if feed is not None and instruments and (self._watching is None or self._watching[1] != instruments):
            feed.watch_instruments(instruments, owner=self._owner)
            self._watching = (feed, set(instruments))

    def _stop_watching(self) -> None:
        self._timer.stop()
        self._watch(set(), None)

    def _preview_members(self, account_id: int | None) -> list[Protection]:
        if account_id is None:
            return []
        if self.whole.isChecked():
            return self.store.protections([Status.OPEN], account_id)
        ids = set(self.checked_members()) | (set(self.basket.members) if self.basket else set())
        return [self.store.get(pid) for pid in sorted(ids)]

    # ----------------------------------------------------------------- saving

    def accept(self) -> None:
        try:
            rules = self.values()
            at = self.square_off_time.time().toString("HH:mm") if self.square_off.isChecked() else None
            if self.basket is None:
                account_id = self.account.currentData()
                if account_id is None:
                    raise ValueError("account: connect an account first")
                basket = self.baskets.create(
                    int(account_id),
                    self.name.text(),
                    rules,
                    self.checked_members(),
                    whole_account=self.whole.isChecked(),
                )
            else:
                basket = self.basket
                if basket.rules != rules:
                    basket = self.baskets.set_rules(basket.id, rules)
                joining = [pid for pid in self.checked_members() if pid not in basket.members]
                if joining:
                    basket = self.baskets.add_members(basket.id, joining)
            if at is not None or basket.square_off is not None:
                basket = self.baskets.set_square_off(basket.id, at)
        except (ValueError, KeyError) as exc:
            self.error_label.setText(str(exc))
            return
        self.saved = basket
        self._stop_watching()
        super().accept()

    def reject(self) -> None:
        self._stop_watching()
        super().reject()
