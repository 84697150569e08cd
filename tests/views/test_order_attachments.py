"""The order form attaches a basket (existing or new), a timed exit and a stop on the underlying to the
protection it creates (pytest-qt, against the simulator): bad input names the field and stores nothing, the
live preview shows each, and each rule then acts on the position, exiting it once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from PySide6.QtCore import QTime
from pytestqt.qtbot import QtBot

from tests.services.conftest import control
from tests.services.test_protection_flow import Rig, wait_until
from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.basket_store import BasketStatus
from trailstop_gui.models.domain import Side, Status, TrailRule
from trailstop_gui.models.square_off import IST
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.instruments import InstrumentService, master_key
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService
from trailstop_gui.settings import Settings
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator
from trailstop_gui.views.order_attachments import NEW_BASKET, NO_BASKET
from trailstop_gui.views.order_entry import OrderEntryPanel

WIDE = TrailRule.percent(20.0)  # the positions' own stops stay out of the way of the rule under test
MONDAY_15_16 = datetime(2026, 12, 7, 15, 16, tzinfo=IST)


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=1, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


class Entry:
    """The order panel over the real services, logged in to the simulator (Kite)."""

    def __init__(self, sim: SimulatorHandle, store: ProtectionStore, qtbot: QtBot) -> None:
        self.qtbot = qtbot
        self.rig = Rig(sim, store, "kite", qtbot)
        self.store = store
        self.now = MONDAY_15_16.replace(hour=10)
        self.baskets = BasketService(self.rig.service, step_seconds=0.02, refresh_seconds=0.2)
        self.baskets.start()
        self.square_off = SquareOffService(self.rig.service, clock=lambda: self.now)
        self.underlying = UnderlyingService(self.rig.service)
        self.instruments = InstrumentService(store)
        with qtbot.waitSignal(self.instruments.master_loaded, timeout=15_000):
            self.panel = OrderEntryPanel(
                self.rig.service,  # type: ignore[arg-type]
                store,
                Settings(confirm_orders=False),
                self.instruments,
                baskets=self.baskets,
                square_off=self.square_off,
                underlying=self.underlying,
            )
        qtbot.addWidget(self.panel)
        self.panel.show()
        self.attach = self.panel.attachments
        self.master = master_key(self.rig.session.account)
        self.failures: list[tuple[str, str]] = []
        self.panel.validation_failed.connect(lambda field, message: self.failures.append((field, message)))

    def close(self) -> None:
        self.baskets.shutdown()
        self.square_off.shutdown()
        self.rig.close()

    def choose(self, text: str, *, quantity: int | None = None, side: Side = Side.BUY) -> None:
        record = self.instruments.resolve(self.master, text)
        assert record is not None, text
        self.panel.select_instrument(record)
        (self.panel.buy if side is Side.BUY else self.panel.sell).setChecked(True)
        if quantity is not None:
            self.panel.quantity.setValue(quantity)
        self.panel.rule_editor.set_rule(WIDE)
        wait_until(lambda: self.panel.last_price() is not None, what=f"a price of {text}", qtbot=self.qtbot)
        # A second order only after the form's cool-down (a double Enter must not send two).
        wait_until(self.panel.submit_button.isEnabled, what="the cool-down to end", qtbot=self.qtbot)

    def on_underlying(self, text: str) -> None:
        self.attach.on_underlying.setChecked(True)
        self.attach.underlying_symbol.setText(text)
        self.attach.underlying_symbol.editingFinished.emit()  # as leaving the field does

    def wait_underlying_price(self) -> float:
        def known() -> bool:
            choice = self.panel.underlying_choice()
            return choice is not None and choice.price is not None

        wait_until(known, what="the underlying's price", qtbot=self.qtbot)
        choice = self.panel.underlying_choice()
        assert choice is not None and choice.price is not None
        return choice.price

    def error(self, field: str) -> str:
        label = self.panel.errors[field]
        return label.text() if label.isVisible() else ""

    def exits(self, pid: int) -> list[dict[str, Any]]:
        return self.rig.sim_orders(self.store.get(pid).exit_tag)


@pytest.fixture
def entry(simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot) -> Iterator[Entry]:
    e = Entry(simulator, store, qtbot)
    yield e
    e.close()


def test_attachment_mistakes_name_their_field_and_store_nothing(entry: Entry) -> None:
    entry.rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    entry.rig.sim.set_price("NSE:TCS", 3000.0, bid=2999.95, ask=3000.05)
    entry.choose("NSE:TCS", quantity=2)
    kept = entry.panel.submit()
    assert kept is not None
    basket = entry.baskets.create(entry.rig.account_id, "kept", BasketRules(max_loss=900.0), [kept])
    orders_before = len(entry.rig.sim_orders())
    entry.choose("NSE:INFY", quantity=3)
    a = entry.attach

    a.basket.setCurrentIndex(a.basket.findData(NEW_BASKET))
    assert a.new_basket.isVisibleTo(entry.panel)
    assert entry.panel.submit() is None
    assert entry.failures[-1] == ("Basket", "a new basket needs a name")
    assert entry.error("Basket").splitlines() == [
        "Basket: a new basket needs a name",
        "Basket: rules: a basket needs a max loss or a lock (lock at and lock profit)",
    ]

    a.basket_name.setText("pair")
    a.basket_rules["max_loss"].setText("lots")
    assert entry.panel.submit() is None
    assert entry.failures[-1] == ("Basket", "max loss: not a number ('lots')")
    a.basket_rules["max_loss"].setText("")
    a.basket_rules["lock_at"].setText("500")
    a.basket_rules["lock_profit"].setText("800")
    assert entry.panel.submit() is None
    field, message = entry.failures[-1]
    assert field == "Basket" and message.startswith("lock profit: the profit locked (800)")
    assert entry.panel.focusWidget() is a.basket_rules["lock_profit"] or not entry.panel.isActiveWindow()
    a.basket.setCurrentIndex(a.basket.findData(NO_BASKET))

    entry.on_underlying("NSE:NOPE")
    assert entry.panel.submit() is None
    assert entry.failures[-1] == ("Underlying", "NSE:NOPE is not in the account's instrument list")
    entry.on_underlying("NSE:INFY")
    assert entry.panel.submit() is None
    assert entry.failures[-1] == ("Underlying", "choose another instrument than the one traded")
    entry.on_underlying("NSE:NIFTY 50")
    entry.wait_underlying_price()
    entry.panel.safety.setChecked(True)
    assert entry.panel.submit() is None
    field, message = entry.failures[-1]
    assert field == "Underlying" and message.startswith("switch the broker-held safety stop off")
    assert "Underlying: switch the broker-held safety stop off" in entry.error("Underlying")

    # A basket that ends between the check and the order: the order is refused, nothing is sent.
    gone = entry.baskets.create(entry.rig.account_id, "gone", BasketRules(max_loss=100.0), [kept])
    a.basket.setCurrentIndex(a.basket.findData(gone.id))
    entry.baskets.baskets.remove(gone.id)  # behind the form's back: no signal, the list still offers it
    assert a.basket.currentText() == "gone"
    a.on_underlying.setChecked(False)
    entry.panel.safety.setChecked(False)
    entry.panel.submit()
    assert entry.failures[-1] == ("Basket", "gone has ended (REMOVED); choose another basket or none")
    a.basket.setCurrentIndex(a.basket.findData(NO_BASKET))
    request = entry.panel.entry_request()  # as checked a moment before it ended
    a.basket.setCurrentIndex(a.basket.findData(gone.id))
    with pytest.raises(ValueError, match="^Basket: it has just ended; choose another basket or none$"):
        entry.rig.service.place_entry(request, attach=lambda p: a.attach(p, entry.rig.account_id, None))
    refused = max(p.id for p in entry.store.protections())
    assert entry.store.get(refused).status is Status.REJECTED
    assert entry.rig.service.actions.waitForDone(5000)
    assert entry.rig.sim_orders(entry.store.get(refused).entry_tag) == []
    a.basket.setCurrentIndex(a.basket.findData(NO_BASKET))

    # The exit time cannot hold a time outside the session: it stays within 09:16-15:29 IST.
    a.exit_at.setChecked(True)
    a.exit_time.setTime(QTime(16, 0))
    assert a.exit_time.time() == QTime(15, 29)
    a.exit_time.setTime(QTime(8, 0))
    assert a.exit_time.time() == QTime(9, 16)

    # Nothing else was stored or sent, and the basket already there is as it was.
    assert [p.id for p in entry.store.protections() if p.id != refused] == [kept]
    assert len(entry.rig.sim_orders()) == orders_before
    again = entry.baskets.baskets.get(basket.id)
    assert again.members == (kept,) and again.rules == BasketRules(max_loss=900.0)
    assert again.status is BasketStatus.ACTIVE


def test_a_timed_exit_from_the_form_squares_off_once(entry: Entry) -> None:
    entry.rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    entry.choose("NSE:INFY", quantity=4)
    entry.attach.exit_at.setChecked(True)
    entry.attach.exit_time.setTime(QTime(15, 16))
    assert entry.panel.exit_value.isVisibleTo(entry.panel)
    assert entry.panel.exit_value.text() == "15:16 IST, if still open"
    pid = entry.panel.submit()
    assert pid is not None
    assert str(entry.square_off.times.get(pid)) == "15:16:00"  # stored with the protection, before the fill
    entry.rig.wait_status(pid, Status.OPEN)
    assert entry.square_off.check_now() == []  # 10:00 IST: not yet
    entry.now = MONDAY_15_16
    assert entry.square_off.check_now() == [pid]
    entry.rig.wait_status(pid, Status.CLOSED)
    assert entry.square_off.check_now() == []
    (exit_order,) = entry.exits(pid)
    assert exit_order["transaction_type"] == "SELL" and exit_order["quantity"] == 4
    assert entry.store.get(pid).reason.startswith("square-off 15:16") or any(
        e.message.startswith("square-off 15:16")
        for e in entry.store.events(protection_id=pid, kinds=["transition"])
    )


def test_a_new_basket_then_an_existing_one_from_the_form_exit_together_once(entry: Entry) -> None:
    entry.rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    entry.rig.sim.set_price("NSE:TCS", 3000.0, bid=2999.95, ask=3000.05)
    a = entry.attach
    entry.choose("NSE:INFY", quantity=10)
    a.basket.setCurrentIndex(a.basket.findData(NEW_BASKET))
    a.basket_name.setText("pair")
    a.basket_rules["max_loss"].setText("300")
    assert entry.panel.basket_value.text() == "pair (new): max loss ₹300"
    long_id = entry.panel.submit()
    assert long_id is not None
    (basket,) = entry.baskets.baskets.find(entry.rig.account_id, "pair")
    assert basket.members == (long_id,)
    entry.rig.wait_status(long_id, Status.OPEN)

    entry.panel.clear()
    entry.choose("NSE:TCS", quantity=5, side=Side.SELL)
    wait_until(lambda: a.basket.findData(basket.id) >= 0, what="the basket in the list", qtbot=entry.qtbot)
    a.basket.setCurrentIndex(a.basket.findData(basket.id))
    wait_until(
        lambda: "MTM" in entry.panel.basket_value.text(), what="the basket's live MTM", qtbot=entry.qtbot
    )
    assert "loss limit −₹300.00" in entry.panel.basket_value.text()
    short_id = entry.panel.submit()
    assert short_id is not None
    assert entry.baskets.baskets.get(basket.id).members == (long_id, short_id)
    entry.rig.wait_status(short_id, Status.OPEN)

    entry.rig.sim.set_price("NSE:INFY", 1470.0, bid=1469.95, ask=1470.05)  # -300 on the long: the limit
    for pid in (long_id, short_id):
        entry.rig.wait_status(pid, Status.CLOSED, timeout=15)
    wait_until(
        lambda: entry.baskets.baskets.get(basket.id).status is BasketStatus.EXITED,
        what="the basket to finish",
        qtbot=entry.qtbot,
    )
    (long_exit,) = entry.exits(long_id)
    (short_exit,) = entry.exits(short_id)
    assert (long_exit["transaction_type"], long_exit["quantity"]) == ("SELL", 10)
    assert (short_exit["transaction_type"], short_exit["quantity"]) == ("BUY", 5)

    # The basket still chosen in the form has ended: the next order is not sent without it, silently.
    wait_until(lambda: a.basket.currentText() == "pair (ended)", what="the ended basket", qtbot=entry.qtbot)
    wait_until(entry.panel.submit_button.isEnabled, what="the cool-down to end", qtbot=entry.qtbot)
    assert entry.panel.submit() is None
    assert entry.failures[-1] == ("Basket", "pair has ended (EXITED); choose another basket or none")
    assert len(entry.store.protections()) == 2


def test_a_stop_on_the_underlying_from_the_form_exits_the_option_on_the_index(entry: Entry) -> None:
    call = next(
        i
        for i in control(entry.rig.sim, "instruments")
        if i["name"] == "NIFTY" and i["instrument_type"] == "CE"
    )
    entry.choose(f"NFO:{call['tradingsymbol']}")
    entry.panel.rule_editor.set_rule(TrailRule.points(50.0))
    entry.on_underlying("NSE:NIFTY 50")
    assert entry.attach.underlying_view() is Side.BUY  # a bought call: protect against a fall
    reference = entry.wait_underlying_price()
    wait_until(
        lambda: entry.panel.underlying_value.text().startswith(f"<b>{reference - 50:,.2f}</b> on NIFTY 50"),
        what="the preview of the stop on the index",
        qtbot=entry.qtbot,
    )
    assert not entry.panel.safety.isChecked()
    pid = entry.panel.submit()
    assert pid is not None
    rule = entry.underlying.rule(pid)
    assert rule is not None and rule.symbol == "NIFTY 50" and rule.reference == reference
    entry.rig.wait_status(pid, Status.OPEN)
    assert entry.store.get(pid).stop == pytest.approx(reference - 50)
    control(entry.rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference - 40})
    assert entry.rig.status(pid) is Status.OPEN
    control(entry.rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference - 55})
    entry.rig.wait_status(pid, Status.CLOSED)
    (exit_order,) = entry.exits(pid)
    assert exit_order["tradingsymbol"] == call["tradingsymbol"]
    assert (exit_order["transaction_type"], exit_order["quantity"]) == ("SELL", call["lot_size"])


def test_a_short_window_scrolls_the_form_instead_of_drawing_rows_over_each_other(entry: Entry) -> None:
    """With the Baskets dock open on a laptop screen the order area is short: the rows were squeezed until
    they were drawn over each other (seen in the screenshot); now the form scrolls."""
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    panel = entry.panel
    entry.attach.exit_at.setChecked(True)
    entry.attach.on_underlying.setChecked(True)
    container = QWidget()
    entry.qtbot.addWidget(container)
    QVBoxLayout(container).addWidget(panel)
    container.setFixedSize(panel.minimumSizeHint().width(), 320)
    container.show()
    entry.qtbot.waitExposed(container)
    entry.qtbot.waitUntil(lambda: panel.scroll_area.verticalScrollBar().isVisible(), timeout=2000)

    def top(widget: QWidget) -> int:
        return widget.mapTo(panel.content, widget.rect().topLeft()).y()

    def bottom(widget: QWidget) -> int:
        return widget.mapTo(panel.content, widget.rect().bottomLeft()).y()

    rows = [panel.account, panel.instrument, panel.quantity, panel.price, panel.safety, entry.attach.basket]
    rows += [entry.attach.exit_at, entry.attach.underlying_symbol, panel.preview_box, panel.submit_button]
    for upper, lower in zip(rows, rows[1:], strict=False):
        assert bottom(upper) < top(lower), (upper.accessibleName(), lower.accessibleName())
    for widget in (panel.safety, entry.attach.exit_at, entry.attach.on_underlying):
        assert widget.height() >= widget.sizeHint().height()
    panel.setParent(None)  # the fixture's own widget: closed by it, not with the container
