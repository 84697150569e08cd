"""Malformed replies (the simulator's ``malformed`` fault) through both adapters: an error, never zero."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.services.brokers import test_kite_adapter_sim as kite_sim
from tests.services.brokers import test_upstox_adapter_sim as upstox_sim
from tests.services.conftest import control
from trailstop_gui.models.domain import Side
from trailstop_gui.services.brokers.base import Broker
from trailstop_gui.services.brokers.errors import MalformedReplyError, TemporaryError
from trailstop_gui.simulator.runner import SimulatorHandle

PATHS = {
    "kite": {"positions": "/portfolio/positions", "holdings": "/portfolio/holdings", "orders": "/orders"},
    "upstox": {
        "positions": "/v2/portfolio/short-term-positions",
        "holdings": "/v2/portfolio/long-term-holdings",
        "orders": "/v2/order/retrieve-all",
    },
}


def _broker(sim: SimulatorHandle, name: str) -> Broker:
    sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    return kite_sim.login(sim) if name == "kite" else upstox_sim.login(sim)


def _long(broker: Broker, quantity: int = 10) -> None:
    """A filled MIS long of ``quantity`` INFY."""
    module = kite_sim if broker.capabilities.broker == "kite" else upstox_sim
    order_id = broker.place_order(module.order_request(Side.BUY, quantity))
    deadline = time.monotonic() + 5
    while not broker.order(order_id).is_final:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert broker.positions()[0].quantity == quantity


def _fault(sim: SimulatorHandle, **spec: Any) -> None:
    control(sim, "fault", {"fault": "malformed", "method": "GET", **spec})


@pytest.mark.parametrize("name", ["kite", "upstox"])
def test_a_null_positions_list_is_an_error_never_flat(simulator: SimulatorHandle, name: str) -> None:
    broker = _broker(simulator, name)
    _long(broker)
    _fault(simulator, path=PATHS[name]["positions"], mode="null_list")
    with pytest.raises(MalformedReplyError, match="positions: unreadable reply") as caught:
        broker.positions()
    assert isinstance(caught.value, TemporaryError)  # asked again, like a network error
    assert broker.positions()[0].quantity == 10  # the fault fired once; the position was there all along


@pytest.mark.parametrize("name", ["kite", "upstox"])
@pytest.mark.parametrize("what", ["positions", "holdings", "orders"])
def test_a_row_without_its_quantity_is_an_error(simulator: SimulatorHandle, name: str, what: str) -> None:
    broker = _broker(simulator, name)
    _long(broker)
    _fault(simulator, path=PATHS[name][what], mode="missing_field", field="quantity")
    with pytest.raises(MalformedReplyError, match="quantity is missing"):
        getattr(broker, what)()


@pytest.mark.parametrize("name", ["kite", "upstox"])
def test_a_null_holdings_list_is_an_error(simulator: SimulatorHandle, name: str) -> None:
    broker = _broker(simulator, name)
    _fault(simulator, path=PATHS[name]["holdings"], mode="null_list")
    with pytest.raises(MalformedReplyError, match="holdings: unreadable reply"):
        broker.holdings()
    assert broker.holdings()  # the demo account's holdings were there all along


@pytest.mark.parametrize("name", ["kite", "upstox"])
def test_numbers_sent_as_text_are_read_and_text_that_is_no_number_is_an_error(
    simulator: SimulatorHandle, name: str
) -> None:
    broker = _broker(simulator, name)
    _long(broker, 7)
    _fault(simulator, path=PATHS[name]["positions"], mode="string_number", field="quantity")
    assert broker.positions()[0].quantity == 7  # "7" is 7
    _fault(simulator, path=PATHS[name]["positions"], mode="string_number", field="quantity", value="seven")
    with pytest.raises(MalformedReplyError, match="quantity is not a number"):
        broker.positions()
    _fault(simulator, path=PATHS[name]["orders"], mode="string_number", field="filled_quantity", value="")
    with pytest.raises(MalformedReplyError, match="filled_quantity is missing"):
        broker.orders()


@pytest.mark.parametrize("name", ["kite", "upstox"])
def test_a_null_order_book_is_an_error_not_no_orders(simulator: SimulatorHandle, name: str) -> None:
    broker = _broker(simulator, name)
    _long(broker)
    _fault(simulator, path=PATHS[name]["orders"], mode="null_list")
    with pytest.raises(MalformedReplyError):
        broker.find_order_by_tag("TS1")
    assert len(broker.orders()) == 1
