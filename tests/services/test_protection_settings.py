"""Settings that must act (issue 13 item 14): the market protection reaches the exits, an adopted position's
tick size comes from the instrument master and can be corrected."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pytestqt.qtbot import QtBot

from tests.services.test_protection_flow import Rig
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import InstrumentRecord, ProtectionStore
from trailstop_gui.services.brokers.base import OrderRequest
from trailstop_gui.services.instruments import master_key
from trailstop_gui.settings import load_settings, save_settings
from trailstop_gui.simulator.runner import SimulatorHandle


def open_outside(rig: Rig, side: Side = Side.BUY, quantity: int = 4) -> int:
    """A position opened outside the app (the broker's own site), then adopted; returns the protection id."""
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig.session.broker.place_order(
        OrderRequest(
            symbol="INFY",
            exchange="NSE",
            instrument=rig.instrument("NSE:INFY")[0],
            side=side,
            quantity=quantity,
            product=Product.MIS,
        )
    )
    rig.qtbot.waitUntil(
        lambda: any(p.symbol == "INFY" and p.quantity for p in rig.session.broker.positions()), timeout=5000
    )
    position = next(p for p in rig.session.broker.positions() if p.symbol == "INFY" and p.quantity)
    return rig.service.adopt(rig.account_id, position, TrailRule.percent(2.0)).id


@pytest.mark.parametrize(
    ("broker", "setting", "sent"), [("kite", 7, 7), ("upstox", 7, 7), ("upstox", 40, 25)]
)
def test_the_market_protection_setting_reaches_the_exit(
    simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot, broker: str, setting: int, sent: int
) -> None:
    save_settings(store, replace(load_settings(store), market_protection=setting))
    rig = Rig(simulator, store, broker, qtbot)
    try:
        pid = open_outside(rig)
        rig.service.exit_now(pid)
        rig.wait_status(pid, Status.CLOSED)
        [exit_order] = rig.sim_orders(rig.store.get(pid).exit_tag)
        # Upstox's maximum is 25 %: a larger setting (Kite allows 100) is held to it.
        assert exit_order["market_protection"] == sent
    finally:
        rig.close()


def test_a_saved_setting_applies_to_the_next_exit_without_a_restart(
    simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot
) -> None:
    rig = Rig(simulator, store, "kite", qtbot)
    try:
        pid = open_outside(rig)
        rig.service.apply_settings(replace(load_settings(store), market_protection=12))
        rig.service.exit_now(pid)
        rig.wait_status(pid, Status.CLOSED)
        [exit_order] = rig.sim_orders(rig.store.get(pid).exit_tag)
        assert exit_order["market_protection"] == 12
    finally:
        rig.close()


def test_an_adopted_position_takes_its_tick_from_the_master_and_it_can_be_corrected(
    simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot
) -> None:
    rig = Rig(simulator, store, "kite", qtbot)
    try:
        token, symbol = rig.instrument("NSE:INFY")
        master = master_key(rig.session.account)
        store.upsert_instruments(
            master, [InstrumentRecord(master, str(token), symbol, "NSE", "INFOSYS", tick_size=0.01)]
        )
        pid = open_outside(rig)
        p = rig.store.get(pid)
        assert p.tick_size == 0.01
        assert p.stop == pytest.approx(round(p.entry_price * 0.98, 2), abs=0.0100001)  # on the 0.01 grid
        # The trader corrects it: stored, journalled, and the engine trails on the new grid.
        corrected = rig.service.set_tick_size(pid, 0.05)
        assert corrected.tick_size == 0.05 and corrected.stop is not None
        assert round(corrected.stop / 0.05, 6).is_integer() and corrected.stop <= p.stop
        assert any(e.kind == "tick_size_changed" for e in store.events(protection_id=pid))
        rig.sim.set_price("NSE:INFY", 1561.23, bid=1561.21, ask=1561.25)
        qtbot.waitUntil(lambda: (rig.store.get(pid).stop or 0) > corrected.stop, timeout=5000)
        moved = rig.store.get(pid).stop
        assert moved is not None and round(moved / 0.05, 6).is_integer()
        with pytest.raises(ValueError, match="tick size"):
            rig.service.set_tick_size(pid, 0.0)
        assert rig.store.get(pid).tick_size == 0.05
    finally:
        rig.close()
