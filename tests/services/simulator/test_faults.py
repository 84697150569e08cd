"""Every injectable fault, observed through the official Kite client (sockets: see test_kite_ticker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from tests.services.simulator.conftest import far_limit_buy
from trailstop_gui.simulator.runner import SimulatorHandle


def _fault(handle: SimulatorHandle, **spec: Any) -> dict[str, Any]:
    response = requests.post(f"{handle.url}/_sim/fault", json=spec, headers=handle.control_headers, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, kex.InputException),
        (403, kex.TokenException),
        (429, kex.NetworkException),
        (500, kex.GeneralException),
        (502, kex.DataException),
        (503, kex.NetworkException),
        (504, kex.NetworkException),
    ],
)
def test_http_errors_by_status_raise_the_sdk_exception(
    simulator: SimulatorHandle, kite_client: KiteConnect, status: int, exception: type[Exception]
) -> None:
    _fault(simulator, fault="http_error", status=status, count=2, message="injected")
    for _ in range(2):
        with pytest.raises(exception, match="injected") as caught:
            kite_client.profile()
        assert caught.value.code == status  # type: ignore[attr-defined]
    assert kite_client.profile()["user_id"] == simulator.info["kite"]["user_id"]


def test_http_errors_can_target_one_path_and_method(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    _fault(simulator, fault="http_error", status=503, path="/orders/", method="POST")
    assert kite_client.orders() == []  # GET /orders is untouched
    with pytest.raises(kex.NetworkException):
        far_limit_buy(kite_client)
    assert kite_client.orders() == []  # a "before" error: the order never reached the exchange
    far_limit_buy(kite_client)
    assert len(kite_client.orders()) == 1


def test_an_error_after_the_fact_leaves_the_order_placed(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    _fault(simulator, fault="http_error", status=502, path="/orders/regular", phase="after")
    with pytest.raises(kex.DataException):
        far_limit_buy(kite_client, tag="amb1")
    assert [o["tag"] for o in kite_client.orders()] == ["amb1"]


def test_http_errors_by_probability(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    _fault(simulator, fault="http_error", status=500, probability=0.0, path="/user/profile")
    for _ in range(10):
        kite_client.profile()
    _fault(simulator, fault="clear")
    _fault(simulator, fault="http_error", status=500, probability=1.0, path="/user/profile")
    for _ in range(5):  # no count: it stays until cleared
        with pytest.raises(kex.GeneralException):
            kite_client.profile()
    assert (
        len(
            requests.get(f"{simulator.url}/_sim/fault", headers=simulator.control_headers, timeout=5).json()[
                "requests"
            ]
        )
        == 1
    )
    requests.delete(f"{simulator.url}/_sim/fault", headers=simulator.control_headers, timeout=5)
    kite_client.profile()


@pytest.mark.parametrize("value", [2, "3600", "inf", -1])
def test_a_429_can_carry_retry_after_verbatim(simulator: SimulatorHandle, value: object) -> None:
    _fault(simulator, fault="http_error", status=429, path="/orders", retry_after=value)
    reply = requests.get(f"{simulator.url}/orders", timeout=5)
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == str(value)
    assert requests.get(f"{simulator.url}/orders", timeout=5).status_code != 429  # it fired once


def test_retry_after_must_be_a_printable_value(simulator: SimulatorHandle) -> None:
    for bad in ({"a": 1}, "", "x\r\nSet-Cookie: y", True):
        reply = requests.post(
            f"{simulator.url}/_sim/fault",
            json={"fault": "http_error", "status": 429, "retry_after": bad},
            timeout=5,
        )
        assert reply.status_code == 400, bad


def test_control_paths_are_never_faulted(simulator: SimulatorHandle) -> None:
    _fault(simulator, fault="http_error", status=503, probability=1.0)
    assert (
        requests.get(f"{simulator.url}/_sim/info", headers=simulator.control_headers, timeout=5).status_code
        == 200
    )
    assert requests.get(f"{simulator.url}/orders", timeout=5).status_code == 503


def test_slow_responses_time_the_client_out_after_placing(
    simulator: SimulatorHandle,
    kite_login: Callable[..., KiteConnect],
    wait_until: Callable[..., Any],
) -> None:
    impatient = kite_login(simulator, timeout=0.2)
    _fault(simulator, fault="slow", seconds=0.6, path="/orders/regular")
    with pytest.raises(requests.exceptions.ReadTimeout):
        far_limit_buy(impatient, tag="slow1")
    # The default phase is "after": the order exists, exactly the ambiguous failure an exit must survive.
    assert [o["tag"] for o in impatient.orders()] == ["slow1"]


def test_slow_before_delays_the_request_itself(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    _fault(simulator, fault="slow", seconds=0.3, path="/portfolio/positions", phase="before")
    started = time.monotonic()
    kite_client.positions()
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    kite_client.positions()
    assert time.monotonic() - started < 0.3  # count defaults to one


def test_rejecting_the_next_orders(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    _fault(simulator, fault="reject_orders", count=1, reason="RMS: simulated margin shortfall")
    rejected = far_limit_buy(kite_client)
    history = kite_client.order_history(rejected)
    assert history[-1]["status"] == "REJECTED"
    assert history[-1]["status_message"] == "RMS: simulated margin shortfall"
    accepted = far_limit_buy(kite_client)
    assert kite_client.order_history(accepted)[-1]["status"] == "OPEN"


def test_expiring_tokens_raises_token_exception_until_a_new_login(
    simulator: SimulatorHandle, kite_client: KiteConnect, kite_login: Callable[..., KiteConnect]
) -> None:
    expired_hook: list[bool] = []
    kite_client.set_session_expiry_hook(lambda: expired_hook.append(True))
    assert _fault(simulator, fault="expire_tokens")["expired"] == 1
    with pytest.raises(kex.TokenException) as caught:
        kite_client.positions()
    assert caught.value.code == 403 and expired_hook == [True]
    fresh = kite_login(simulator)
    assert fresh.positions() == {"net": [], "day": []}
    with pytest.raises(kex.TokenException):
        kite_client.orders()


def test_fill_delay(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    _fault(simulator, fault="fill_delay", seconds=0.5)
    started = time.monotonic()
    order_id = kite_client.place_order(
        "regular", "NSE", "ITC", "BUY", 1, "CNC", "MARKET", market_protection=-1
    )
    assert kite_client.order_history(order_id)[-1]["status"] == "OPEN"
    wait_until(lambda: kite_client.order_history(order_id)[-1]["status"] == "COMPLETE", what="delayed fill")
    assert time.monotonic() - started >= 0.5


def test_partial_fills(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    _fault(simulator, fault="partial_fill", ratio=0.5)
    order_id = kite_client.place_order(
        "regular", "NSE", "ITC", "BUY", 10, "MIS", "MARKET", market_protection=-1
    )
    latest = wait_until(
        lambda: (row := kite_client.order_history(order_id)[-1])["filled_quantity"] and row,
        what="partial fill",
    )
    assert (latest["status"], latest["filled_quantity"], latest["pending_quantity"]) == ("OPEN", 5, 5)
    kite_client.cancel_order("regular", order_id)
    final = kite_client.order_history(order_id)[-1]
    assert (final["status"], final["filled_quantity"], final["cancelled_quantity"]) == ("CANCELLED", 5, 5)
    assert kite_client.positions()["net"][0]["quantity"] == 5


def test_price_gap_fills_a_stop_below_its_trigger(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    stop_id = kite_client.place_order(
        "regular", "NSE", "INFY", "SELL", 2, "CNC", "SL-M", trigger_price=1480.0, market_protection=-1
    )
    assert kite_client.order_history(stop_id)[-1]["status"] == "TRIGGER PENDING"
    gap = _fault(simulator, fault="price_gap", symbol="NSE:INFY", percent=-5)
    assert gap["quote"]["ltp"] == 1425.0
    final = wait_until(
        lambda: (row := kite_client.order_history(stop_id)[-1])["status"] == "COMPLETE" and row,
        what="stop fill",
    )
    assert final["average_price"] == gap["quote"]["bid"] < 1480.0


@pytest.mark.parametrize(
    "spec",
    [
        {"fault": "meteor"},
        {"fault": "http_error"},
        {"fault": "http_error", "status": 200},
        {"fault": "http_error", "status": 500, "probability": 2},
        {"fault": "slow", "seconds": -1},
        {"fault": "partial_fill", "ratio": 1},
        {"fault": "drop_ws", "mode": "gently"},
        {"fault": "price_gap", "symbol": "NSE:NOPE", "percent": 5},
        {"fault": "expire_tokens", "broker": "icici"},
        ["not", "an", "object"],
    ],
)
def test_malformed_fault_specs_are_refused(simulator: SimulatorHandle, spec: Any) -> None:
    response = requests.post(
        f"{simulator.url}/_sim/fault", json=spec, headers=simulator.control_headers, timeout=5
    )
    assert response.status_code == 400 and "error" in response.json()
    assert (
        requests.get(f"{simulator.url}/_sim/fault", headers=simulator.control_headers, timeout=5).json()[
            "requests"
        ]
        == []
    )
