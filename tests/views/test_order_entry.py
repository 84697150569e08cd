"""The order form: completion, validation naming the field, the live preview, confirmation, the real flow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QApplication, QLineEdit, QMessageBox
from pytestqt.qtbot import QtBot

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import AccountRecord, InstrumentRecord, ProtectionStore
from trailstop_gui.services.brokers.base import OrderType
from trailstop_gui.services.feed_worker import Quote
from trailstop_gui.services.instruments import SETTING_PREFIX, InstrumentService
from trailstop_gui.services.protection_service import EntryRequest
from trailstop_gui.settings import Settings
from trailstop_gui.views.order_entry import OrderEntryPanel, format_inr

TODAY = date(2025, 7, 1)
INFY = InstrumentRecord("kite", "408065", "INFY", "NSE", "INFOSYS", 0.05, 1, "NSE", "EQ")
NIFTY_FUT = InstrumentRecord(
    "kite", "13570306", "NIFTY25JULFUT", "NFO", "NIFTY", 0.05, 50, "NFO-FUT", "FUT", "2025-07-31"
)
MASTER = [
    INFY,
    InstrumentRecord("kite", "500209", "INFY", "BSE", "INFOSYS", 0.05, 1, "BSE", "EQ"),
    InstrumentRecord("kite", "884737", "TATAMOTORS", "NSE", "TATA MOTORS", 0.05, 1, "NSE", "EQ"),
    NIFTY_FUT,
    InstrumentRecord("kite", "256265", "NIFTY 50", "NSE", "NIFTY 50", 0.0, 0, "INDICES", "EQ"),
]


class FakeBroker:
    def __init__(self) -> None:
        self.prices: dict[str, float] = {}
        self.ltp_calls: list[list[str]] = []

    def ltp(self, keys: list[str]) -> dict[str, float]:
        self.ltp_calls.append(list(keys))
        return {k: self.prices[k] for k in keys if k in self.prices}

    def instruments(self) -> list[Any]:
        return []


class FakeSession:
    def __init__(self, account: AccountRecord, broker: FakeBroker | None) -> None:
        self.account = account
        self.broker = broker
        self.ready = True

    @property
    def account_id(self) -> int:
        return self.account.id

    @property
    def label(self) -> str:
        return f"{self.account.label} ({self.account.user_id})"

    def broker_if_ready(self) -> FakeBroker | None:
        return self.broker if self.ready else None


class FakeService(QObject):
    """ProtectionService's face to the form; place_entry stores a PENDING protection like the real one."""

    protection_changed = Signal(int)
    snapshot_ready = Signal(object)
    action_failed = Signal(str, str)
    session_state_changed = Signal(int, str)

    def __init__(self, store: ProtectionStore) -> None:
        super().__init__()
        self.store = store
        self.sessions: dict[int, FakeSession] = {}
        self.requests: list[EntryRequest] = []

    def place_entry(self, request: EntryRequest) -> Any:
        self.requests.append(request)
        return self.store.create_protection(
            account_id=request.account_id,
            broker="kite",
            instrument=request.instrument,
            symbol=request.symbol,
            exchange=request.exchange,
            side=request.side,
            product=request.product,
            quantity=request.quantity,
            tick_size=request.tick_size,
            rule=request.rule,
        )


