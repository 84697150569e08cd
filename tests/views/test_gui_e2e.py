"""End to end through the window: a service logged in to the simulator, an entry placed, prices pushed,
and the row seen to fill, trail, trigger and close, with the alerts reaching the tray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PySide6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from tests.factories import quick_reconnects, sim_session
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.exit_executor import RetryPolicy
from trailstop_gui.services.notifier import AlertKind
from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator
from trailstop_gui.views.main_window import MainWindow
from trailstop_gui.views.positions_model import RowState
from trailstop_gui.views.tray import TrayController


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=1, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


class GuiRig:
    """The services logged in to the simulator, and the main window on top of them."""

    def __init__(self, sim: SimulatorHandle, tmp_path: Path, qtbot: QtBot) -> None:
        self.sim = sim
        self.store = ProtectionStore(tmp_path / "e2e.db")
        self.session = sim_session(self.store, sim, label="Zerodha (simulator)", **quick_reconnects())
        self.service = ProtectionService(
            self.store,
            retry_policy=RetryPolicy(
                attempts=6, initial_delay=0.05, max_delay=0.2, poll_interval=0.05, lookup_window=1.5
            ),
        )
        self.service.add_session(self.session)
        self.tray = TrayController(self.service.notifier, available=False)
        self.notified: list[Any] = []
        self.tray.notified.connect(self.notified.append)
        self.window = MainWindow(
            self.service,
            self.store,
            self.service.notifier,
            str(tmp_path),
            settings=QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat),
            tray=self.tray,
        )
        qtbot.addWidget(self.window)
        self.service.start()
        self.window.show()

    def close(self) -> None:
        self.window.stop()
        self.service.shutdown()
        self.store.close()


@pytest.fixture
def gui(simulator: SimulatorHandle, tmp_path: Path, qtbot: QtBot) -> Iterator[GuiRig]:
    rig = GuiRig(simulator, tmp_path, qtbot)
    yield rig
    rig.close()


def test_row_trails_triggers_and_closes_with_tray_alerts(gui: GuiRig, qtbot: QtBot) -> None:
    pid = enter_infy(gui, qtbot)
    model = gui.window.model

    def row() -> Any:
        r = model.row_for(pid)
        assert r is not None
        return r

    qtbot.waitUntil(lambda: row().state is RowState.ARMED, timeout=10_000)
    assert row().entry == pytest.approx(1500.0, abs=0.1)
    assert gui.window.positions.select_pid(pid)
    assert gui.window.detail.pid == pid
    first_stop = row().stop

    gui.sim.set_price("NSE:INFY", 1560.0, bid=1559.95, ask=1560.05)
    qtbot.waitUntil(lambda: row().ltp == 1560.0 and row().stop == pytest.approx(1528.8), timeout=10_000)
    assert row().stop > first_stop
    view_row = gui.window.positions.proxy.index(0, 6).data()  # the Stop column as the trader sees it
    assert view_row == "1,528.80"
    assert gui.window.tick_label.text().startswith("Last tick")
    qtbot.waitUntil(lambda: gui.window.detail.chart.price.count() >= 1, timeout=5000)

    gui.sim.set_price("NSE:INFY", 1520.0, bid=1519.95, ask=1520.05)
    qtbot.waitUntil(lambda: row().status is Status.CLOSED, timeout=10_000)
    assert row().state is RowState.CLOSED
    assert row().exit_price is not None and row().pnl() is not None
    # The row may show CLOSED (read from the store) a moment before the queued exit_filled signal is
    # delivered: wait for the alert itself, then check both alerts and their order.
    qtbot.waitUntil(lambda: AlertKind.EXIT_FILLED in [a.kind for a in gui.notified], timeout=5000)
    kinds = [a.kind for a in gui.notified]
    assert AlertKind.STOP_TRIGGERED in kinds and AlertKind.EXIT_FILLED in kinds
    assert kinds.index(AlertKind.STOP_TRIGGERED) < kinds.index(AlertKind.EXIT_FILLED)
    qtbot.waitUntil(lambda: gui.window.detail.chart.trigger.isVisible(), timeout=5000)
    assert gui.window.detail.chart.trigger.at(0).y() == pytest.approx(1520.0)
    assert gui.window.counts_label.text() == "No active protections"
    # The ended protection stays in view, greyed, with its realised P&L.
    assert gui.window.positions.selected_pid() == pid
    assert gui.window.positions.proxy.index(0, 9).data() == "Closed"


def enter_infy(gui: GuiRig, qtbot: QtBot) -> int:
    account_id = gui.session.account_id
    qtbot.waitUntil(lambda: gui.window.account_bar.state(account_id) == "live", timeout=10_000)
    instruments = requests.get(f"{gui.sim.url}/_sim/instruments", timeout=5).json()
    infy = next(i for i in instruments if i["symbol"] == "NSE:INFY")
    gui.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    p = gui.service.place_entry(
        EntryRequest(
            account_id=account_id,
            instrument=infy["kite_token"],
            symbol=infy["tradingsymbol"],
            exchange="NSE",
            side=Side.BUY,
            quantity=3,
            product=Product.CNC,
            tick_size=0.05,
            rule=TrailRule.percent(2.0),
        )
    )
    qtbot.waitUntil(
        lambda: getattr(gui.window.model.row_for(p.id), "state", None) is RowState.ARMED, timeout=10_000
    )
    return p.id


def test_exit_now_on_a_live_account_says_exit_sent_with_its_order(gui: GuiRig, qtbot: QtBot) -> None:
    pid = enter_infy(gui, qtbot)
    positions = gui.window.positions
    positions.confirm = gui.window.confirm = lambda *_: True
    messages: list[str] = []
    positions.message_posted.connect(messages.append)
    qtbot.waitUntil(lambda: positions.select_pid(pid), timeout=5000)
    positions.act_exit.trigger()
    qtbot.waitUntil(lambda: gui.store.get(pid).exit_order_id is not None, timeout=10_000)
    order = gui.store.get(pid).exit_order_id
    qtbot.waitUntil(lambda: f"INFY: exit sent (order {order})" in messages, timeout=5000)
    assert messages[0] == "INFY: exit requested; waiting for the broker to take it"
    qtbot.waitUntil(lambda: gui.store.get(pid).status is Status.CLOSED, timeout=10_000)
    assert messages.count(f"INFY: exit sent (order {order})") == 1  # said once, not again at the fill


def test_exit_all_on_a_live_account_reports_each_exit_as_it_is_sent(gui: GuiRig, qtbot: QtBot) -> None:
    pid = enter_infy(gui, qtbot)
    gui.window.confirm = lambda *_: True
    messages: list[str] = []
    gui.window.positions.message_posted.connect(messages.append)
    assert gui.window.exit_all() == [pid]
    said = gui.window.statusBar().currentMessage()
    assert said == "Exit requested for 1 of 1 position; each is reported once the broker takes it."
    qtbot.waitUntil(lambda: gui.store.get(pid).exit_order_id is not None, timeout=10_000)
    order = gui.store.get(pid).exit_order_id
    qtbot.waitUntil(lambda: messages == [f"INFY: exit sent (order {order})"], timeout=5000)
    qtbot.waitUntil(lambda: gui.store.get(pid).status is Status.CLOSED, timeout=10_000)
    assert messages == [f"INFY: exit sent (order {order})"]
