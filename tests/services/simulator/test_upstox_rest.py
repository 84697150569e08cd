"""The official upstox_client SDK against the simulator's Upstox facade: login, orders, portfolio, quotes."""

from __future__ import annotations

import html.parser
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import upstox_client
from hypothesis import given, settings
from hypothesis import strategies as st
from upstox_client.rest import ApiException

from tests.services.simulator.upstox_support import (
    INFY_KEY,
    ITC_KEY,
    NIFTY_KEY,
    SBIN_KEY,
    bearer,
    error_of,
    exchange_code,
    fault,
    login,
    sdk_client,
)
from trailstop_gui.simulator import upstox_api
from trailstop_gui.simulator.login_flow import LoginFailed, submit_login_form
from trailstop_gui.simulator.runner import SimulatorHandle
from trailstop_gui.simulator.upstox_login import upstox_code


@pytest.fixture
def token(simulator: SimulatorHandle) -> str:
    return login(simulator)


@pytest.fixture
def client(simulator: SimulatorHandle, token: str) -> Any:
    return sdk_client(simulator, token)


def _order(**overrides: Any) -> Any:
    spec: dict[str, Any] = {
        "quantity": 1,
        "product": "I",
        "validity": "DAY",
        "price": 500.0,
        "tag": "ts1",
        "instrument_token": SBIN_KEY,
        "order_type": "LIMIT",
        "transaction_type": "BUY",
        "disclosed_quantity": 0,
        "trigger_price": 0.0,
        "is_amo": False,
    }
    spec.update(overrides)
    return upstox_client.PlaceOrderRequest(**spec)


def _order_v3(slice_it: bool = False, **overrides: Any) -> Any:
    return upstox_client.PlaceOrderV3Request(**_order(**overrides).to_dict(), slice=slice_it)


class _Inputs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, tuple[str, str]] = {}
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(a)
        elif tag == "input":
            self.inputs[str(a.get("name"))] = (str(a.get("type")), str(a.get("value") or ""))


# -- login -----------------------------------------------------------------------------------------


