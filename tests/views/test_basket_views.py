"""The basket dialog and panel (pytest-qt) against the simulator: live preview, named mistakes, the chart of
MTM with its lock, and a breach seen in the window."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QDialogButtonBox, QMainWindow, QMenu
from pytestqt.qtbot import QtBot

from tests.services.test_protection_flow import Rig, enter
from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.basket_store import BasketStatus, BasketStore
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator
from trailstop_gui.views.basket_dialog import BasketDialog
from trailstop_gui.views.basket_panel import BasketPanel, add_basket_dock
from trailstop_gui.views.positions_view import PositionsView
from trailstop_gui.views.table_model import RowsTableModel

WIDE = TrailRule.percent(20.0)


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=1, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


@pytest.fixture
def rig(simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot) -> Iterator[Rig]:
    r = Rig(simulator, store, "kite", qtbot)
    yield r
    r.close()


@pytest.fixture
def baskets(rig: Rig) -> Iterator[BasketService]:
    service = BasketService(rig.service, step_seconds=0.02, refresh_seconds=0.2)
    service.start()
    yield service
    service.shutdown()


def pair(rig: Rig) -> tuple[int, int]:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig.sim.set_price("NSE:TCS", 3000.0, bid=2999.95, ask=3000.05)
    return enter(rig, Side.BUY, Product.MIS, WIDE, "NSE:INFY"), enter(
        rig, Side.SELL, Product.MIS, WIDE, "NSE:TCS"
    )


def test_new_basket_with_a_live_preview_and_named_mistakes(
    qtbot: QtBot, rig: Rig, baskets: BasketService
) -> None:
    long, short = pair(rig)
    dialog = BasketDialog(baskets)
    qtbot.addWidget(dialog)
    dialog.name.setText("pair")
    for row in range(dialog.members.count()):
        dialog.members.item(row).setCheckState(dialog.members.item(row).checkState().Checked)
    assert sorted(dialog.checked_members()) == sorted([long, short])
    dialog.rules["max_loss"].setText("lots")
    dialog.update_preview()
    assert dialog.error_label.text().startswith("Max loss (₹): not a number")
    dialog.rules["max_loss"].setText("500")
    dialog.rules["lock_at"].setText("100")
    dialog.rules["lock_profit"].setText("200")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert "lock profit" in dialog.error_label.text()
    assert BasketStore(rig.store).baskets() == []  # nothing stored from bad input
    dialog.rules["lock_profit"].setText("50")
    rig.sim.set_price("NSE:INFY", 1510.0)
    entry = rig.store.get(long).entry_price or 0
    value = (1510.0 - entry) * 3 + ((rig.store.get(short).entry_price or 0) - 3000.0) * 3
    expected = f"MTM -₹{-value:,.2f}" if value < 0 else f"MTM ₹{value:,.2f}"
    qtbot.waitUntil(lambda: expected in dialog.preview.text(), timeout=5000)
    assert "loss limit -₹500.00" in dialog.preview.text() and "distance ₹" in dialog.preview.text()
    with qtbot.waitSignal(dialog.accepted):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    saved = BasketStore(rig.store).baskets()
    assert [(b.name, sorted(b.members), b.rules) for b in saved] == [
        ("pair", sorted([long, short]), BasketRules(max_loss=500, lock_at=100, lock_profit=50))
    ]


def test_the_panel_charts_mtm_with_its_lock_and_shows_the_breach(
    qtbot: QtBot, rig: Rig, baskets: BasketService, qtmodeltester: Any
) -> None:
    long, short = pair(rig)
    basket = baskets.create(rig.account_id, "pair", BasketRules(lock_at=100, lock_profit=40), [long, short])
    window = QMainWindow()
    qtbot.addWidget(window)
    panel = add_basket_dock(window, baskets)
    assert isinstance(panel, BasketPanel)
    panel.table.selectRow(0)
    entry = rig.store.get(long).entry_price or 0
    rig.sim.set_price("NSE:INFY", entry + 60)  # ~ +180: locks 40
    qtbot.waitUntil(lambda: BasketStore(rig.store).get(basket.id).lock == 40, timeout=5000)
    qtbot.wait(600)  # a second chart point
    panel.refresh()
    assert panel.selected() is not None and panel.selected().id == basket.id  # type: ignore[union-attr]
    # The shared table base (views/table_model.py): rows, headers, flags as Qt's checker wants them.
    assert isinstance(panel.model, RowsTableModel)
    qtmodeltester.check(panel.model, force_py=True)
    assert [panel.model.headerData(c, Qt.Orientation.Horizontal) for c in range(3)] == [
        "Basket",
        "State",
        "MTM",
    ]
    assert panel.model.headerData(0, Qt.Orientation.Horizontal, Qt.ItemDataRole.TextAlignmentRole) is None
    assert panel.chart.price.count() >= 1  # MTM
    assert panel.chart.stop.count() >= 2  # the lock, as a step line
    assert panel.model.data(panel.model.index(0, 3)) == "₹40.00"
    rig.sim.set_price("NSE:INFY", entry + 5)  # back through the lock
    qtbot.waitUntil(
        lambda: BasketStore(rig.store).get(basket.id).status is BasketStatus.EXITED, timeout=15000
    )
    assert rig.status(long) is Status.CLOSED and rig.status(short) is Status.CLOSED
    panel.refresh()
    assert panel.model.data(panel.model.index(0, 1)).startswith("EXITED")
    assert not panel.edit_button.isEnabled()
    # The state says which limit in a few words, whole in its column; the tooltip has the figures.
    state = panel.model.index(0, 1)
    assert panel.model.data(state) == "EXITED (lock)"
    assert panel.model.data(state, Qt.ItemDataRole.ToolTipRole).startswith("EXITED: lock: MTM ")
    panel.table.resizeColumnsToContents()
    width = panel.table.fontMetrics().horizontalAdvance("EXITED (lock)")
    assert panel.table.columnWidth(1) > width


def test_a_trail_step_set_in_the_window_raises_the_lock_and_the_raised_lock_exits(
    qtbot: QtBot, rig: Rig, baskets: BasketService
) -> None:
    long, short = pair(rig)
    dialog = BasketDialog(baskets)
    qtbot.addWidget(dialog)
    dialog.name.setText("trailed")
    for row in range(dialog.members.count()):
        dialog.members.item(row).setCheckState(dialog.members.item(row).checkState().Checked)
    for name, value in (("lock_at", "100"), ("lock_profit", "40"), ("trail_every", "50"), ("trail_by", "25")):
        dialog.rules[name].setText(value)
    with qtbot.waitSignal(dialog.accepted):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    (basket,) = BasketStore(rig.store).baskets()
    window = QMainWindow()
    qtbot.addWidget(window)
    panel = add_basket_dock(window, baskets)
    assert isinstance(panel, BasketPanel)
    entry = rig.store.get(long).entry_price or 0
    # ~ +180 (the short TCS leg is about flat): 80 above the lock's 100, one step of 50: 40 + 25.
    rig.sim.set_price("NSE:INFY", entry + 60)
    qtbot.waitUntil(lambda: BasketStore(rig.store).get(basket.id).lock == 65, timeout=5000)
    panel.refresh()
    assert panel.model.data(panel.model.index(0, 3)) == "₹65.00"
    # ~ +60: above the untrailed lock (40), below the trailed one (65): only the step makes this an exit.
    rig.sim.set_price("NSE:INFY", entry + 20)
    qtbot.waitUntil(
        lambda: BasketStore(rig.store).get(basket.id).status is BasketStatus.EXITED, timeout=15000
    )
    rig.wait_status(long, Status.CLOSED)
    rig.wait_status(short, Status.CLOSED)
    assert len(rig.sim_orders(rig.store.get(long).exit_tag)) == 1
    assert len(rig.sim_orders(rig.store.get(short).exit_tag)) == 1
    panel.refresh()
    assert panel.model.data(panel.model.index(0, 1)) == "EXITED (lock)"


def test_exit_time_and_underlying_from_the_window(qtbot: QtBot, rig: Rig, baskets: BasketService) -> None:
    from tests.services.conftest import control
    from trailstop_gui.models.store import InstrumentRecord
    from trailstop_gui.services.instruments import master_key
    from trailstop_gui.services.protection_service import EntryRequest
    from trailstop_gui.services.square_off import SquareOffService
    from trailstop_gui.services.underlying import UnderlyingService

    square_off = SquareOffService(rig.service)
    underlying = UnderlyingService(rig.service)
    index = next(i for i in control(rig.sim, "instruments") if i["symbol"] == "NSE:NIFTY 50")
    call = next(
        i for i in control(rig.sim, "instruments") if i["name"] == "NIFTY" and i["instrument_type"] == "CE"
    )
    master = master_key(rig.session.account)
    rig.store.upsert_instruments(
        master,
        [InstrumentRecord(master, str(index["kite_token"]), "NIFTY 50", "NSE", "NIFTY 50", tick_size=0.0)],
    )
    p = rig.service.place_entry(
        EntryRequest(
            account_id=rig.account_id,
            instrument=call["kite_token"],
            symbol=call["tradingsymbol"],
            exchange="NFO",
            side=Side.BUY,
            quantity=call["lot_size"],
            product=Product.NRML,
            tick_size=0.05,
            rule=TrailRule.points(50.0),
        )
    )
    rig.wait_status(p.id, Status.OPEN)
    window = QMainWindow()
    qtbot.addWidget(window)
    panel = add_basket_dock(window, baskets, square_off, underlying)
    dialog = panel.protection_rules(p.id)
    assert dialog is not None
    dialog.exit_at.setChecked(True)
    dialog.on_underlying.setChecked(True)
    dialog.underlying_symbol.setText("NSE:NIFTY 9")
    dialog.reference.setText("24350")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert "not in the account's instrument list" in dialog.error_label.text()
    assert underlying.rule(p.id) is None
    assert square_off.times.get(p.id) is None  # a refused Save stores nothing, the exit time neither
    dialog.underlying_symbol.setText("NSE:NIFTY 50")
    dialog.reference.setText("about 24350")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert dialog.error_label.text() == "underlying price: a number, its price now"
    assert underlying.rule(p.id) is None and square_off.times.get(p.id) is None
    assert dialog.isVisible()  # still open: the trader corrects the field
    dialog.reference.setText("24350")
    with qtbot.waitSignal(dialog.accepted):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    rule = underlying.rule(p.id)
    assert rule is not None and rule.reference == 24350.0 and rule.view is Side.BUY
    assert str(square_off.times.get(p.id)) == "15:15:00"
    assert rig.store.get(p.id).stop == pytest.approx(24300.0)


def select_rows(view: PositionsView, *pids: int) -> None:
    """Select these rows together, as a Ctrl+click on each would."""
    view.table.clearSelection()
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    for pid in pids:
        row = view.model.row_number(pid)
        assert row is not None
        view.table.selectionModel().select(view.proxy.mapFromSource(view.model.index(row, 0)), flags)


def test_the_positions_table_puts_its_rows_in_baskets_and_gives_exit_times(
    qtbot: QtBot, rig: Rig, baskets: BasketService
) -> None:
    from trailstop_gui.services.square_off import SquareOffService
    from trailstop_gui.services.underlying import UnderlyingService

    long, short = pair(rig)
    third = enter(rig, Side.BUY, Product.MIS, WIDE, "NSE:INFY")
    view = PositionsView(rig.service, rig.store)
    qtbot.addWidget(view)
    try:
        view.reload_all()
        assert not view.act_basket.isVisible()  # no basket service behind the window: not offered
        square_off = SquareOffService(rig.service)
        view.set_basket_tools(baskets, square_off, UnderlyingService(rig.service))
        assert view.act_basket.isVisible() and view.act_protection_rules.isVisible()

        select_rows(view, long, short)
        assert sorted(view.selected_pids()) == [long, short]
        assert view.act_basket.isEnabled()
        assert not view.act_exit.isEnabled() and not view.act_protection_rules.isEnabled()  # one row each
        view.act_basket.trigger()
        dialog = view.basket_dialog
        assert dialog.account.currentData() == rig.account_id
        assert sorted(dialog.checked_members()) == [long, short]
        assert "protected position" in dialog.whole.text() and "not included" in dialog.whole.text()
        dialog.name.setText("pair")
        dialog.rules["max_loss"].setText("500")
        with qtbot.waitSignal(dialog.accepted):
            dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
        assert dialog.saved is not None
        created = BasketStore(rig.store).get(dialog.saved.id)
        assert sorted(created.members) == [long, short] and created.rules.max_loss == 500

        # A later position joins it from the row's menu: Add to basket ▸ pair.
        assert view.select_pid(third)
        menu = QMenu()
        view._add_to_basket_menu(menu)
        (submenu,) = [a.menu() for a in menu.actions() if a.text() == "Add to basket"]
        (join,) = [a for a in submenu.actions() if a.text() == "pair"]
        join.trigger()
        dialog = view.basket_dialog
        assert dialog.basket is not None and dialog.basket.id == created.id
        assert sorted(dialog.checked_members()) == [long, short, third]
        with qtbot.waitSignal(dialog.accepted):
            dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
        assert sorted(BasketStore(rig.store).get(created.id).members) == [long, short, third]

        # The exit time of one row, from the table.
        assert view.act_protection_rules.isEnabled()
        view.act_protection_rules.trigger()
        rules = view.rules_dialog
        assert rules.protection.currentData() == third
        rules.exit_at.setChecked(True)
        with qtbot.waitSignal(rules.accepted):
            rules.buttons.button(QDialogButtonBox.StandardButton.Save).click()
        assert str(square_off.times.get(third)) == "15:15:00"
        assert square_off.times.get(long) is None
    finally:
        view.stop()


def test_the_preview_prices_an_option_whose_stop_is_on_nifty(
    qtbot: QtBot, rig: Rig, baskets: BasketService
) -> None:
    """Its engine watches NIFTY; before the basket is saved nobody asked for the option's own price, and the
    preview said "no prices yet" for as long as the dialog stayed open."""
    from tests.services.test_underlying import buy_option, on_index
    from trailstop_gui.services.underlying import UnderlyingService

    pid, opt = buy_option(rig, "CE")
    on_index(rig, UnderlyingService(rig.service), pid, Side.BUY)
    lot, entry = opt["lot_size"], rig.store.get(pid).entry_price or 0
    rig.sim.set_price(opt["symbol"], entry + 10, bid=entry + 9.95, ask=entry + 10.05)
    dialog = BasketDialog(baskets, selected=[pid])
    qtbot.addWidget(dialog)
    expected = f"MTM ₹{10 * lot:,.2f}"
    qtbot.waitUntil(lambda: expected in dialog.preview.text(), timeout=5000)
    feed = rig.session.feed
    assert feed is not None
    dialog.reject()
    qtbot.waitUntil(lambda: dialog._owner not in feed._watched_instruments, timeout=5000)  # let go
