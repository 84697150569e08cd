"""The official kiteconnect client against the simulator's Kite facade."""

from __future__ import annotations

import datetime as dt
import hashlib
import html.parser
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from tests.services.simulator.conftest import far_limit_buy
from trailstop_gui.simulator.login_flow import LoginFailed, kite_request_token, submit_login_form
from trailstop_gui.simulator.runner import SimulatorHandle


class _Inputs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(a)
        if tag == "input":
            self.inputs[str(a.get("name"))] = str(a.get("type"))


def test_login_page_is_a_plain_form_and_redirects_with_a_request_token(simulator: SimulatorHandle) -> None:
    kite = simulator.info["kite"]
    client = KiteConnect(kite["api_key"])
    client._default_login_uri = kite["login_url"]
    page = requests.get(client.login_url(), timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    parser = _Inputs()
    parser.feed(page.text)
    assert parser.forms and parser.forms[0]["method"] == "post"
    assert parser.inputs["user_id"] == "text" and parser.inputs["password"] == "password"

    answer = requests.post(
        kite["login_url"],
        data={"api_key": kite["api_key"], "user_id": kite["user_id"], "password": kite["password"]},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(kite["redirect_url"] + "?")
    params = dict(p.split("=", 1) for p in location.split("?", 1)[1].split("&"))
    assert (
        params["action"] == "login" and params["status"] == "success" and len(params["request_token"]) == 32
    )
    landing = requests.get(location, timeout=5)
    assert landing.status_code == 200 and "close this window" in landing.text


def test_wrong_password_and_unknown_api_key_do_not_log_in(simulator: SimulatorHandle) -> None:
    kite = simulator.info["kite"]
    page = f"{kite['login_url']}?api_key={kite['api_key']}&v=3"
    with pytest.raises(LoginFailed):
        submit_login_form(page, kite["user_id"], "wrong")
    assert requests.get(f"{kite['login_url']}?api_key=nope&v=3", timeout=5).status_code == 400


def test_generate_session_checks_the_checksum_and_uses_the_token_once(simulator: SimulatorHandle) -> None:
    kite = simulator.info["kite"]
    client = KiteConnect(kite["api_key"], root=kite["api_root"])
    token = kite_request_token(simulator.info)
    with pytest.raises(kex.TokenException, match="checksum"):
        client.generate_session(token, "not-the-secret")
    session = client.generate_session(token, kite["api_secret"])
    assert isinstance(session["login_time"], dt.datetime)
    assert session["user_id"] == kite["user_id"] and client.access_token == session["access_token"]
    assert client.profile()["user_id"] == kite["user_id"]
    with pytest.raises(kex.TokenException, match="invalid or has expired"):
        client.generate_session(token, kite["api_secret"])
    checksum = hashlib.sha256((kite["api_key"] + token + kite["api_secret"]).encode()).hexdigest()
    assert len(checksum) == 64  # the same recipe the SDK uses; reuse is what failed above
    issued = requests.get(
        f"{simulator.url}/_sim/sessions", headers=simulator.control_headers, timeout=5
    ).json()
    assert [s["access_token"] for s in issued if s["request_token"] == token] == [session["access_token"]]


def test_logout_invalidates_the_token(kite_client: KiteConnect) -> None:
    assert kite_client.invalidate_access_token() is True
    with pytest.raises(kex.TokenException):
        kite_client.orders()


def test_order_round_trip(
    kite_client: KiteConnect, simulator: SimulatorHandle, wait_until: Callable[..., Any]
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    order_id = kite_client.place_order(
        "regular", "NSE", "INFY", "BUY", 3, "MIS", "MARKET", market_protection=-1, tag="ts42"
    )
    assert isinstance(order_id, str) and order_id.isdigit()
    wait_until(lambda: kite_client.orders()[-1]["status"] == "COMPLETE", what="fill")
    (row,) = kite_client.orders()
    assert row["order_id"] == order_id and row["tag"] == "ts42" and "ts42" in row["tags"]
    assert row["average_price"] == 1500.05 and row["filled_quantity"] == 3
    assert isinstance(row["order_timestamp"], dt.datetime)
    history = kite_client.order_history(order_id)
    assert [h["status"] for h in history] == [
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "OPEN",
        "COMPLETE",
    ]
    (trade,) = kite_client.order_trades(order_id)
    assert trade["quantity"] == 3 and trade["average_price"] == 1500.05
    assert kite_client.trades() == [trade]
    net = {p["tradingsymbol"]: p for p in kite_client.positions()["net"]}
    assert net["INFY"]["quantity"] == 3 and net["INFY"]["product"] == "MIS"
    assert kite_client.positions()["day"][0]["quantity"] == 3

    exit_id = kite_client.place_order(
        "regular", "NSE", "INFY", "SELL", 3, "MIS", "MARKET", market_protection=-1, tag="ts42x"
    )
    wait_until(lambda: kite_client.order_history(exit_id)[-1]["status"] == "COMPLETE", what="exit fill")
    flat = kite_client.positions()["net"][0]
    assert flat["quantity"] == 0 and flat["realised"] == pytest.approx(-0.3)


def test_modify_and_cancel(kite_client: KiteConnect) -> None:
    order_id = far_limit_buy(kite_client)
    assert kite_client.modify_order("regular", order_id, price=501.0, quantity=2) == order_id
    latest = kite_client.order_history(order_id)[-1]
    assert (latest["price"], latest["quantity"], latest["status"]) == (501.0, 2, "OPEN")
    assert kite_client.cancel_order("regular", order_id) == order_id
    assert kite_client.orders()[0]["status"] == "CANCELLED"
    with pytest.raises(kex.InputException, match="cancelled"):
        kite_client.modify_order("regular", order_id, price=502.0)
    with pytest.raises(kex.InputException, match="order_id"):
        kite_client.cancel_order("regular", "999")


def test_holdings_quotes_and_user(kite_client: KiteConnect, simulator: SimulatorHandle) -> None:
    holdings = {h["tradingsymbol"]: h for h in kite_client.holdings()}
    assert holdings["INFY"]["quantity"] == 10 and holdings["INFY"]["isin"] == "INE009A01021"
    simulator.set_price("NSE:ITC", 420.0, bid=419.9, ask=420.1)
    ltp = kite_client.ltp("NSE:ITC", "NSE:NOPE", "BSE:ITC")
    assert ltp == {"NSE:ITC": {"instrument_token": 424961, "last_price": 420.0}}
    quote = kite_client.quote(["NSE:ITC"])["NSE:ITC"]
    assert quote["depth"]["buy"][0]["price"] == 419.9 and quote["depth"]["sell"][0]["price"] == 420.1
    assert isinstance(quote["timestamp"], dt.datetime) and len(quote["depth"]["buy"]) == 5
    assert kite_client.ohlc("NSE:ITC")["NSE:ITC"]["last_price"] == 420.0
    assert kite_client.margins()["equity"]["enabled"] is True
    assert kite_client.margins("commodity")["net"] == 100000.0
    with pytest.raises(kex.InputException):
        kite_client.margins("crypto")


def test_instruments_csv(kite_client: KiteConnect, simulator: SimulatorHandle) -> None:
    response = requests.get(f"{simulator.url}/instruments", timeout=5)
    assert response.headers["Content-Type"].startswith("text/csv")
    header = response.text.splitlines()[0]
    assert header == (
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
        "tick_size,lot_size,instrument_type,segment,exchange"
    )
    rows = kite_client.instruments()
    assert len(rows) == len(simulator.sim.instruments)
    by_symbol = {(r["exchange"], r["tradingsymbol"]): r for r in rows}
    infy = by_symbol[("NSE", "INFY")]
    assert (infy["instrument_token"], infy["tick_size"], infy["lot_size"], infy["segment"]) == (
        408065,
        0.05,
        1,
        "NSE",
    )
    assert infy["expiry"] == ""
    nfo = kite_client.instruments("NFO")
    assert nfo and all(r["exchange"] == "NFO" and isinstance(r["expiry"], dt.date) for r in nfo)
    assert {r["segment"] for r in nfo} == {"NFO-FUT", "NFO-OPT"}
    assert by_symbol[("NSE", "NIFTY 50")]["segment"] == "INDICES"


def test_gtt_lifecycle_and_trigger(kite_client: KiteConnect, simulator: SimulatorHandle) -> None:
    simulator.set_price("NSE:INFY", 1500.0)
    leg = {
        "transaction_type": "SELL",
        "quantity": 2,
        "order_type": "LIMIT",
        "product": "CNC",
        "price": 1479.0,
    }
    placed = kite_client.place_gtt("single", "INFY", "NSE", [1480.0], 1500.0, [leg])
    trigger_id = placed["trigger_id"]
    gtt = kite_client.get_gtt(trigger_id)
    assert gtt["status"] == "active" and gtt["condition"]["trigger_values"] == [1480.0]
    assert kite_client.modify_gtt(trigger_id, "single", "INFY", "NSE", [1470.0], 1500.0, [leg]) == {
        "trigger_id": trigger_id
    }
    simulator.set_price("NSE:INFY", 1475.0)
    assert kite_client.get_gtt(trigger_id)["status"] == "active"
    simulator.set_price("NSE:INFY", 1469.0)
    fired = kite_client.get_gtt(trigger_id)
    assert fired["status"] == "triggered"
    result = fired["orders"][0]["result"]
    assert result["order_result"]["status"] == "success" and result["triggered_at"] == 1469.0
    placed_order = kite_client.order_history(result["order_result"]["order_id"])[-1]
    assert (placed_order["order_type"], placed_order["price"], placed_order["transaction_type"]) == (
        "LIMIT",
        1479.0,
        "SELL",
    )
    oco = kite_client.place_gtt(
        "two-leg", "INFY", "NSE", [1400.0, 1600.0], 1469.0, [leg, {**leg, "price": 1601.0}]
    )
    assert [g["id"] for g in kite_client.get_gtts()] == [oco["trigger_id"], trigger_id]
    assert kite_client.delete_gtt(oco["trigger_id"]) == {"trigger_id": oco["trigger_id"]}
    with pytest.raises(kex.InputException):
        kite_client.get_gtt(oco["trigger_id"])


def test_gtt_rejects_bad_input(kite_client: KiteConnect, simulator: SimulatorHandle) -> None:
    headers = {
        "X-Kite-Version": "3",
        "Authorization": f"token {kite_client.api_key}:{kite_client.access_token}",
    }
    for form in (
        {"type": "single", "condition": "{not json", "orders": "[]"},
        {"type": "three-leg", "condition": "{}", "orders": "[]"},
        {
            "type": "single",
            "condition": '{"exchange":"NSE","tradingsymbol":"NOPE","trigger_values":[1],"last_price":2}',
            "orders": "[]",
        },
    ):
        response = requests.post(f"{simulator.url}/gtt/triggers", data=form, headers=headers, timeout=5)
        assert response.status_code == 400
        assert response.json()["error_type"] == "InputException"


def test_market_orders_need_market_protection(kite_client: KiteConnect) -> None:
    for order_type, extra in (
        ("MARKET", {}),
        ("SL-M", {"trigger_price": 700.0}),
        ("MARKET", {"market_protection": 0}),
    ):
        with pytest.raises(kex.InputException, match="market protection"):
            kite_client.place_order("regular", "NSE", "SBIN", "SELL", 1, "MIS", order_type, **extra)
    assert kite_client.orders() == []


def test_more_than_ten_orders_a_second_get_429(kite_client: KiteConnect) -> None:
    accepted = 0
    started = time.monotonic()
    with pytest.raises(kex.NetworkException) as caught:
        for _ in range(30):
            far_limit_buy(kite_client)
            accepted += 1
    elapsed = time.monotonic() - started
    assert caught.value.code == 429
    assert accepted == 10 if elapsed < 1.0 else accepted >= 10
    assert len(kite_client.orders()) == accepted