def test_dialog_is_a_plain_form_that_redirects_with_code_and_state(simulator: SimulatorHandle) -> None:
    upstox = simulator.info["upstox"]
    query = {
        "response_type": "code",
        "client_id": upstox["client_id"],
        "redirect_uri": upstox["redirect_uri"],
        "state": "xyz42",
    }
    page = requests.get(upstox["dialog_url"], params=query, timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    parser = _Inputs()
    parser.feed(page.text)
    assert parser.forms and parser.forms[0]["method"] == "post"
    assert parser.inputs["user_id"][0] == "text" and parser.inputs["password"][0] == "password"
    assert parser.inputs["client_id"] == ("hidden", upstox["client_id"])
    assert parser.inputs["redirect_uri"] == ("hidden", upstox["redirect_uri"])
    assert parser.inputs["state"] == ("hidden", "xyz42")

    form = {name: value for name, (_, value) in parser.inputs.items()}
    form.update(user_id=upstox["user_id"], password=upstox["password"])
    answer = requests.post(upstox["dialog_url"], data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(upstox["redirect_uri"] + "?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["state"] == "xyz42" and len(params["code"]) == 6
    assert requests.get(location, timeout=5).status_code == 200


def test_dialog_refuses_a_wrong_password_and_an_unknown_app(simulator: SimulatorHandle) -> None:
    upstox = simulator.info["upstox"]
    page = f"{upstox['dialog_url']}?response_type=code&client_id={upstox['client_id']}"
    page += f"&redirect_uri={upstox['redirect_uri']}"
    with pytest.raises(LoginFailed):
        submit_login_form(page, upstox["user_id"], "wrong")
    unknown = requests.get(
        upstox["dialog_url"],
        params={"response_type": "code", "client_id": "nope", "redirect_uri": upstox["redirect_uri"]},
        timeout=5,
    )
    assert unknown.status_code == 400
    assert unknown.json()["errors"][0]["errorCode"] == "UDAPI100069"


def test_token_exchange_checks_the_secret_and_uses_the_code_once(simulator: SimulatorHandle) -> None:
    upstox = simulator.info["upstox"]
    code = upstox_code(simulator.info)
    with pytest.raises(ApiException) as wrong_secret:
        exchange_code(simulator, code, client_secret="not-the-secret")
    assert wrong_secret.value.status == 401 and error_of(wrong_secret.value)["errorCode"] == "UDAPI100016"
    with pytest.raises(ApiException) as wrong_redirect:
        exchange_code(simulator, code, redirect_uri="http://127.0.0.1:1/elsewhere")
    assert wrong_redirect.value.status == 400

    reply = exchange_code(simulator, code)
    assert isinstance(reply, upstox_client.TokenResponse)
    assert reply.user_id == upstox["user_id"] and reply.access_token.count(".") == 2
    assert set(reply.order_types) == {"MARKET", "LIMIT", "SL", "SL-M"}
    with pytest.raises(ApiException) as reused:
        exchange_code(simulator, code)
    assert reused.value.status == 400 and error_of(reused.value)["errorCode"] == "UDAPI100057"

    issued = requests.get(
        f"{simulator.url}/_sim/sessions", headers=simulator.control_headers, timeout=5
    ).json()
    assert [s["access_token"] for s in issued if s.get("code") == code] == [reply.access_token]


def test_token_reply_is_not_enveloped(simulator: SimulatorHandle) -> None:
    upstox = simulator.info["upstox"]
    raw = requests.post(
        f"{upstox['api_root']}/v2/login/authorization/token",
        data={
            "code": upstox_code(simulator.info),
            "client_id": upstox["client_id"],
            "client_secret": upstox["client_secret"],
            "redirect_uri": upstox["redirect_uri"],
            "grant_type": "authorization_code",
        },
        headers={"Api-Version": "2.0", "Accept": "application/json"},
        timeout=5,
    ).json()
    assert set(raw) == {
        "email",
        "exchanges",
        "products",
        "broker",
        "user_id",
        "user_name",
        "order_types",
        "user_type",
        "poa",
        "is_active",
        "access_token",
        "extended_token",
    }
    assert raw["broker"] == "UPSTOX" and raw["is_active"] is True


# -- orders ----------------------------------------------------------------------------------------


def test_v2_market_order_round_trip(
    client: Any, simulator: SimulatorHandle, wait_until: Callable[..., Any]
) -> None:
    orders = upstox_client.OrderApi(client)
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    placed = orders.place_order(
        _order(instrument_token=INFY_KEY, quantity=3, order_type="MARKET", price=0.0, tag="ts42"), "2.0"
    )
    order_id = placed.data.order_id
    assert placed.status == "success" and order_id.isdigit()
    done = wait_until(lambda: orders.get_order_status(order_id=order_id).data.status == "complete")
    assert done
    detail = orders.get_order_status(order_id=order_id).data
    assert (detail.tag, detail.product, detail.order_type, detail.transaction_type) == (
        "ts42",
        "I",
        "MARKET",
        "BUY",
    )
    assert (detail.average_price, detail.filled_quantity, detail.pending_quantity) == (1500.05, 3, 0)
    assert detail.instrument_token == INFY_KEY and detail.trading_symbol == "INFY"
    history = orders.get_order_details("2.0", order_id=order_id).data
    assert [h.status for h in history] == [
        "put order req received",
        "validation pending",
        "open pending",
        "open",
        "complete",
    ]
    assert [o.order_id for o in orders.get_order_details("2.0", tag="ts42").data] == [order_id] * 5
    (row,) = orders.get_order_book("2.0").data
    assert row.order_id == order_id and row.status == "complete" and row.variety == "SIMPLE"
    (fill,) = orders.get_trades_by_order(order_id, "2.0").data
    assert (fill.quantity, fill.average_price, fill.order_type) == (3, 1500.05, "MARKET")
    assert [t.trade_id for t in orders.get_trade_history("2.0").data] == [fill.trade_id]

    (position,) = upstox_client.PortfolioApi(client).get_positions("2.0").data
    assert (position.instrument_token, position.product, position.quantity) == (INFY_KEY, "I", 3)
    assert position.day_buy_price == 1500.05 and position.last_price == 1500.0


def test_v3_place_modify_cancel_with_latency(client: Any) -> None:
    v3 = upstox_client.OrderApiV3(client)
    orders = upstox_client.OrderApi(client)
    placed = v3.place_order(_order_v3(tag="v3tag"))
    assert placed.status == "success" and isinstance(placed.metadata.latency, int)
    (order_id,) = placed.data.order_ids
    assert orders.get_order_status(order_id=order_id).data.status == "open"

    modified = v3.modify_order(
        upstox_client.ModifyOrderRequest(
            quantity=2, validity="DAY", price=501.0, order_id=order_id, order_type="LIMIT", trigger_price=0.0
        )
    )
    assert modified.data.order_id == order_id and modified.metadata.latency >= 1
    latest = orders.get_order_status(order_id=order_id).data
    assert (latest.price, latest.quantity, latest.status, latest.tag) == (501.0, 2, "open", "v3tag")

    cancelled = v3.cancel_order(order_id)
    assert cancelled.data.order_id == order_id
    assert orders.get_order_status(order_id=order_id).data.status == "cancelled"
    with pytest.raises(ApiException) as again:
        v3.cancel_order(order_id)
    assert again.value.status == 400 and error_of(again.value)["errorCode"] == "UDAPI100040"
    with pytest.raises(ApiException) as unknown:
        orders.cancel_order("999", "2.0")
    assert error_of(unknown.value)["errorCode"] == "UDAPI100010"


def test_v2_modify_and_cancel_and_a_stop_loss(client: Any, simulator: SimulatorHandle) -> None:
    orders = upstox_client.OrderApi(client)
    simulator.set_price("NSE:SBIN", 800.0)
    stop = orders.place_order(
        _order(
            order_type="SL-M",
            transaction_type="SELL",
            price=0.0,
            trigger_price=790.0,
            product="D",
            quantity=2,
        ),
        "2.0",
    ).data.order_id
    assert orders.get_order_status(order_id=stop).data.status == "trigger pending"
    body = upstox_client.ModifyOrderRequest(
        validity="DAY", price=0.0, order_id=stop, order_type="SL-M", trigger_price=795.0
    )
    assert orders.modify_order(body, "2.0").data.order_id == stop
    latest = orders.get_order_status(order_id=stop).data
    assert (latest.trigger_price, latest.quantity, latest.status) == (795.0, 2, "trigger pending")
    simulator.set_price("NSE:SBIN", 794.0, bid=793.95, ask=794.05)
    done = orders.get_order_status(order_id=stop).data
    assert (done.status, done.average_price, done.product) == ("complete", 793.95, "D")
    assert orders.cancel_order(orders.place_order(_order(), "2.0").data.order_id, "2.0").status == "success"


def test_v3_slices_an_order_above_the_freeze_quantity(client: Any, simulator: SimulatorHandle) -> None:
    nifty_fut = next(i for i in simulator.sim.instruments if i.symbol.endswith("FUT") and i.name == "NIFTY")
    quantity = nifty_fut.freeze_quantity * 2 + nifty_fut.lot_size
    placed = upstox_client.OrderApiV3(client).place_order(
        _order_v3(
            instrument_token=nifty_fut.upstox_key,
            quantity=quantity,
            product="D",
            price=24000.0,
            slice_it=True,
        )
    )
    assert len(placed.data.order_ids) == 3
    book = {o.order_id: o for o in upstox_client.OrderApi(client).get_order_book("2.0").data}
    assert [book[i].quantity for i in placed.data.order_ids] == [
        nifty_fut.freeze_quantity,
        nifty_fut.freeze_quantity,
        nifty_fut.lot_size,
    ]
    assert all(book[i].product == "D" and book[i].exchange == "NFO" for i in placed.data.order_ids)


def test_mtf_product_is_kept(client: Any) -> None:
    order_id = upstox_client.OrderApi(client).place_order(_order(product="MTF"), "2.0").data.order_id
    assert upstox_client.OrderApi(client).get_order_status(order_id=order_id).data.product == "MTF"


# -- portfolio, quotes, user -----------------------------------------------------------------------


def test_holdings_ltp_and_profile(client: Any, simulator: SimulatorHandle) -> None:
    holdings = {h.trading_symbol: h for h in upstox_client.PortfolioApi(client).get_holdings("2.0").data}
    infy = holdings["INFY"]
    assert (infy.quantity, infy.isin, infy.instrument_token, infy.product) == (
        10,
        "INE009A01021",
        INFY_KEY,
        "D",
    )
    simulator.set_price("NSE:ITC", 420.0, bid=419.9, ask=420.1)
    quotes = (
        upstox_client.MarketQuoteApi(client).ltp(f"{ITC_KEY},{NIFTY_KEY},NSE_EQ|INE000000000", "2.0").data
    )
    assert set(quotes) == {"NSE_EQ:ITC", "NSE_INDEX:Nifty 50"}
    assert (quotes["NSE_EQ:ITC"].last_price, quotes["NSE_EQ:ITC"].instrument_token) == (420.0, ITC_KEY)
    profile = upstox_client.UserApi(client).get_profile("2.0").data
    assert profile.user_id == simulator.info["upstox"]["user_id"] and profile.broker == "UPSTOX"


def test_the_apps_own_adapter_works_against_the_simulator(simulator: SimulatorHandle) -> None:
    from trailstop_gui.models.domain import Product, Side
    from trailstop_gui.services.brokers.base import OrderRequest, OrderStatus
    from trailstop_gui.services.brokers.upstox import UpstoxBroker

    upstox = simulator.info["upstox"]
    broker = UpstoxBroker(upstox["client_id"], api_root=upstox["api_root"], order_root=upstox["order_root"])
    session = broker.exchange_code(
        upstox_code(simulator.info), upstox["client_secret"], upstox["redirect_uri"]
    )
    assert session.user_id == upstox["user_id"]
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    order_id = broker.place_order(
        OrderRequest("INFY", "NSE", Side.BUY, 2, Product.MIS, instrument=INFY_KEY, tag="app1")
    )
    order = broker.order(order_id)
    assert order.status is OrderStatus.COMPLETE and order.tag == "app1" and order.product is Product.MIS
    assert broker.ltp([INFY_KEY]) == {INFY_KEY: 1500.0}
    assert [p.quantity for p in broker.positions()] == [2]


def test_instrument_master_is_served_like_upstoxs_asset_host(simulator: SimulatorHandle) -> None:
    from trailstop_gui.services.brokers.upstox import UpstoxBroker

    upstox = simulator.info["upstox"]
    master_url = f"{simulator.url}/market-quote/instruments/exchange/complete.json.gz"
    raw = requests.get(master_url, timeout=5)
    assert raw.status_code == 200 and raw.content[:2] == b"\x1f\x8b"  # gzipped, as the real files are
    broker = UpstoxBroker(upstox["client_id"], api_root=upstox["api_root"], instruments_url=master_url)
    by_key = {i.instrument: i for i in broker.instruments()}
    assert len(by_key) == len(simulator.sim.instruments)
    infy = by_key[INFY_KEY]
    assert (infy.symbol, infy.tick_size, infy.lot_size, infy.segment) == ("INFY", 0.05, 1, "NSE_EQ")
    future = next(i for i in simulator.sim.instruments if i.instrument_type == "FUT" and i.name == "NIFTY")
    row = by_key[future.upstox_key]
    assert (row.expiry, row.lot_size, row.instrument_type) == (future.expiry, future.lot_size, "FUT")
    assert by_key[NIFTY_KEY].instrument_type == "INDEX"
    missing = requests.get(f"{simulator.url}/market-quote/instruments/exchange/MCX.json.gz", timeout=5)
    assert missing.status_code == 404 and missing.json()["errors"][0]["errorCode"] == "UDAPI100060"


# -- errors and faults -----------------------------------------------------------------------------


def test_expired_tokens_get_401(client: Any, simulator: SimulatorHandle) -> None:
    portfolio = upstox_client.PortfolioApi(client)
    assert portfolio.get_positions("2.0").status == "success"
    assert fault(simulator, fault="expire_tokens", broker="upstox")["expired"] == 1
    with pytest.raises(ApiException) as caught:
        portfolio.get_positions("2.0")
    assert caught.value.status == 401 and error_of(caught.value)["errorCode"] == "UDAPI100050"
    with pytest.raises(ApiException) as order_call:
        upstox_client.OrderApiV3(client).place_order(_order_v3())
    assert order_call.value.status == 401
    fresh = sdk_client(simulator, login(simulator))
    assert upstox_client.PortfolioApi(fresh).get_positions("2.0").data == []


def test_http_error_and_slow_faults_reach_upstox_paths(client: Any, simulator: SimulatorHandle) -> None:
    orders = upstox_client.OrderApi(client)
    fault(simulator, fault="http_error", status=503, path="/v2/order/retrieve-all", message="injected")
    with pytest.raises(ApiException) as caught:
        orders.get_order_book("2.0")
    assert caught.value.status == 503 and error_of(caught.value)["message"] == "injected"
    assert orders.get_order_book("2.0").data == []  # the fault fired once

    fault(simulator, fault="http_error", status=500, path="/v3/order/place", phase="after")
    with pytest.raises(ApiException) as after:
        upstox_client.OrderApiV3(client).place_order(_order_v3(tag="ambig"))
    assert after.value.status == 500 and error_of(after.value)["errorCode"] == "UDAPI100500"
    assert [o.tag for o in orders.get_order_book("2.0").data] == ["ambig"]  # carried out, then failed

    fault(simulator, fault="slow", seconds=0.8, path="/v2/user/profile")
    impatient = sdk_client(simulator, client.configuration.access_token)
    impatient.rest_client.pool_manager.connection_pool_kw["retries"] = 0  # urllib3 would retry the GET
    started = time.monotonic()
    with pytest.raises(Exception, match="[Tt]imeout|timed out"):
        upstox_client.UserApi(impatient).get_profile("2.0", _request_timeout=(2, 0.2))
    assert time.monotonic() - started < 0.7


def test_rejection_fault_shows_as_a_rejected_order(client: Any, simulator: SimulatorHandle) -> None:
    fault(simulator, fault="reject_orders", reason="RMS: blocked by the test", broker="upstox")
    orders = upstox_client.OrderApi(client)
    order_id = orders.place_order(_order(), "2.0").data.order_id
    detail = orders.get_order_status(order_id=order_id).data
    assert (detail.status, detail.status_message) == ("rejected", "RMS: blocked by the test")
    assert (
        orders.get_order_status(order_id=orders.place_order(_order(), "2.0").data.order_id).data.status
        == "open"
    )


def test_more_than_ten_orders_a_second_get_429(client: Any) -> None:
    orders = upstox_client.OrderApi(client)
    accepted = 0
    started = time.monotonic()
    with pytest.raises(ApiException) as caught:
        for _ in range(501):  # the 500-a-minute cap makes a 429 certain even on a very slow machine
            orders.place_order(_order(), "2.0")
            accepted += 1
    elapsed = time.monotonic() - started
    assert caught.value.status == 429 and error_of(caught.value)["errorCode"] == "UDAPI10005"
    assert accepted == 10 if elapsed < 1.0 else accepted >= 10
    assert len(orders.get_order_book("2.0").data) == accepted


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v2/order/place", "not json", 400, "UDAPI100038"),
        ("POST", "/v2/order/place", {"quantity": 1}, 400, "UDAPI1026"),
        ("POST", "/v2/order/place", {"instrument_token": "NSE_EQ|NOPE", "quantity": 1}, 400, "UDAPI100011"),
        ("POST", "/v3/order/place", {"instrument_token": SBIN_KEY, "quantity": "two"}, 400, "UDAPI100038"),
        (
            "POST",
            "/v2/order/place",
            {
                "instrument_token": NIFTY_KEY,
                "quantity": 1,
                "product": "I",
                "order_type": "MARKET",
                "validity": "DAY",
                "transaction_type": "BUY",
            },
            400,
            "UDAPI100038",
        ),
        (
            "POST",
            "/v2/order/place",
            {
                "instrument_token": SBIN_KEY,
                "quantity": 1,
                "product": "I",
                "order_type": "SLM",
                "validity": "DAY",
                "transaction_type": "BUY",
            },
            400,
            "UDAPI1056",
        ),
        ("PUT", "/v2/order/modify", {"order_id": "1", "order_type": "LIMIT"}, 400, "UDAPI1007"),
        (
            "PUT",
            "/v3/order/modify",
            {"order_id": "a b", "order_type": "LIMIT", "validity": "DAY"},
            400,
            "UDAPI1010",
        ),
        ("DELETE", "/v2/order/cancel", None, 400, "UDAPI1023"),
        ("GET", "/v2/order/details?order_id=424242", None, 400, "UDAPI100010"),
        ("GET", "/v2/order/history", None, 400, "UDAPI1023"),
        ("GET", "/v2/market-quote/ltp?symbol=INFY", None, 400, "UDAPI100011"),
        ("GET", "/v2/feed/portfolio-stream-feed/authorize?update_types=nope", None, 400, "UDAPI100038"),
        ("GET", "/v2/no/such/thing", None, 404, "UDAPI100060"),
        ("GET", "/v2/order/place", None, 405, "UDAPI10000"),
    ],
)
def test_malformed_requests_get_the_upstox_envelope(
    simulator: SimulatorHandle, token: str, method: str, path: str, body: Any, status: int, code: str
) -> None:
    kwargs: dict[str, Any] = {"headers": bearer(token), "timeout": 5}
    if isinstance(body, str):
        kwargs["data"] = body
    elif body is not None:
        kwargs["json"] = body
    response = requests.request(method, simulator.url + path, **kwargs)
    assert response.status_code == status, response.text
    envelope = response.json()
    assert envelope["status"] == "error" and envelope["errors"][0]["errorCode"] == code
    assert {"message", "propertyPath", "invalidValue"} <= set(envelope["errors"][0])


def test_requests_without_a_valid_bearer_token_get_401(simulator: SimulatorHandle) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "token a:b"}):
        response = requests.get(f"{simulator.url}/v2/order/retrieve-all", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json()["errors"][0]["errorCode"] == "UDAPI100050"


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_PLACE = {
    "quantity": 1,
    "product": "I",
    "validity": "DAY",
    "price": 500.0,
    "tag": "fz",
    "instrument_token": SBIN_KEY,
    "order_type": "LIMIT",
    "transaction_type": "BUY",
    "disclosed_quantity": 0,
    "trigger_price": 0.0,
    "is_amo": False,
}
_FIELDS = [*_PLACE, "order_id", "slice", "market_protection"]
_EXTREMES = st.sampled_from([1e308, -1e308, float("inf"), 1e-300, 2**63, -1, 0.049999, 10**12]) | st.floats()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", 1e308),
        ("price", 0.049999),
        ("trigger_price", 1e308),
        ("quantity", 2**63),
        ("quantity", 10**12),
        ("disclosed_quantity", 10**12),
        ("tag", "x" * 41),
    ],
)
def test_extreme_numbers_are_refused_not_crashing(
    simulator: SimulatorHandle, token: str, field: str, value: Any
) -> None:
    body = {**_PLACE, field: value}
    for path in ("/v2/order/place", "/v3/order/place"):
        response = requests.post(simulator.url + path, json=body, headers=bearer(token), timeout=5)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:  # accepted at the gate, then rejected by the exchange's checks
            (order_id,) = response.json()["data"].get("order_ids") or [response.json()["data"]["order_id"]]
            detail = requests.get(
                f"{simulator.url}/v2/order/details",
                params={"order_id": order_id},
                headers=bearer(token),
                timeout=5,
            ).json()["data"]
            assert detail["status"] == "rejected" and detail["status_message"]
        else:
            assert response.json()["errors"][0]["propertyPath"] == field


