"""Every Kite JSON response has the keys and value types of the broker's own sample payload."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect

from tests.kite_mocks import kite_mock_text
from trailstop_gui.simulator.login_flow import kite_request_token
from trailstop_gui.simulator.runner import SimulatorHandle


class RawKite:
    """Plain HTTP with the SDK's headers, so the bodies are seen before the SDK converts anything."""

    def __init__(self, handle: SimulatorHandle, client: KiteConnect) -> None:
        self.base = handle.url
        self.headers = {
            "X-Kite-Version": "3",
            "Authorization": f"token {client.api_key}:{client.access_token}",
        }

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, self.base + path, headers=self.headers, timeout=5, **kwargs)
        assert response.headers["Content-Type"].startswith("application/json"), response.headers
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"status", "data"} and body["status"] == "success"
        return body


@pytest.fixture
def raw(simulator: SimulatorHandle, kite_client: KiteConnect) -> RawKite:
    return RawKite(simulator, kite_client)


@pytest.fixture
def traded(raw: RawKite, simulator: SimulatorHandle, wait_until: Callable[..., Any]) -> dict[str, str]:
    """A filled MARKET buy with a tag, a partly sold position and a resting LIMIT order."""
    simulator.set_price("NSE:SBIN", 800.0)
    form = {
        "exchange": "NSE",
        "tradingsymbol": "SBIN",
        "transaction_type": "BUY",
        "quantity": "4",
        "product": "MIS",
        "order_type": "MARKET",
        "market_protection": "-1",
        "tag": "shape1",
    }
    filled = raw("POST", "/orders/regular", data=form)["data"]["order_id"]
    wait_until(lambda: raw("GET", f"/orders/{filled}")["data"][-1]["status"] == "COMPLETE", what="fill")
    sold = raw("POST", "/orders/regular", data={**form, "transaction_type": "SELL", "quantity": "1"})
    wait_until(lambda: raw("GET", "/trades")["data"].__len__() == 2, what="second fill")
    resting = raw(
        "POST",
        "/orders/regular",
        data={**form, "order_type": "LIMIT", "price": "700", "market_protection": ""},
    )
    return {"filled": filled, "sold": sold["data"]["order_id"], "resting": resting["data"]["order_id"]}


def _order_keys(kite_mock: Callable[[str], Any]) -> frozenset[str]:
    rows = kite_mock("orders.json")["data"]
    return frozenset().union(*(set(r) for r in rows))


def test_order_responses(
    raw: RawKite,
    traded: dict[str, str],
    kite_mock: Callable[[str], Any],
    assert_kite_shape: Callable[..., None],
) -> None:
    assert_kite_shape(raw("GET", "/orders"), kite_mock("orders.json"))
    # order_history samples predate some fields the order book has; those are allowed in history rows too.
    assert_kite_shape(
        raw("GET", f"/orders/{traded['filled']}"), kite_mock("order_info.json"), _order_keys(kite_mock)
    )
    assert_kite_shape(raw("GET", "/trades"), kite_mock("trades.json"))
    assert_kite_shape(raw("GET", f"/orders/{traded['filled']}/trades"), kite_mock("order_trades.json"))
    modified = raw("PUT", f"/orders/regular/{traded['resting']}", data={"price": "701"})
    assert_kite_shape(modified, kite_mock("order_modify.json"))
    assert_kite_shape(raw("DELETE", f"/orders/regular/{traded['resting']}"), kite_mock("order_cancel.json"))


def test_place_order_response(
    raw: RawKite, kite_mock: Callable[[str], Any], assert_kite_shape: Callable[..., None]
) -> None:
    form = {
        "exchange": "NSE",
        "tradingsymbol": "ITC",
        "transaction_type": "BUY",
        "quantity": "1",
        "product": "CNC",
        "order_type": "LIMIT",
        "price": "300",
    }
    assert_kite_shape(raw("POST", "/orders/regular", data=form), kite_mock("order_response.json"))


def test_portfolio_and_user(
    raw: RawKite,
    traded: dict[str, str],
    kite_mock: Callable[[str], Any],
    assert_kite_shape: Callable[..., None],
) -> None:
    positions = raw("GET", "/portfolio/positions")
    assert positions["data"]["net"] and positions["data"]["day"]
    assert_kite_shape(positions, kite_mock("positions.json"))
    assert_kite_shape(raw("GET", "/portfolio/holdings"), kite_mock("holdings.json"))
    assert_kite_shape(raw("GET", "/user/profile"), kite_mock("profile.json"))
    assert_kite_shape(raw("GET", "/user/margins"), kite_mock("margins.json"))