class Form:
    """An order panel over fakes, with the kite master stored for today."""

    def __init__(self, qtbot: QtBot, store: ProtectionStore, settings: Settings) -> None:
        self.qtbot = qtbot
        self.store = store
        store.upsert_instruments("kite", MASTER)
        store.set_setting(SETTING_PREFIX + "kite", {"date": TODAY.isoformat(), "count": len(MASTER)})
        self.broker = FakeBroker()
        account = store.add_account("kite", "Zerodha", user_id="AB1234", api_key="k")
        self.session = FakeSession(account, self.broker)
        self.service = FakeService(store)
        self.service.sessions[account.id] = self.session
        self.instruments = InstrumentService(store, today=lambda: TODAY)
        self.panel = OrderEntryPanel(self.service, store, settings, self.instruments)  # type: ignore[arg-type]
        qtbot.addWidget(self.panel)
        self.panel.show()
        qtbot.waitExposed(self.panel)

    @property
    def account_id(self) -> int:
        return self.session.account_id

    def tick(self, token: int, ltp: float) -> None:
        self.service.snapshot_ready.emit(
            {
                "account_id": self.account_id,
                "quotes": {token: Quote(token, ltp, None, None, 0.0)},
                "stops": {},
            }
        )

    def choose(self, record: InstrumentRecord, ltp: float | None = None) -> None:
        self.panel.select_instrument(record)
        if ltp is not None:
            self.tick(int(record.token), ltp)

    def submit_expecting_error(self) -> tuple[str, str]:
        with self.qtbot.waitSignal(self.panel.validation_failed, timeout=1000) as failed:
            self.panel.submit()
        assert self.service.requests == []
        field, message = failed.args
        return field, message


@pytest.fixture
def form(qtbot: QtBot, store: ProtectionStore) -> Iterator[Form]:
    f = Form(qtbot, store, Settings(confirm_orders=False))
    yield f
    f.instruments.wait_for_done()


def answer_confirmation(panel: OrderEntryPanel, accept: bool, seen: list[str]) -> None:
    def answer() -> None:
        box = panel.confirm_box
        if box is None or not box.isVisible():
            QTimer.singleShot(10, answer)
            return
        seen.append(box.text())
        wanted = QMessageBox.ButtonRole.AcceptRole if accept else QMessageBox.ButtonRole.RejectRole
        next(b for b in box.buttons() if box.buttonRole(b) == wanted).click()

    QTimer.singleShot(0, answer)


# --------------------------------------------------------------------------------------------- search


