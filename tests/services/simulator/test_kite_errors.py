"""Malformed and unauthorised requests get Kite's own envelope and status, never a traceback."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect

from trailstop_gui.simulator.runner import SimulatorHandle

GOOD_ORDER = {
    "exchange": "NSE",
    "tradingsymbol": "INFY",
    "transaction_type": "BUY",
    "quantity": "1",
    "product": "MIS",
    "order_type": "LIMIT",
    "price": "1400",
}


def _headers(kite: KiteConnect) -> dict[str, str]:
    return {"X-Kite-Version": "3", "Authorization": f"token {kite.api_key}:{kite.access_token}"}


def _assert_envelope(response: requests.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert "Traceback" not in response.text
    body = response.json()
    assert body["status"] == "error" and body["error_type"] == error_type and body["data"] is None
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "token", "token onlykey", "token wrongkey:wrongtoken", "Bearer abc", "token :"],
)
def test_bad_tokens_get_403_token_exception(simulator: SimulatorHandle, authorization: str | None) -> None:
    headers = {"X-Kite-Version": "3"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = requests.get(f"{simulator.url}/portfolio/positions", headers=headers, timeout=5)
    _assert_envelope(response, 403, "TokenException")


def test_a_token_of_another_api_key_is_refused(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    headers = {"X-Kite-Version": "3", "Authorization": f"token otherkey:{kite_client.access_token}"}
    _assert_envelope(
        requests.get(f"{simulator.url}/orders", headers=headers, timeout=5), 403, "TokenException"
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"tradingsymbol": "NOSUCH"}, "tradingsymbol"),
        ({"exchange": "XYZ"}, "tradingsymbol"),
        ({"tradingsymbol": None}, "tradingsymbol"),
        ({"quantity": "abc"}, "quantity"),
        ({"quantity": "1.5"}, "quantity"),
        ({"quantity": "0"}, "Quantity"),
        ({"quantity": "-3"}, "Quantity"),
        ({"quantity": None}, "quantity"),
        ({"price": "cheap"}, "price"),
        ({"price": "nan"}, "price"),
        ({"price": None}, "Price"),
        ({"transaction_type": "HODL"}, "transaction_type"),
        ({"product": "XYZ"}, "product"),
        ({"order_type": "STOP"}, "order_type"),
        ({"validity": "GTC"}, "validity"),
        ({"tag": "x" * 21}, "tag"),
        ({"tradingsymbol": "NIFTY 50"}, "not tradable"),
    ],
)
def test_bad_order_fields_get_input_exception(
    simulator: SimulatorHandle, kite_client: KiteConnect, change: dict[str, Any], words: str
) -> None:
    form = {k: v for k, v in {**GOOD_ORDER, **change}.items() if v is not None}
    response = requests.post(
        f"{simulator.url}/orders/regular", data=form, headers=_headers(kite_client), timeout=5
    )
    assert words in _assert_envelope(response, 400, "InputException")["message"]
    assert kite_client.orders() == []


def test_malformed_bodies(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    headers = _headers(kite_client)
    as_json = requests.post(f"{simulator.url}/orders/regular", json=GOOD_ORDER, headers=headers, timeout=5)
    _assert_envelope(as_json, 400, "InputException")
    garbage = requests.post(
        f"{simulator.url}/orders/regular",
        data=b"\xff\xfe\x00garbage=%%%",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    _assert_envelope(garbage, 400, "InputException")
    huge = requests.post(
        f"{simulator.url}/orders/regular", data={"tag": "x" * (2 << 20)}, headers=headers, timeout=5
    )
    assert huge.status_code == 413 and huge.json()["status"] == "error"
    bad_variety = requests.post(
        f"{simulator.url}/orders/bracket", data=GOOD_ORDER, headers=headers, timeout=5
    )
    _assert_envelope(bad_variety, 400, "InputException")
    assert kite_client.orders() == []


def test_unknown_routes_methods_and_orders(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    headers = _headers(kite_client)
    assert _assert_envelope(requests.get(f"{simulator.url}/nope", timeout=5), 404, "GeneralException")
    _assert_envelope(
        requests.patch(f"{simulator.url}/orders", headers=headers, timeout=5), 405, "GeneralException"
    )
    _assert_envelope(
        requests.get(f"{simulator.url}/orders/123", headers=headers, timeout=5), 400, "InputException"
    )
    _assert_envelope(
        requests.get(f"{simulator.url}/quote", headers=headers, timeout=5), 400, "InputException"
    )  # no instruments asked for


def test_a_crashing_handler_answers_500_in_the_envelope(
    simulator: SimulatorHandle, kite_client: KiteConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(simulator.sim.exchange, "orders", broken)
    body = _assert_envelope(
        requests.get(f"{simulator.url}/orders", headers=_headers(kite_client), timeout=5),
        500,
        "GeneralException",
    )
    assert "boom" not in body["message"]


def test_bad_session_requests(simulator: SimulatorHandle) -> None:
    kite = simulator.info["kite"]
    missing = requests.post(f"{simulator.url}/session/token", data={"api_key": kite["api_key"]}, timeout=5)
    _assert_envelope(missing, 400, "InputException")
    unknown = requests.post(
        f"{simulator.url}/session/token",
        data={"api_key": kite["api_key"], "request_token": "x" * 32, "checksum": "0" * 64},
        timeout=5,
    )
    _assert_envelope(unknown, 403, "TokenException")
