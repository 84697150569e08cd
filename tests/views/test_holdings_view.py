"""Holdings in the window: listed without protection (marked as holdings), and protected from there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pytestqt.qtbot import QtBot

from tests.views.test_gui_e2e import GuiRig
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.holdings import CONSENT_WARNING
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=1, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


@pytest.fixture
def gui(simulator: SimulatorHandle, tmp_path: Path, qtbot: QtBot) -> Iterator[GuiRig]:
    rig = GuiRig(simulator, tmp_path, qtbot)
    yield rig
    rig.close()


def unprotected_rows(gui: GuiRig) -> dict[str, list[str]]:
    model = gui.window.positions.unprotected_model
    return {
        model.index(r, 1).data(): [model.index(r, c).data() for c in range(model.columnCount())]
        for r in range(model.rowCount())
    }


def test_holdings_are_listed_and_protected_from_the_window(gui: GuiRig, qtbot: QtBot) -> None:
    account_id = gui.session.account_id
    view = gui.window.positions
    qtbot.waitUntil(lambda: gui.window.account_bar.state(account_id) == "live", timeout=10_000)
    gui.sim.set_price("NSE:ITC", 420.0, bid=419.95, ask=420.05)
    view.fetch_unprotected_now()
    qtbot.waitUntil(lambda: {"INFY", "ITC", "SBIN", "TCS"} <= set(unprotected_rows(gui)), timeout=10_000)
    rows = unprotected_rows(gui)
    # Marked as holdings, with the sellable quantity: SBIN's NSE and BSE listings (one ISIN) as one row.
    assert rows["ITC"][2:5] == ["Long", "100", "CNC holding"]
    assert rows["SBIN"][3] == "16"
    assert rows["TCS"][3] == "5"  # 2 of them T1, counted once
    assert view.unprotected_table.isVisible()

    asked: dict[str, Any] = {}

    def ask_rule(**kw: Any) -> TrailRule:
        asked.update(kw)
        return TrailRule.percent(2.0)

    view.ask_rule = ask_rule
    row = next(
        r
        for r in range(view.unprotected_model.rowCount())
        if view.unprotected_model.index(r, 1).data() == "ITC"
    )
    view.unprotected_table.selectRow(row)
    assert view.act_protect.isEnabled()
    view.act_protect.trigger()
    assert view.wait_for_flows()  # the Protect flow, on the qasync loop
    assert asked["side"] is Side.BUY and asked["quantity"] == 100
    assert "ITC holding 100 CNC" in asked["subject"]
    (p,) = gui.store.live(account_id)
    assert (p.symbol, p.side, p.product, p.filled_quantity, p.status) == (
        "ITC",
        Side.BUY,
        Product.CNC,
        100,
        Status.OPEN,
    )
    qtbot.waitUntil(lambda: "ITC" not in unprotected_rows(gui), timeout=10_000)
    qtbot.waitUntil(lambda: gui.window.model.row_for(p.id) is not None, timeout=5000)

    # The stop then protects it like any position: it trails and sells the holding, nothing else.
    gui.sim.set_price("NSE:ITC", 430.0, bid=429.95, ask=430.05)
    qtbot.waitUntil(lambda: gui.store.get(p.id).stop == pytest.approx(421.4), timeout=10_000)
    gui.sim.set_price("NSE:ITC", 415.0, bid=414.95, ask=415.05)
    qtbot.waitUntil(lambda: gui.store.get(p.id).status is Status.CLOSED, timeout=10_000)
    orders = requests.get(f"{gui.sim.url}/_sim/orders", timeout=5).json()
    assert [(o["transaction_type"], o["quantity"], o["product"]) for o in orders] == [("SELL", 100, "CNC")]


def test_protecting_holdings_without_demat_consent_warns_first(
    simulator: SimulatorHandle, tmp_path: Path, qtbot: QtBot
) -> None:
    requests.post(f"{simulator.url}/_sim/demat", json={"broker": "kite", "consent": False}, timeout=5)
    gui = GuiRig(simulator, tmp_path, qtbot)
    try:
        account_id = gui.session.account_id
        view = gui.window.positions
        qtbot.waitUntil(lambda: gui.service.demat_warning(account_id) is not None, timeout=10_000)
        view.fetch_unprotected_now()
        qtbot.waitUntil(lambda: "INFY" in unprotected_rows(gui), timeout=10_000)
        warnings: list[tuple[str, str, str]] = []

        def refuse(title: str, text: str, accept: str) -> bool:
            warnings.append((title, text, accept))
            return False

        view.confirm = refuse
        view.ask_rule = lambda **_kw: pytest.fail("the rule is asked only after the warning is accepted")
        row = next(
            r
            for r in range(view.unprotected_model.rowCount())
            if view.unprotected_model.index(r, 1).data() == "INFY"
        )
        view.unprotected_table.selectRow(row)
        view.act_protect.trigger()
        assert view.wait_for_flows()  # the Protect flow, on the qasync loop
        assert warnings == [("Delivery shares", CONSENT_WARNING, "Protect anyway")]
        assert gui.store.live(account_id) == []
    finally:
        gui.close()