def test_market_data(
    raw: RawKite, kite_mock: Callable[[str], Any], assert_kite_shape: Callable[..., None]
) -> None:
    quote = raw("GET", "/quote", params={"i": "NSE:INFY"})
    assert list(quote["data"]) == ["NSE:INFY"]
    assert_kite_shape(quote, kite_mock("quote.json"))
    assert_kite_shape(raw("GET", "/quote/ltp", params={"i": "NSE:INFY"}), kite_mock("ltp.json"))


def test_instrument_dump_matches_the_sample_format(simulator: SimulatorHandle) -> None:
    sample = list(csv.DictReader(io.StringIO(kite_mock_text("instruments_nse.csv"))))
    response = requests.get(f"{simulator.url}/instruments/NSE", timeout=5)
    assert response.headers["Content-Type"].startswith("text/csv")
    ours = list(csv.DictReader(io.StringIO(response.text)))
    assert list(ours[0]) == list(sample[0])
    for row in ours:
        for column in ("instrument_token", "exchange_token", "lot_size"):
            int(row[column])  # never empty, always an integer, as in the sample
        for column in ("last_price", "strike", "tick_size"):
            float(row[column])
        assert row["exchange"] == "NSE" and row["expiry"] == ""


def test_gtt_responses(
    raw: RawKite,
    simulator: SimulatorHandle,
    kite_mock: Callable[[str], Any],
    assert_kite_shape: Callable[..., None],
) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    condition = {"exchange": "NSE", "tradingsymbol": "INFY", "trigger_values": [1490.0], "last_price": 1500.0}
    orders = [
        {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC", "price": 1489.0}
    ]
    form = {"type": "single", "condition": json.dumps(condition), "orders": json.dumps(orders)}
    placed = raw("POST", "/gtt/triggers", data=form)
    assert_kite_shape(placed, kite_mock("gtt_place_order.json"))
    trigger_id = placed["data"]["trigger_id"]
    assert_kite_shape(
        raw("PUT", f"/gtt/triggers/{trigger_id}", data=form), kite_mock("gtt_modify_order.json")
    )
    second = raw("POST", "/gtt/triggers", data=form)["data"]["trigger_id"]
    simulator.set_price("NSE:INFY", 1485.0)  # fires both: results are filled in
    gtts = raw("GET", "/gtt/triggers")
    assert {g["status"] for g in gtts["data"]} == {"triggered"}
    assert_kite_shape(gtts, kite_mock("gtt_get_orders.json"))
    assert_kite_shape(raw("DELETE", f"/gtt/triggers/{second}"), kite_mock("gtt_delete_order.json"))


def test_session_response(
    simulator: SimulatorHandle, kite_mock: Callable[[str], Any], assert_kite_shape: Callable[..., None]
) -> None:
    kite = simulator.info["kite"]
    token = kite_request_token(simulator.info)
    checksum = hashlib.sha256((kite["api_key"] + token + kite["api_secret"]).encode()).hexdigest()
    response = requests.post(
        f"{simulator.url}/session/token",
        data={"api_key": kite["api_key"], "request_token": token, "checksum": checksum},
        headers={"X-Kite-Version": "3"},
        timeout=5,
    )
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    assert_kite_shape(response.json(), kite_mock("generate_session.json"))


def test_the_shape_check_itself_catches_differences(assert_kite_shape: Callable[..., None]) -> None:
    sample = {
        "status": "success",
        "data": [{"a": 1, "b": "x", "c": None}, {"a": 2.5, "b": "y", "c": "z", "d": True}],
    }
    assert_kite_shape({"status": "success", "data": [{"a": 3, "b": None, "c": "q"}]}, sample)
    for wrong in (
        {"status": "success", "data": [{"a": "3", "b": "x", "c": None}]},  # number as a string
        {"status": "success", "data": [{"b": "x", "c": None}]},  # missing key
        {"status": "success", "data": [{"a": 1, "b": "x", "c": None, "e": 0}]},  # unknown key
        {"status": "success", "data": [{"a": None, "b": "x", "c": None}]},  # a null number
        {"status": "success", "data": {"a": 1}},  # object where the sample has a list
    ):
        with pytest.raises(AssertionError):
            assert_kite_shape(wrong, sample)
