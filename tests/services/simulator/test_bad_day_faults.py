"""The bad-day faults of issue 13 (lost replies, a lagging book, freeze quantities, auto-slicing), observed
through the official Kite client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from trailstop_gui.simulator.runner import SimulatorHandle


def _fault(handle: SimulatorHandle, **spec: Any) -> dict[str, Any]:
    response = requests.post(f"{handle.url}/_sim/fault", json=spec, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _market(kite: KiteConnect, quantity: int = 1, **overrides: Any) -> Any:
    spec: dict[str, Any] = {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "ITC",
        "transaction_type": "BUY",
        "quantity": quantity,
        "product": "MIS",
        "order_type": "MARKET",
        "market_protection": -1,
    }
    spec.update(overrides)
    return kite.place_order(**spec)


def test_a_lost_reply_places_the_order_and_answers_nothing(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    _fault(simulator, fault="lost_reply", path="/orders/regular", method="POST")
    with pytest.raises(requests.exceptions.ConnectionError, match="without response"):
        _market(kite_client, tag="lost1")
    assert [o["tag"] for o in kite_client.orders()] == ["lost1"]
    _market(kite_client, tag="next1")  # one shot: the next reply arrives
    assert len(kite_client.orders()) == 2


def test_a_lost_reply_is_always_after_the_fact(simulator: SimulatorHandle) -> None:
    response = requests.post(
        f"{simulator.url}/_sim/fault", json={"fault": "lost_reply", "phase": "before"}, timeout=5
    )
    assert response.status_code == 400


def test_the_book_and_positions_lag_fills_but_the_stream_does_not(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    _fault(simulator, fault="book_lag", seconds=0.6)
    placed = time.monotonic()
    order_id = _market(kite_client, 3, tag="lag1")
    assert kite_client.orders() == []  # not in the book yet
    with pytest.raises(kex.InputException):
        kite_client.order_history(order_id)
    net = kite_client.positions()["net"]
    assert not net or net[0]["quantity"] == 0
    wait_until(lambda: [o["status"] for o in kite_client.orders()] == ["COMPLETE"], what="lagged fill")
    assert time.monotonic() - placed >= 0.6
    assert kite_client.positions()["net"][0]["quantity"] == 3
    # The judge's own view is never late.
    assert requests.get(f"{simulator.url}/_sim/orders", timeout=5).json()[0]["status"] == "COMPLETE"


def test_positions_can_lag_fills_the_order_book_already_shows(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    """``orders``: the order book's own lag (0: current) while positions trail the fills: an exit whose
    order reads COMPLETE while the positions still show what it closed (a twin's exit sized then flips)."""
    _fault(simulator, fault="book_lag", seconds=0.8, orders=0)
    placed = time.monotonic()
    order_id = _market(kite_client, 3, tag="lag2")
    wait_until(lambda: kite_client.order_history(order_id)[-1]["status"] == "COMPLETE", what="the fill")
    assert [o["filled_quantity"] for o in kite_client.orders()] == [3]
    net = kite_client.positions()["net"]
    if time.monotonic() - placed < 0.8:
        assert not net or net[0]["quantity"] == 0
    wait_until(lambda: kite_client.positions()["net"][0]["quantity"] == 3, what="the lagging positions")
    assert time.monotonic() - placed >= 0.8
    bad = requests.post(
        f"{simulator.url}/_sim/fault", json={"fault": "book_lag", "seconds": 1, "orders": -1}, timeout=5
    )
    assert bad.status_code == 400


def test_freeze_quantity_refusal_in_kites_words(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    _fault(simulator, fault="freeze_quantity", symbol="NSE:ITC", quantity=10)
    with pytest.raises(kex.InputException) as caught:
        _market(kite_client, 25)
    assert str(caught.value) == (
        "The order quantity 25 (25 lots) is higher than the maximum quantity of 10 (10 lots) allowed by "
        "the exchanges. Please reduce the order quantity or use iceberg orders."
    )
    assert kite_client.orders() == []
    _market(kite_client, 10)  # at the freeze quantity: fine


def test_a_freeze_limit_with_refusals_is_revised_back_after_them(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    _fault(simulator, fault="freeze_quantity", symbol="NSE:ITC", quantity=10, refusals=1)
    with pytest.raises(kex.InputException, match="maximum quantity of 10"):
        _market(kite_client, 25)
    # The limit is the listed one again: the autoslice the refusal suggested needs no slicing now.
    with pytest.raises(kex.InputException, match="greater than or equal to 100001 for order slicing"):
        kite_client.place_autoslice_order(
            "regular", "NSE", "ITC", "BUY", 25, "MIS", "MARKET", market_protection=-1
        )
    _market(kite_client, 25)
    assert [o["quantity"] for o in kite_client.orders()] == [25]


def test_autoslice_splits_into_tracked_children(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    _fault(simulator, fault="freeze_quantity", symbol="NSE:ITC", quantity=10)
    reply = kite_client.place_autoslice_order(
        "regular", "NSE", "ITC", "BUY", 25, "MIS", "MARKET", market_protection=-1, tag="slice1"
    )
    children = [c["order_id"] for c in reply["children"]]
    assert reply["order_id"] == children[0] and len(children) == 3
    wait_until(
        lambda: (
            sorted((o["quantity"], o["status"]) for o in kite_client.orders())
            == [(5, "COMPLETE"), (10, "COMPLETE"), (10, "COMPLETE")]
        ),
        what="every slice filled",
    )
    rows = kite_client.orders()
    assert {o["tag"] for o in rows} == {"slice1"}
    assert all(f"autoslice:{children[0]}" in o["tags"] for o in rows)
    assert kite_client.positions()["net"][0]["quantity"] == 25


def test_autoslice_refuses_what_needs_no_slicing_and_more_than_ten_slices(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    _fault(simulator, fault="freeze_quantity", symbol="NSE:ITC", quantity=10)
    with pytest.raises(kex.InputException, match="greater than or equal to 11 for order slicing"):
        kite_client.place_autoslice_order(
            "regular", "NSE", "ITC", "BUY", 10, "MIS", "MARKET", market_protection=-1
        )
    with pytest.raises(kex.InputException, match="more than 10 orders"):
        kite_client.place_autoslice_order(
            "regular", "NSE", "ITC", "BUY", 101, "MIS", "MARKET", market_protection=-1
        )
    assert kite_client.orders() == []


def test_a_partial_fills_held_rest_is_freed_by_a_modification(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    _fault(simulator, fault="partial_fill", ratio=0.5)
    order_id = _market(kite_client, 10)
    wait_until(lambda: kite_client.order_history(order_id)[-1]["filled_quantity"] == 5, what="partial fill")
    row = kite_client.order_history(order_id)[-1]
    assert (row["status"], row["order_type"], row["pending_quantity"]) == ("OPEN", "LIMIT", 5)
    kite_client.modify_order("regular", order_id, order_type="MARKET", market_protection=-1)
    final = wait_until(
        lambda: (r := kite_client.order_history(order_id)[-1])["status"] == "COMPLETE" and r,
        what="rest filled",
    )
    assert final["filled_quantity"] == 10
