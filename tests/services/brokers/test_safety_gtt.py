"""The GTT calls of both adapters against the simulator: place, read, modify, fire, delete, caps."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
import upstox_client

from tests.services.brokers.test_kite_adapter_sim import login as kite_login
from tests.services.brokers.test_upstox_adapter_sim import INFY
from tests.services.brokers.test_upstox_adapter_sim import login as upstox_login
from tests.services.conftest import control
from trailstop_gui.models.domain import Product, Side
from trailstop_gui.services.brokers.base import (
    GttBroker,
    GttNotFound,
    GttRequest,
    GttStatus,
    OrderStatus,
    as_gtt_broker,
)
from trailstop_gui.services.brokers.errors import BrokerError, RejectedError
from trailstop_gui.simulator import upstox_gtt
from trailstop_gui.simulator.runner import SimulatorHandle

BROKERS = ["kite", "upstox"]


def adapter(sim: SimulatorHandle, broker: str) -> Any:
    sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    return kite_login(sim) if broker == "kite" else upstox_login(sim)


def sell_below(trigger: float, quantity: int = 2, product: Product = Product.CNC) -> GttRequest:
    return GttRequest(
        symbol="INFY",
        exchange="NSE",
        instrument=INFY,
        side=Side.SELL,
        quantity=quantity,
        product=product,
        trigger_price=trigger,
        last_price=1500.0,
        limit_price=round(trigger * 0.98, 1),
    )


def wait_for(predicate: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_request_checks_the_trigger_direction() -> None:
    with pytest.raises(ValueError, match="below the last price"):
        sell_below(1500.0)
    with pytest.raises(ValueError, match="above the last price"):
        GttRequest("INFY", "NSE", Side.BUY, 1, Product.CNC, trigger_price=1490.0, last_price=1500.0)


def test_only_real_brokers_have_gtts(simulator: SimulatorHandle) -> None:
    assert isinstance(adapter(simulator, "kite"), GttBroker)
    # The paper broker (and anything else without the GTT calls) offers no GTT-held stops.
    assert as_gtt_broker(object()) is None


@pytest.mark.parametrize("broker", BROKERS)
def test_gtt_place_read_modify_fire(simulator: SimulatorHandle, broker: str) -> None:
    b = adapter(simulator, broker)
    gtt_id = b.place_gtt(sell_below(1480.0))
    g = b.gtt(gtt_id)
    assert (g.status, g.side, g.quantity, g.trigger_price) == (GttStatus.ACTIVE, Side.SELL, 2, 1480.0)
    assert g.order_id is None and g.is_live
    assert b.modify_gtt(gtt_id, sell_below(1490.0, quantity=3)) == gtt_id
    g = b.gtt(gtt_id)
    assert (g.trigger_price, g.quantity) == (1490.0, 3)
    assert [x.gtt_id for x in b.gtts()] == [gtt_id]
    simulator.set_price("NSE:INFY", 1495.0)
    assert b.gtt(gtt_id).status is GttStatus.ACTIVE
    simulator.set_price("NSE:INFY", 1489.0, bid=1488.95, ask=1489.05)
    fired = b.gtt(gtt_id)
    assert fired.status is GttStatus.TRIGGERED and fired.order_id
    order = b.order(fired.order_id)
    assert (order.side, order.quantity, order.order_type.value) == (Side.SELL, 3, "LIMIT")
    wait_for(lambda: b.order(fired.order_id).status is OrderStatus.COMPLETE, "the GTT's order to fill")
    with pytest.raises(BrokerError):
        b.modify_gtt(gtt_id, sell_below(1470.0))
    logged = [g for g in control(simulator, "gtts") if g["id"] == gtt_id]
    assert logged and logged[0]["broker"] == broker and logged[0]["order_id"] == fired.order_id


@pytest.mark.parametrize("broker", BROKERS)
def test_gtt_delete_and_not_found(simulator: SimulatorHandle, broker: str) -> None:
    b = adapter(simulator, broker)
    gtt_id = b.place_gtt(sell_below(1480.0))
    b.delete_gtt(gtt_id, urgent=True)
    simulator.set_price("NSE:INFY", 1400.0)
    if broker == "kite":
        with pytest.raises(GttNotFound):
            b.gtt(gtt_id)
    else:
        assert b.gtt(gtt_id).status is GttStatus.CANCELLED
    with pytest.raises(GttNotFound):
        b.gtt("999999" if broker == "kite" else "GTT-C00000000000")
    assert [o for o in b.orders() if o.side is Side.SELL] == []  # it never fired


def test_upstox_cannot_cancel_a_fired_gtt(simulator: SimulatorHandle) -> None:
    b = adapter(simulator, "upstox")
    gtt_id = b.place_gtt(sell_below(1480.0))
    simulator.set_price("NSE:INFY", 1470.0)
    with pytest.raises(RejectedError):
        b.delete_gtt(gtt_id)
    assert b.gtt(gtt_id).status is GttStatus.TRIGGERED


def test_gtt_modification_cap_is_enforced_when_set(simulator: SimulatorHandle) -> None:
    b = adapter(simulator, "upstox")
    book = next(x for x in simulator.sim.listeners() if isinstance(x, upstox_gtt.GttBook))
    simulator.call(setattr, book, "max_modifications", 2)
    gtt_id = b.place_gtt(sell_below(1480.0))
    b.modify_gtt(gtt_id, sell_below(1481.0))
    b.modify_gtt(gtt_id, sell_below(1482.0))
    with pytest.raises(RejectedError, match="modifications"):
        b.modify_gtt(gtt_id, sell_below(1483.0))


def upstox_api(simulator: SimulatorHandle, b: Any) -> Any:
    return upstox_client.OrderApiV3(b._client)


def test_upstox_stoploss_rule_fires_after_the_entry_fills(simulator: SimulatorHandle) -> None:
    """A MULTIPLE GTT through the SDK itself: BUY on ENTRY, then its STOPLOSS sells, cancelling TARGET."""
    b = adapter(simulator, "upstox")
    api = upstox_api(simulator, b)
    body = upstox_client.GttPlaceOrderRequest(
        type="MULTIPLE",
        quantity=2,
        product="I",
        instrument_token=INFY,
        transaction_type="BUY",
        rules=[
            upstox_client.GttRule(strategy="ENTRY", trigger_type="ABOVE", trigger_price=1510.0),
            upstox_client.GttRule(strategy="TARGET", trigger_type="IMMEDIATE", trigger_price=1600.0),
            upstox_client.GttRule(
                strategy="STOPLOSS", trigger_type="IMMEDIATE", trigger_price=1490.0, trailing_gap=20.0
            ),
        ],
    )
    gtt_id = api.place_gtt_order(body).data.gtt_order_ids[0]
    simulator.set_price("NSE:INFY", 1485.0)  # the STOPLOSS is not armed before the ENTRY fills
    assert b.positions() == [] or all(p.quantity == 0 for p in b.positions())
    simulator.set_price("NSE:INFY", 1512.0, bid=1511.95, ask=1512.05)
    wait_for(lambda: sum(p.quantity for p in b.positions()) == 2, "the ENTRY to fill")
    simulator.set_price("NSE:INFY", 1530.0, bid=1529.95, ask=1530.05)  # trails the STOPLOSS to 1510
    simulator.set_price("NSE:INFY", 1509.0, bid=1508.95, ask=1509.05)
    wait_for(lambda: sum(p.quantity for p in b.positions()) == 0, "the STOPLOSS to sell")
    details = api.get_gtt_order_details(gtt_order_id=gtt_id).data[0]
    statuses = {r.strategy: r.status for r in details.rules}
    assert statuses == {"ENTRY": "COMPLETED", "STOPLOSS": "COMPLETED", "TARGET": "CANCELLED"}
    stoploss = next(r for r in details.rules if r.strategy == "STOPLOSS")
    assert stoploss.trigger_price == 1510.0


def test_upstox_gtt_input_errors(simulator: SimulatorHandle) -> None:
    b = adapter(simulator, "upstox")
    headers = {"Authorization": f"Bearer {b._config.access_token}"}
    for body in (
        {
            "type": "SINGLE",
            "quantity": 1,
            "product": "D",
            "instrument_token": INFY,
            "transaction_type": "BUY",
        },
        {
            "type": "SINGLE",
            "quantity": 1,
            "product": "D",
            "instrument_token": INFY,
            "transaction_type": "SELL",
            "rules": [{"strategy": "STOPLOSS", "trigger_type": "IMMEDIATE", "trigger_price": 1400}],
        },
    ):
        reply = requests.post(f"{simulator.url}/v3/order/gtt/place", json=body, headers=headers, timeout=5)
        assert reply.status_code == 400 and reply.json()["status"] == "error"
