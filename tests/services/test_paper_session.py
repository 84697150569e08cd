"""Paper trading: live prices from the simulator's feed, orders filled locally, nothing sent to the broker."""

from __future__ import annotations

import time

import pytest
from pytestqt.qtbot import QtBot

from tests.factories import quick_reconnects, sim_account, sim_session
from tests.services.conftest import control
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.paper import PaperBroker
from trailstop_gui.services.exit_executor import RetryPolicy
from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
from trailstop_gui.simulator.runner import SimulatorHandle


@pytest.mark.parametrize("broker", ["kite", "upstox"])
def test_paper_account_trails_and_exits_without_sending_orders(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore, broker: str
) -> None:
    account = sim_account(store, simulator, broker, "paper", mode="paper")
    session = sim_session(store, simulator, broker, account=account, login=False, **quick_reconnects())
    assert isinstance(session.broker, PaperBroker)
    section = simulator.info[broker]
    session.login_with_password(section["user_id"], section["password"])
    service = ProtectionService(store, retry_policy=RetryPolicy(initial_delay=0.05, poll_interval=0.05))
    service.add_session(session)
    service.start()
    try:
        simulator.set_price("NSE:INFY", 1500.0, bid=1499.90, ask=1500.10)
        inst = next(i for i in control(simulator, "instruments") if i["symbol"] == "NSE:INFY")
        instrument = inst["kite_token"] if broker == "kite" else inst["upstox_key"]
        # The paper fill needs a live price: wait until the feed has one for INFY.
        feed = session.feed
        assert feed is not None
        feed.arm([])
        p = service.place_entry(
            EntryRequest(
                account_id=account.id,
                instrument=instrument,
                symbol="INFY",
                exchange="NSE",
                side=Side.BUY,
                quantity=2,
                product=Product.MIS,
                tick_size=0.05,
                rule=TrailRule.percent(2.0),
            )
        )
        deadline = time.monotonic() + 10
        while store.get(p.id).status is not Status.OPEN:
            assert time.monotonic() < deadline, store.get(p.id)
            qtbot.wait(20)
        assert store.get(p.id).entry_price == pytest.approx(1500.10, abs=0.2)  # the ask, or the LTP at worst
        simulator.set_price("NSE:INFY", 1400.0, bid=1399.90, ask=1400.10)
        while store.get(p.id).status is not Status.CLOSED:
            assert time.monotonic() < deadline + 10, store.get(p.id)
            qtbot.wait(20)
        assert store.get(p.id).exit_price == pytest.approx(1399.90)  # sold at the bid
        assert control(simulator, "orders") == []  # nothing ever reached the broker
    finally:
        service.shutdown()