def test_no_body_makes_the_facade_crash(
    client: Any, simulator: SimulatorHandle, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lift the order rate limit, or most examples would stop at the 429 before any check.
    monkeypatch.setattr(upstox_api, "ORDER_RATE_PER_SECOND", 10**9)
    monkeypatch.setattr(upstox_api, "ORDER_RATE_PER_MINUTE", 10**9)
    resting = upstox_client.OrderApi(client).place_order(_order(), "2.0").data.order_id
    modify = {"order_id": resting, "quantity": 1, "validity": "DAY", "price": 500.0, "order_type": "LIMIT"}
    http = requests.Session()
    http.headers.update(bearer(token))

    # A valid request with one or two fields replaced or dropped reaches the deep checks, not only the
    # first; now and then the whole body is something else.
    @settings(max_examples=150, deadline=None, database=None)
    @given(
        changes=st.dictionaries(
            st.sampled_from(_FIELDS), st.one_of(_json, _EXTREMES, _EXTREMES), min_size=1, max_size=2
        ),
        dropped=st.sets(st.sampled_from(_FIELDS), max_size=1),
        whole=st.one_of(st.just(None), st.just(None), st.just(None), _json),
        path=st.sampled_from(["/v2/order/place", "/v3/order/place", "/v2/order/modify", "/v3/order/modify"]),
    )
    def check(changes: dict[str, Any], dropped: set[str], whole: Any, path: str) -> None:
        modifying = path.endswith("modify")
        body = {k: v for k, v in {**(modify if modifying else _PLACE), **changes}.items() if k not in dropped}
        if whole is not None:
            body = whole
        # json.dumps, not requests' json=: Infinity must reach the server too.
        response = http.request("PUT" if modifying else "POST", simulator.url + path, data=json.dumps(body))
        assert response.status_code in (200, 400), response.text
        envelope = response.json()
        assert envelope["status"] in ("success", "error")
        if envelope["status"] == "error":
            assert envelope["errors"][0]["errorCode"].startswith("UDAPI")

    check()