def test_completer_finds_infy_and_picking_it_selects_the_instrument(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    failures: list[tuple[str, str]] = []
    panel.validation_failed.connect(lambda field, message: failures.append((field, message)))
    panel.instrument.setFocus()
    qtbot.keyClicks(panel.instrument, "inf")
    popup = panel.completer.popup()
    assert popup is not None
    qtbot.waitUntil(lambda: popup.isVisible() and panel.completion_model.rowCount() == 2, timeout=2000)
    first = panel.completion_model.item(0).text()
    assert first.startswith("INFY") and "NSE" in first and "Infosys" in first
    qtbot.keyClick(popup, Qt.Key.Key_Down)
    qtbot.keyClick(popup, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: panel.selected_instrument() == INFY, timeout=2000)
    qtbot.waitUntil(lambda: panel.instrument.text() == "NSE:INFY", timeout=2000)
    assert "lot 1" in panel.instrument_info.text() and "tick 0.05" in panel.instrument_info.text()
    assert failures == []  # the Enter that picked from the list did not also submit the form


def test_a_symbol_typed_in_full_counts_as_chosen(qtbot: QtBot, form: Form) -> None:
    form.panel.instrument.setText("tatamotors")
    form.panel.instrument.editingFinished.emit()
    selected = form.panel.selected_instrument()
    assert selected is not None and selected.label == "NSE:TATAMOTORS"


# --------------------------------------------------------------------------------------------- preview


def test_preview_buy_and_sell_from_the_live_price(form: Form) -> None:
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    panel.quantity.setValue(10)
    panel.rule_editor.set_rule(TrailRule.percent(2.0))
    preview = panel.preview()
    assert preview is not None
    assert (preview.entry, preview.stop, preview.risk, preview.source) == (
        1500.0,
        1470.0,
        300.0,
        "last price",
    )
    assert "₹1,470.00" in panel.stop_value.text()
    assert "₹300.00" in panel.risk_value.text()
    assert "₹1,500.00" in panel.ltp_value.text() and "live" in panel.ltp_value.text()
    panel.sell.click()
    preview = panel.preview()
    assert preview is not None and (preview.stop, preview.risk) == (1530.0, 300.0)
    assert "SELL 10 INFY" in panel.submit_button.text()
    # The price moves: the preview follows.
    form.tick(408065, 1600.0)
    assert "₹1,632.00" in panel.stop_value.text()


def test_preview_from_the_limit_price_with_points_and_target(form: Form) -> None:
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    panel.order_type.setCurrentIndex(panel.order_type.findData(OrderType.LIMIT.value))
    assert panel.price.value() == 1500.0  # prefilled from the last price, on the grid
    panel.price.setValue(1498.0)
    panel.quantity.setValue(20)
    panel.rule_editor.set_rule(TrailRule.points(12.5, target=30.0))
    preview = panel.preview()
    assert preview is not None
    assert (preview.entry, preview.stop, preview.risk, preview.target) == (1498.0, 1485.5, 250.0, 1528.0)
    assert preview.source == "limit price" and panel.target_value.isVisible()


def test_last_price_comes_from_the_broker_in_the_background_when_not_streamed(
    qtbot: QtBot, form: Form
) -> None:
    form.broker.prices["NSE:INFY"] = 1234.5
    form.choose(INFY)
    qtbot.waitUntil(lambda: form.panel.last_price() == (1234.5, "polled"), timeout=3000)
    assert form.broker.ltp_calls[0] == ["NSE:INFY"]
    assert re.search(r"₹1,234.50 .*at \d\d:\d\d:\d\d", form.panel.ltp_value.text())


def test_format_inr_groups_the_indian_way() -> None:
    assert format_inr(300) == "₹300.00"
    assert format_inr(150000) == "₹1,50,000.00"
    assert format_inr(12345678.5) == "₹1,23,45,678.50"
    assert format_inr(-1500.25) == "−₹1,500.25"


# --------------------------------------------------------------------------------------------- validation


def test_no_instrument_chosen(form: Form) -> None:
    assert form.submit_expecting_error() == ("Instrument", "choose one")
    form.panel.instrument.setText("XYZ")
    field, message = form.submit_expecting_error()
    assert field == "Instrument" and "'XYZ'" in message
    assert form.panel.errors["Instrument"].isVisible()


def test_quantity_must_be_whole_lots(form: Form) -> None:
    panel = form.panel
    form.choose(NIFTY_FUT, ltp=24500.0)
    assert panel.quantity.value() == 50 and panel.quantity.singleStep() == 50
    assert panel.current_product() is not Product.CNC  # F&O: CNC is never offered by default
    panel.quantity.setValue(60)
    assert form.submit_expecting_error() == ("Quantity", "must be a multiple of the lot size 50")
    label = panel.errors["Quantity"]
    assert label.isVisible() and label.text() == "Quantity: must be a multiple of the lot size 50"
    panel.quantity.setValue(0)
    assert form.submit_expecting_error()[0] == "Quantity"
    panel.quantity.setValue(100)
    assert not label.isVisible() and panel.lots.text() == "= 2 lots of 50"


def test_limit_order_needs_a_price_on_the_tick_grid(form: Form) -> None:
    panel = form.panel
    form.choose(INFY)  # no last price: the LIMIT price is not prefilled
    panel.order_type.setCurrentIndex(panel.order_type.findData(OrderType.LIMIT.value))
    assert form.submit_expecting_error() == ("Price", "a LIMIT order needs a price")
    panel.price.setValue(1500.03)
    field, message = form.submit_expecting_error()
    assert field == "Price" and "tick size 0.05" in message and "1500.00 or 1500.05" in message
    panel.price.setValue(1500.05)
    assert panel.validation_errors() == []


def test_product_must_suit_the_instrument(form: Form) -> None:
    panel = form.panel
    form.choose(NIFTY_FUT, ltp=24500.0)
    panel.product.setCurrentIndex(panel.product.findData("CNC"))
    field, message = form.submit_expecting_error()
    assert field == "Product" and "NRML" in message


def test_rule_errors_name_their_field(form: Form) -> None:
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    panel.rule_editor.value.setValue(0)
    assert form.submit_expecting_error() == ("Trailing stop", "must be greater than 0")
    panel.rule_editor.set_rule(TrailRule.points(1600))  # further than the price itself
    assert form.submit_expecting_error()[0] == "Trailing stop"


def test_market_order_waits_for_a_price(form: Form) -> None:
    form.choose(INFY)
    field, message = form.submit_expecting_error()
    assert field == "Last price" and "LIMIT" in message


def test_only_logged_in_accounts_are_offered(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    other = form.store.add_account("kite", "Second", user_id="CD5678", api_key="k2")
    form.service.sessions[other.id] = FakeSession(other, None)  # no token: not offered
    form.service.session_state_changed.emit(other.id, "login needed")
    assert panel.account.count() == 1 and panel.account.currentData() == form.account_id
    form.session.ready = False
    form.service.session_state_changed.emit(form.account_id, "login needed")
    assert not panel.account.isEnabled() and panel.session() is None
    assert form.submit_expecting_error()[0] == "Account"


# --------------------------------------------------------------------------------------------- submitting


def test_confirmation_accepted_places_the_entry(qtbot: QtBot, store: ProtectionStore) -> None:
    form = Form(qtbot, store, Settings(confirm_orders=True))
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    panel.quantity.setValue(10)
    panel.product.setCurrentIndex(panel.product.findData("CNC"))
    panel.rule_editor.set_rule(TrailRule.percent(2.0, breakeven=1.0))
    seen: list[str] = []
    answer_confirmation(panel, accept=True, seen=seen)
    with qtbot.waitSignal(panel.order_submitted, timeout=3000) as sent:
        pid = panel.submit()
    assert sent.args == [pid]
    assert "BUY" in seen[0] and "10 INFY" in seen[0] and "₹1,470.00" in seen[0] and "₹300.00" in seen[0]
    assert form.service.requests == [
        EntryRequest(
            account_id=form.account_id,
            instrument=408065,
            symbol="INFY",
            exchange="NSE",
            side=Side.BUY,
            quantity=10,
            product=Product.CNC,
            tick_size=0.05,
            rule=TrailRule.percent(2.0, breakeven=1.0),
            order_type=OrderType.MARKET,
            price=None,
            safety=False,  # the settings' default: off
        )
    ]
    assert store.get(pid).status is Status.PENDING
    assert f"#{pid}" in panel.status.text()
    form.service.protection_changed.emit(pid)
    assert "PENDING" in panel.status.text()
    form.instruments.wait_for_done()


def test_confirmation_cancelled_sends_nothing(qtbot: QtBot, store: ProtectionStore) -> None:
    form = Form(qtbot, store, Settings(confirm_orders=True))
    form.choose(INFY, ltp=1500.0)
    form.panel.order_type.setCurrentIndex(1)
    form.panel.price.setValue(1490.0)
    form.panel.sell.click()
    seen: list[str] = []
    answer_confirmation(form.panel, accept=False, seen=seen)
    assert form.panel.submit() is None
    assert "SELL" in seen[0] and "LIMIT ₹1,490.00" in seen[0]
    assert form.service.requests == [] and "cancelled" in form.panel.status.text()
    form.instruments.wait_for_done()


def test_enter_submits_once_and_escape_clears(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    panel.quantity.setValue(5)
    panel.quantity.setFocus()
    with qtbot.waitSignal(panel.order_submitted, timeout=2000):
        qtbot.keyClick(panel.quantity, Qt.Key.Key_Return)
    qtbot.keyClick(panel.quantity, Qt.Key.Key_Return)  # a second Enter at once: ignored
    assert len(form.service.requests) == 1
    assert form.service.requests[0].quantity == 5
    qtbot.waitUntil(panel.submit_button.isEnabled, timeout=3000)
    qtbot.keyClick(panel.instrument, Qt.Key.Key_Escape)
    assert panel.selected_instrument() is None and panel.instrument.text() == ""
    assert panel.quantity.value() == 1 and panel.side() is Side.BUY


def test_defaults_come_from_settings(qtbot: QtBot, store: ProtectionStore) -> None:
    settings = Settings(
        default_rule_kind="points", default_rule_value=7.5, default_product="CNC", default_quantity=3
    )
    form = Form(qtbot, store, settings)
    panel = form.panel
    assert panel.current_product() is Product.CNC and panel.quantity.value() == 3
    assert panel.rule_editor.rule() == TrailRule.points(7.5)
    form.choose(NIFTY_FUT)
    assert panel.current_product() is Product.NRML and panel.quantity.value() == 50
    panel.apply_settings(Settings(default_rule_value=1.5, default_product="MIS"))
    assert panel.rule_editor.rule() == TrailRule.percent(1.5) and panel.current_product() is Product.MIS
    panel.rule_editor.value.setValue(3.0)  # the trader's own choice...
    panel.apply_settings(Settings(default_rule_value=2.5))
    assert panel.rule_editor.rule() == TrailRule.percent(3.0)  # ...survives new defaults
    form.instruments.wait_for_done()


def test_safety_stop_checkbox_defaults_from_settings_and_reaches_the_request(
    qtbot: QtBot, store: ProtectionStore
) -> None:
    form = Form(qtbot, store, Settings(confirm_orders=True, safety_stop=True))
    panel = form.panel
    assert panel.safety.isChecked()
    form.choose(INFY, ltp=1500.0)
    panel.quantity.setValue(10)
    panel.rule_editor.set_rule(TrailRule.percent(2.0))
    # Stop 1470; buffer max(1 % of 1470, 5 ticks) = 14.70: 1455.30 for a long, 1545.30 above 1530 for a short.
    preview = panel.preview()
    assert preview is not None and preview.safety == pytest.approx(1455.30)
    assert panel.safety_value.isVisibleTo(panel) and "₹1,455.30" in panel.safety_value.text()
    assert "₹1,455.30" in panel.preview_note.text()
    panel.sell.click()
    preview = panel.preview()
    assert preview is not None and preview.safety == pytest.approx(1545.30)
    panel.buy.click()
    seen: list[str] = []
    answer_confirmation(panel, accept=True, seen=seen)
    with qtbot.waitSignal(panel.order_submitted, timeout=3000):
        panel.submit()
    assert "safety stop" in seen[0] and "₹1,455.30" in seen[0]
    assert form.service.requests[-1].safety is True
    # Switched off for the next order: no safety level in the preview, and the request says so.
    qtbot.waitUntil(panel.submit_button.isEnabled, timeout=3000)
    panel.safety.setChecked(False)
    preview = panel.preview()
    assert preview is not None and preview.safety is None
    assert not panel.safety_value.isVisibleTo(panel) and "safety" not in panel.preview_note.text()
    assert panel.entry_request().safety is False
    # New defaults do not override the trader's own choice; a cleared form takes them again.
    panel.apply_settings(Settings(confirm_orders=True, safety_stop=True))
    assert not panel.safety.isChecked()
    panel.clear()
    assert panel.safety.isChecked()
    form.instruments.wait_for_done()


def test_safety_stop_follows_new_defaults_until_touched(form: Form) -> None:
    panel = form.panel
    assert not panel.safety.isChecked()  # Settings() default: off
    panel.apply_settings(Settings(confirm_orders=False, safety_stop=True))
    assert panel.safety.isChecked()


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def simulator() -> Iterator[Any]:
    from trailstop_gui.simulator.runner import start_simulator

    handle = start_simulator(seed=1, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


def test_form_to_open_protection_against_the_simulator(
    qtbot: QtBot, simulator: Any, store: ProtectionStore
) -> None:
    from tests.services.test_protection_flow import Rig

    rig = Rig(simulator, store, "kite", qtbot)
    instruments = InstrumentService(store)
    try:
        simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
        panel = OrderEntryPanel(rig.service, store, Settings(confirm_orders=False), instruments)
        qtbot.addWidget(panel)
        panel.show()
        qtbot.waitExposed(panel)
        assert panel.session() is rig.session
        # Choosing the account fetched the simulator's master in the background.
        qtbot.waitUntil(lambda: store.instrument_count("kite@sim") == 62, timeout=10_000)
        panel.instrument.setFocus()
        qtbot.keyClicks(panel.instrument, "infy")
        popup = panel.completer.popup()
        assert popup is not None
        qtbot.waitUntil(popup.isVisible, timeout=3000)
        qtbot.keyClick(popup, Qt.Key.Key_Down)
        qtbot.keyClick(popup, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: panel.instrument.text() == "NSE:INFY", timeout=3000)
        panel.quantity.setFocus()
        panel.quantity.selectAll()
        qtbot.keyClicks(panel.quantity, "10")
        panel.rule_editor.kind.setCurrentIndex(0)
        panel.rule_editor.value.setValue(2.0)
        # Not protected yet, so not streamed: the last price comes from a background ltp() call.
        qtbot.waitUntil(lambda: panel.preview() is not None, timeout=5000)
        preview = panel.preview()
        assert preview is not None and (preview.stop, preview.risk) == (1470.0, 300.0)
        with qtbot.waitSignal(panel.order_submitted, timeout=5000) as sent:
            qtbot.keyClick(panel.quantity, Qt.Key.Key_Return)
        pid = sent.args[0]
        rig.wait_status(pid, Status.OPEN)
        p = store.get(pid)
        assert (p.symbol, p.side, p.quantity, p.product, p.rule) == (
            "INFY",
            Side.BUY,
            10,
            Product.MIS,
            TrailRule.percent(2.0),
        )
        assert [o["tag"] for o in rig.sim_orders() if o["tradingsymbol"] == "INFY"] == [p.exit_tag + "E"]
        qtbot.waitUntil(lambda: "OPEN" in panel.status.text(), timeout=5000)
        # Now protected, INFY streams: the form's price is the feed's.
        simulator.set_price("NSE:INFY", 1550.0, bid=1549.95, ask=1550.05)
        qtbot.waitUntil(lambda: panel.last_price() == (1550.0, "live"), timeout=5000)
    finally:
        rig.close()
        instruments.wait_for_done()


def test_tab_walks_the_form_in_reading_order(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    panel.activateWindow()
    panel.account.setFocus()
    qtbot.waitUntil(panel.account.hasFocus, timeout=1000)
    expected = [
        panel.instrument,
        panel.buy,  # BUY and SELL are one stop, like radio buttons: the arrow keys choose
        panel.quantity,
        panel.product,
        panel.order_type,
        panel.rule_editor.kind,  # the price is disabled for a MARKET order: Tab skips it
        panel.rule_editor.value,
        panel.rule_editor.more,
        panel.safety,
        panel.submit_button,
    ]
    seen = []
    for _ in expected:
        widget = QApplication.focusWidget()
        assert widget is not None
        qtbot.keyClick(widget, Qt.Key.Key_Tab)
        focused = QApplication.focusWidget()
        # A spin box focuses its inner line edit; report the spin box.
        seen.append(
            focused.parentWidget()
            if isinstance(focused, QLineEdit) and focused is not panel.instrument
            else focused
        )
    assert seen == expected
    panel.buy.setFocus()
    qtbot.keyClick(panel.buy, Qt.Key.Key_Right)
    assert panel.sell.hasFocus() and panel.side() is Side.SELL
    panel.setFocus()  # focusing the panel (say, from a shortcut) lands in the search
    assert panel.instrument.hasFocus()


# --------------------------------------------------------------------------------------------- issue 19


TATAMOTORS = MASTER[2]
LIMIT = OrderType.LIMIT.value


def type_into(qtbot: QtBot, widget: Any, text: str) -> None:
    """What a trader does: click into the field, select what is there, type."""
    edit = widget.lineEdit() if hasattr(widget, "lineEdit") else widget
    widget.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, text)


def pick_by_typing(qtbot: QtBot, panel: OrderEntryPanel, symbol: str) -> None:
    type_into(qtbot, panel.instrument, symbol)
    qtbot.keyClick(panel.instrument, Qt.Key.Key_Tab)  # leaving the field chooses a symbol typed in full


def test_a_limit_typed_for_one_instrument_never_carries_over_to_the_next(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    form.tick(884737, 1716.0)  # TATAMOTORS is streamed already
    pick_by_typing(qtbot, panel, "infy")
    form.tick(408065, 806.0)
    panel.order_type.setCurrentIndex(panel.order_type.findData(LIMIT))
    type_into(qtbot, panel.price, "806")
    assert panel.price.value() == 806.0
    pick_by_typing(qtbot, panel, "tatamotors")
    assert panel.selected_instrument() == TATAMOTORS
    assert panel.price.value() == 1716.0  # its own last price, as Kite's order window does
    preview = panel.preview()
    assert preview is not None and preview.entry == 1716.0 and preview.stop == 1681.65
    # An instrument whose price is not known yet: no stale limit meanwhile, its own price once it comes.
    pick_by_typing(qtbot, panel, "NFO:NIFTY25JULFUT")
    assert panel.price.value() == 0.0 and panel.preview() is None
    form.tick(13570306, 24180.0)
    assert panel.price.value() == 24180.0
    preview = panel.preview()
    assert preview is not None and preview.value == 50 * 24180.0  # about 12 lakh, not 50 x 806


def test_a_limit_far_from_the_market_is_flagged_and_always_confirmed(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    assert not form.panel.settings.confirm_orders
    form.choose(TATAMOTORS, ltp=1716.0)
    panel.order_type.setCurrentIndex(panel.order_type.findData(LIMIT))
    type_into(qtbot, panel.price, "806")
    assert panel.price_warning.isVisible()
    assert "53.0 % below the last price 1,716.00 of TATAMOTORS" in panel.price_warning.text()
    seen: list[str] = []
    answer_confirmation(panel, False, seen)
    assert panel.submit() is None
    assert form.service.requests == [] and "53.0 % below" in seen[0]
    type_into(qtbot, panel.price, "1700")
    assert not panel.price_warning.isVisible()
    assert panel.submit() is not None  # near the market and confirmations off: sent at once
    assert form.service.requests[0].price == 1700.0


def test_a_marketable_limit_is_previewed_at_the_market_price(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    form.choose(TATAMOTORS, ltp=1716.0)
    panel.order_type.setCurrentIndex(panel.order_type.findData(LIMIT))
    type_into(qtbot, panel.price, "1760")  # a BUY above the market fills at about the market
    preview = panel.preview()
    assert preview is not None and preview.entry == 1716.0 and "marketable" in preview.source
    assert "₹1,716.00" in panel.entry_value.text()
    panel.sell.click()  # a SELL at 1760 is not marketable: it waits for its price
    preview = panel.preview()
    assert preview is not None and (preview.entry, preview.source) == (1760.0, "limit price")


def test_switching_points_and_percent_converts_at_the_price(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    editor = panel.rule_editor
    form.choose(INFY, ltp=1500.0)
    editor.set_rule(TrailRule.points(30.0, breakeven=15.0, target=75.0))
    editor.kind.setCurrentIndex(editor.kind.findData("percent"))
    assert editor.rule() == TrailRule.percent(2.0, breakeven=1.0, target=5.0)
    assert "Converted to %" in editor.unit_note.text() and editor.unit_note.isVisible()
    preview = panel.preview()
    assert preview is not None and preview.stop == 1470.0  # the same stop as 30 points
    editor.kind.setCurrentIndex(editor.kind.findData("points"))
    assert editor.rule() == TrailRule.points(30.0, breakeven=15.0, target=75.0)


def test_switching_the_unit_with_no_price_clears_and_asks(qtbot: QtBot, form: Form) -> None:
    editor = form.panel.rule_editor
    editor.set_rule(TrailRule.points(10.0, target=30.0))
    editor.kind.setCurrentIndex(editor.kind.findData("percent"))
    assert editor.value.value() == 0.0 and editor.target.value() == 0.0
    assert "enter the distances again" in editor.unit_note.text()
    assert ("Trailing stop", "must be greater than 0") in editor.errors()


@pytest.mark.parametrize(
    ("typed", "words"),
    [("-5", "-5 is negative"), ("1o", "'1o' is not a number"), ("", "enter a number")],
)
def test_an_invalid_trail_blocks_the_order_and_says_why_beside_it(
    qtbot: QtBot, form: Form, typed: str, words: str
) -> None:
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    failures: list[tuple[str, str]] = []
    panel.validation_failed.connect(lambda field, message: failures.append((field, message)))
    panel.rule_editor.value.setFocus()
    panel.rule_editor.value.lineEdit().selectAll()
    qtbot.keyClick(panel.rule_editor.value.lineEdit(), Qt.Key.Key_Backspace)
    qtbot.keyClicks(panel.rule_editor.value.lineEdit(), typed)
    qtbot.keyClick(panel.rule_editor.value.lineEdit(), Qt.Key.Key_Return)  # Enter submits the form
    assert form.service.requests == []  # the previous 2 % was NOT confirmed in its place
    assert failures and failures[0][0] == "Trailing stop" and words in failures[0][1]
    assert panel.errors["rule"].isVisible() and words in panel.errors["rule"].text()
    assert typed in panel.rule_editor.value.lineEdit().text()  # what was typed is still there
    qtbot.keyClick(panel.rule_editor.value.lineEdit(), Qt.Key.Key_Tab)  # leaving it changes nothing
    assert typed in panel.rule_editor.value.lineEdit().text() and panel.preview() is None
    type_into(qtbot, panel.rule_editor.value, "1.5")
    assert panel.rule_editor.rule() == TrailRule.percent(1.5) and not panel.errors["rule"].isVisible()


def test_an_invalid_quantity_or_price_blocks_the_order(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    type_into(qtbot, panel.quantity, "1o")
    field, message = form.submit_expecting_error()
    assert (field, message) == ("Quantity", "'1o' is not a number")
    type_into(qtbot, panel.quantity, "10")
    panel.order_type.setCurrentIndex(panel.order_type.findData(LIMIT))
    type_into(qtbot, panel.price, "15o0")
    field, message = form.submit_expecting_error()
    assert (field, message) == ("Price", "'15o0' is not a number")


def test_the_confirmation_shows_the_whole_rule(qtbot: QtBot, store: ProtectionStore) -> None:
    form = Form(qtbot, store, Settings(confirm_orders=True))
    panel = form.panel
    form.choose(INFY, ltp=1500.0)
    panel.rule_editor.more.click()
    panel.rule_editor.activation_on.click()
    type_into(qtbot, panel.rule_editor.activation, "1")
    panel.rule_editor.ladder_on.click()
    type_into(qtbot, panel.rule_editor.ladder_step, "2")
    type_into(qtbot, panel.rule_editor.ladder_raise, "1")
    panel.rule_editor.breakeven_on.click()
    type_into(qtbot, panel.rule_editor.breakeven, "0.5")
    seen: list[str] = []
    answer_confirmation(panel, False, seen)
    panel.submit()
    assert "2 % trail" in seen[0] and "starts after a 1 % move" in seen[0]
    assert "every 2 % raises it 1 %" in seen[0] and "breakeven after 0.5 %" in seen[0]
    form.instruments.wait_for_done()


def test_the_search_list_is_as_wide_as_what_it_lists(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    panel.resize(panel.minimumSizeHint())
    panel.instrument.setFocus()
    qtbot.keyClicks(panel.instrument, "nifty")
    popup = panel.completer.popup()
    assert popup is not None
    qtbot.waitUntil(lambda: popup.isVisible() and panel.completion_model.rowCount() >= 1, timeout=2000)
    widest = max(
        popup.fontMetrics().horizontalAdvance(panel.completion_model.item(n).text())
        for n in range(panel.completion_model.rowCount())
    )
    assert popup.width() >= widest + 16


def test_the_rule_options_are_not_cut(qtbot: QtBot, form: Form) -> None:
    panel = form.panel
    panel.rule_editor.more.click()
    # As narrow as a window can make it: an explicit minimum width wins over the layout's own minimum.
    narrowest = panel.minimumWidth() or panel.minimumSizeHint().width()
    panel.resize(narrowest, 900)
    qtbot.waitUntil(lambda: panel.rule_editor.options.isVisible(), timeout=2000)
    qtbot.wait(10)
    editor = panel.rule_editor
    for box in (editor.activation_on, editor.ladder_on, editor.breakeven_on, editor.target_on):
        assert box.width() >= box.sizeHint().width(), box.text()
