"""UpstoxBroker against two recording HTTP servers on 127.0.0.1: the API host and the order host.

Replies follow the shapes in PROTOCOLS.md (enveloped ``{"status": "success", "data": ...}``, except the
token endpoint) and the Upstox documentation's examples.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from trailstop_gui.models.domain import Product, Side
from trailstop_gui.services.brokers.base import IST, OrderRequest, OrderStatus, OrderType
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    AuthError,
    BrokerError,
    BrokerInputError,
    MalformedReplyError,
    RateLimitedError,
    RejectedError,
    TemporaryError,
)
from trailstop_gui.services.brokers.rate_limit import RateLimiter
from trailstop_gui.services.brokers.upstox import (
    DEFAULT_ORDER_ROOT,
    UpstoxBroker,
    instruments_from_master,
    master_tick_unit,
)

CLIENT_ID = "upstox-client-1"
TOKEN = "upstoxtoken0123456789"
INFY = "NSE_EQ|INE009A01021"
NIFTY_FUT = "NSE_FO|35012"

# ----------------------------------------------------------------------------- a recording HTTP server


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {key: values[-1] for key, values in parse_qs(self.body.decode()).items()}


Reply = tuple[int, str, bytes]
Route = Reply | Callable[[Seen, BaseHTTPRequestHandler], Reply | None]


class StubServer:
    """Replies from a (method, path) table and records every request."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.routes: dict[tuple[str, str], Route] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                stub.seen.append(seen)
                route = stub.routes.get((self.command, parts.path))
                if route is None:
                    reply: Reply | None = (404, "application/json", error_body("UDAPI10000", "no route"))
                elif callable(route):
                    reply = route(seen, self)
                else:
                    reply = route
                if reply is None:  # the route dropped the connection on purpose
                    self.close_connection = True
                    return
                status, content_type, payload = reply
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def reply(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def success(data: Any, **extra: Any) -> Reply:
    return (200, "application/json", json.dumps({"status": "success", "data": data, **extra}).encode())


def error_body(code: str, message: str) -> bytes:
    error = {"errorCode": code, "message": message, "propertyPath": None, "invalidValue": None}
    return json.dumps({"status": "error", "errors": [error]}).encode()


def failure(status: int, code: str, message: str) -> Reply:
    return (status, "application/json", error_body(code, message))


def order_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "exchange": "NSE",
        "product": "I",
        "price": 0.0,
        "quantity": 3,
        "status": "trigger pending",
        "tag": "TS42",
        "instrument_token": INFY,
        "placed_by": "AB1234",
        "trading_symbol": "INFY",
        "tradingsymbol": "INFY",
        "order_type": "SL-M",
        "validity": "DAY",
        "trigger_price": 1490.5,
        "disclosed_quantity": 0,
        "transaction_type": "SELL",
        "average_price": 0.0,
        "filled_quantity": 0,
        "pending_quantity": 3,
        "status_message": None,
        "status_message_raw": None,
        "exchange_order_id": "1300000025660919",
        "parent_order_id": None,
        "order_id": "231019025562880",
        "variety": "SIMPLE",
        "order_timestamp": "2023-10-19 13:25:56",
        "exchange_timestamp": "2023-10-19 13:25:57",
        "is_amo": False,
        "order_request_id": "1",
        "order_ref_id": "GTT-C23191000044475",
    }
    row.update(overrides)
    return row


def position_row(key: str, product: str, quantity: int, symbol: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "exchange": key.split("_")[0],
        "multiplier": 1.0,
        "value": 0.0,
        "pnl": 12.5,
        "product": product,
        "instrument_token": key,
        "average_price": 100.25,
        "buy_value": 0.0,
        "overnight_quantity": 0,
        "day_buy_value": 0.0,
        "day_buy_price": 0.0,
        "overnight_buy_amount": 0.0,
        "overnight_buy_quantity": 0,
        "day_buy_quantity": 0,
        "day_sell_value": 0.0,
        "day_sell_price": 0.0,
        "overnight_sell_amount": 0.0,
        "overnight_sell_quantity": 0,
        "day_sell_quantity": 0,
        "quantity": quantity,
        "last_price": 101.0,
        "unrealised": 0.0,
        "realised": 0.0,
        "sell_value": 0.0,
        "trading_symbol": symbol,
        "tradingsymbol": symbol,
        "close_price": 99.0,
        "buy_price": 100.25,
        "sell_price": 0.0,
    }
    row.update(overrides)
    return row


@pytest.fixture
def api() -> Iterator[StubServer]:
    stub = StubServer()
    yield stub
    stub.close()


@pytest.fixture
def hft() -> Iterator[StubServer]:
    stub = StubServer()
    yield stub
    stub.close()


def make_broker(api: StubServer, hft: StubServer, **kwargs: Any) -> UpstoxBroker:
    options: dict[str, Any] = dict(timeout=2.0, limiter=RateLimiter([(1000, 1.0)]))
    options.update(kwargs)
    return UpstoxBroker(CLIENT_ID, TOKEN, api.url, hft.url, **options)


@pytest.fixture
def upstox(api: StubServer, hft: StubServer) -> UpstoxBroker:
    return make_broker(api, hft)


def exit_order(**overrides: Any) -> OrderRequest:
    fields: dict[str, Any] = dict(
        symbol="INFY",
        exchange="NSE",
        instrument=INFY,
        side=Side.SELL,
        quantity=3,
        product=Product.MIS,
        tag="TS42",
    )
    fields.update(overrides)
    return OrderRequest(**fields)


# ----------------------------------------------------------------------------- hosts and request shapes


def test_v3_market_order_is_json_to_the_order_host(
    api: StubServer, hft: StubServer, upstox: UpstoxBroker
) -> None:
    hft.reply(
        "POST", "/v3/order/place", success({"order_ids": ["250101000000001"]}, metadata={"latency": 12})
    )
    assert upstox.place_order(exit_order()) == "250101000000001"
    assert api.seen == []
    [sent] = hft.seen
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json() == {
        "quantity": 3,
        "product": "I",
        "validity": "DAY",
        "price": 0.0,
        "tag": "TS42",
        "slice": False,
        "instrument_token": INFY,
        "order_type": "MARKET",
        "transaction_type": "SELL",
        "disclosed_quantity": 0,
        "trigger_price": 0.0,
        "is_amo": False,
        "market_protection": -1,
    }


def test_v3_limit_order_carries_no_market_protection(hft: StubServer, upstox: UpstoxBroker) -> None:
    hft.reply("POST", "/v3/order/place", success({"order_ids": ["1"]}))
    upstox.place_order(
        exit_order(order_type=OrderType.LIMIT, price=1500.5, product=Product.NRML, instrument=NIFTY_FUT)
    )
    body = hft.seen[0].json()
    assert "market_protection" not in body
    assert (body["price"], body["product"], body["instrument_token"]) == (1500.5, "D", NIFTY_FUT)


def test_v3_sl_m_carries_the_configured_market_protection(api: StubServer, hft: StubServer) -> None:
    hft.reply("POST", "/v3/order/place", success({"order_ids": ["1"]}))
    upstox = make_broker(api, hft, market_protection=5)
    upstox.place_order(exit_order(order_type=OrderType.SL_M, trigger_price=1490.5))
    body = hft.seen[0].json()
    assert (body["order_type"], body["trigger_price"], body["market_protection"]) == ("SL-M", 1490.5, 5)
    with pytest.raises(ValueError):
        make_broker(api, hft, market_protection=30)


def test_v2_place_order(api: StubServer, hft: StubServer) -> None:
    hft.reply("POST", "/v2/order/place", success({"order_id": "240101000000002"}))
    upstox = make_broker(api, hft, order_api="v2")
    assert upstox.place_order(exit_order(product=Product.CNC)) == "240101000000002"
    [sent] = hft.seen
    assert sent.headers["api-version"] == "2.0"
    body = sent.json()
    assert body["product"] == "D"
    assert "market_protection" not in body and "slice" not in body


def test_orders_need_the_instrument_key(hft: StubServer, upstox: UpstoxBroker) -> None:
    with pytest.raises(BrokerInputError):
        upstox.place_order(exit_order(instrument=408065))
    with pytest.raises(BrokerInputError):
        upstox.place_order(exit_order(tag="TS-42"))
    assert hft.seen == []


def test_an_accepted_order_without_an_id_is_ambiguous(hft: StubServer, upstox: UpstoxBroker) -> None:
    hft.reply("POST", "/v3/order/place", success({"order_ids": []}))
    with pytest.raises(AmbiguousError):
        upstox.place_order(exit_order())


def test_modify_with_the_whole_spec_goes_straight_to_the_order_host(
    api: StubServer, hft: StubServer, upstox: UpstoxBroker
) -> None:
    hft.reply("PUT", "/v3/order/modify", success({"order_id": "231019025562880"}))
    result = upstox.modify_order(
        "231019025562880", order_type=OrderType.SL, price=1489.0, trigger_price=1490.0, quantity=2
    )
    assert result == "231019025562880"
    assert api.seen == []
    assert hft.seen[0].json() == {
        "order_id": "231019025562880",
        "quantity": 2,
        "validity": "DAY",
        "price": 1489.0,
        "order_type": "SL",
        "disclosed_quantity": 0,
        "trigger_price": 1490.0,
    }


def test_modify_fills_the_gaps_from_the_order_as_it_stands(
    api: StubServer, hft: StubServer, upstox: UpstoxBroker
) -> None:
    api.reply("GET", "/v2/order/details", success(order_row()))
    hft.reply("PUT", "/v3/order/modify", success({"order_id": "231019025562880"}))
    upstox.modify_order("231019025562880", trigger_price=1495.0)
    assert [(s.method, s.path) for s in api.seen] == [("GET", "/v2/order/details")]
    body = hft.seen[0].json()
    assert (body["order_type"], body["trigger_price"], body["price"]) == ("SL-M", 1495.0, 0.0)
    assert body["market_protection"] == -1
    assert "quantity" not in body


def test_cancel_is_a_delete_on_the_order_host(api: StubServer, hft: StubServer, upstox: UpstoxBroker) -> None:
    hft.reply("DELETE", "/v3/order/cancel", success({"order_id": "231019025562880"}))
    assert upstox.cancel_order("231019025562880") == "231019025562880"
    assert hft.seen[0].query == {"order_id": ["231019025562880"]}
    assert api.seen == []


def test_v2_cancel_and_modify(api: StubServer, hft: StubServer) -> None:
    hft.reply("DELETE", "/v2/order/cancel", success({"order_id": "7"}))
    hft.reply("PUT", "/v2/order/modify", success({"order_id": "7"}))
    upstox = make_broker(api, hft, order_api="v2")
    upstox.cancel_order("7")
    upstox.modify_order("7", order_type=OrderType.LIMIT, price=10.0, trigger_price=0.0)
    assert [(s.method, s.path) for s in hft.seen] == [
        ("DELETE", "/v2/order/cancel"),
        ("PUT", "/v2/order/modify"),
    ]


def test_priority_reaches_the_limiter(api: StubServer, hft: StubServer) -> None:
    hft.reply("POST", "/v3/order/place", success({"order_ids": ["1"]}))
    calls: list[bool] = []

    class Recording(RateLimiter):
        def acquire(self, timeout: float | None = None, *, priority: bool = False) -> bool:
            calls.append(priority)
            return super().acquire(timeout, priority=priority)

    upstox = make_broker(api, hft, limiter=Recording([(100, 1.0)]))
    upstox.place_order(exit_order(urgent=True))
    upstox.place_order(exit_order())
    assert calls == [True, False]


# ----------------------------------------------------------------------------- reads and conversions


def test_order_details_is_one_order_from_the_api_host(
    api: StubServer, hft: StubServer, upstox: UpstoxBroker
) -> None:
    api.reply("GET", "/v2/order/details", success(order_row()))
    order = upstox.order("231019025562880")
    assert api.seen[0].query == {"order_id": ["231019025562880"]}
    assert hft.seen == []
    assert order.order_id == "231019025562880"
    assert (order.status, order.raw_status) == (OrderStatus.TRIGGER_PENDING, "trigger pending")
    assert (order.side, order.order_type, order.product) == (Side.SELL, OrderType.SL_M, Product.MIS)
    assert (order.symbol, order.exchange, order.instrument) == ("INFY", "NSE", INFY)
    assert (order.quantity, order.pending_quantity, order.trigger_price) == (3, 3, 1490.5)
    assert order.tag == "TS42"
    assert order.placed_at == datetime(2023, 10, 19, 13, 25, 56, tzinfo=IST)
    assert order.updated_at == datetime(2023, 10, 19, 13, 25, 57, tzinfo=IST)


def test_order_history_is_every_state(api: StubServer, upstox: UpstoxBroker) -> None:
    states = ["put order req received", "validation pending", "open pending", "complete"]
    api.reply("GET", "/v2/order/history", success([order_row(status=s) for s in states]))
    history = upstox.order_history("231019025562880")
    assert api.seen[0].query == {"order_id": ["231019025562880"]}
    assert api.seen[0].headers["api-version"] == "2.0"
    assert [o.raw_status for o in history] == states
    assert [o.status for o in history][-1] is OrderStatus.COMPLETE
    assert history[-1].is_final


def test_order_book_and_tag_lookup(api: StubServer, upstox: UpstoxBroker) -> None:
    book = [
        order_row(order_id="1", tag="TS42", status="rejected", order_timestamp="2023-10-19 10:00:00"),
        order_row(order_id="2", tag="TS42", status="complete", order_timestamp="2023-10-19 10:00:05"),
        order_row(order_id="3", tag=None, status="open", order_type="LIMIT", product="D"),
        order_row(order_id="4", tag="TS7", order_type="SOMETHING-NEW"),  # must not break the book
    ]
    api.reply("GET", "/v2/order/retrieve-all", success(book))
    orders = upstox.orders()
    assert [o.order_id for o in orders] == ["1", "2", "3", "4"]
    assert orders[2].product is Product.CNC  # D on an equity segment
    assert orders[3].order_type is None
    found = upstox.find_order_by_tag("TS42")
    assert found is not None and found.order_id == "2"
    assert upstox.find_order_by_tag("TS999") is None


def test_an_unreadable_row_fails_the_whole_book(api: StubServer, upstox: UpstoxBroker) -> None:
    api.reply("GET", "/v2/order/retrieve-all", success([order_row(), order_row(transaction_type="HOLD")]))
    with pytest.raises(BrokerError, match="unreadable") as caught:
        upstox.orders()
    # Unreadable is temporary (issue 13): asked again, never read as an empty book.
    assert type(caught.value) is MalformedReplyError


def test_positions(api: StubServer, upstox: UpstoxBroker) -> None:
    api.reply(
        "GET",
        "/v2/portfolio/short-term-positions",
        success(
            [
                position_row(INFY, "I", -5, "INFY"),
                position_row(NIFTY_FUT, "D", 50, "NIFTY FUT 27 FEB 25"),
                position_row("NSE_EQ|INE062A01020", "D", 10, "SBIN", average_price=None),
                position_row("NSE_EQ|INE528G01035", "MTF", 7, "YESBANK"),
            ]
        ),
    )
    positions = upstox.positions()
    assert [(p.instrument, p.quantity) for p in positions] == [
        (INFY, -5),
        (NIFTY_FUT, 50),
        ("NSE_EQ|INE062A01020", 10),
        ("NSE_EQ|INE528G01035", 7),
    ]
    assert [p.product for p in positions] == [Product.MIS, Product.NRML, Product.CNC, None]
    assert positions[0].side is Side.SELL and positions[0].quote_key == INFY
    assert positions[0].average_price == 100.25 and positions[2].average_price == 0.0
    assert positions[0].symbol == "INFY" and positions[0].pnl == 12.5


def test_holdings(api: StubServer, upstox: UpstoxBroker) -> None:
    holding = {
        "isin": "INE528G01035",
        "cnc_used_quantity": 0,
        "collateral_type": "WC",
        "company_name": "YES BANK LTD.",
        "haircut": 0.2,
        "product": "D",
        "quantity": 36,
        "trading_symbol": "YESBANK",
        "tradingsymbol": "YESBANK",
        "last_price": 17.05,
        "close_price": 17.05,
        "pnl": -61.2,
        "day_change": 0,
        "day_change_percentage": 0,
        "instrument_token": "NSE_EQ|INE528G01035",
        "average_price": 18.75,
        "collateral_quantity": 0,
        "collateral_update_quantity": 0,
        "t1_quantity": 4,
        "exchange": "NSE",
    }
    api.reply("GET", "/v2/portfolio/long-term-holdings", success([holding]))
    [result] = upstox.holdings()
    assert (result.symbol, result.isin, result.quantity, result.t1_quantity) == (
        "YESBANK",
        "INE528G01035",
        36,
        4,
    )
    assert (result.average_price, result.last_price, result.quote_key) == (
        18.75,
        17.05,
        "NSE_EQ|INE528G01035",
    )


def test_ltp_maps_replies_back_to_instrument_keys(api: StubServer, upstox: UpstoxBroker) -> None:
    api.reply(
        "GET",
        "/v2/market-quote/ltp",
        success(
            {
                "NSE_EQ:INFY": {"last_price": 1500.5, "instrument_token": INFY},
                "NSE_INDEX:Nifty 50": {"last_price": 22000.0},
            }
        ),
    )
    prices = upstox.ltp([INFY, "NSE_INDEX|Nifty 50", "NSE_EQ|INE000000000"])
    assert prices == {INFY: 1500.5, "NSE_INDEX|Nifty 50": 22000.0}
    assert api.seen[0].query == {"symbol": [f"{INFY},NSE_INDEX|Nifty 50,NSE_EQ|INE000000000"]}
    assert upstox.ltp([]) == {}
    assert len(api.seen) == 1


def test_profile(api: StubServer, upstox: UpstoxBroker) -> None:
    api.reply(
        "GET",
        "/v2/user/profile",
        success(
            {
                "email": "a@example.com",
                "exchanges": ["NSE", "NFO"],
                "products": ["D", "I"],
                "broker": "UPSTOX",
                "user_id": "123456",
                "user_name": "A Trader",
                "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
                "user_type": "individual",
                "poa": False,
                "is_active": True,
            }
        ),
    )
    profile = upstox.profile()
    assert (profile.user_id, profile.user_name, profile.broker, profile.email) == (
        "123456",
        "A Trader",
        "UPSTOX",
        "a@example.com",
    )
    assert profile.products == ("D", "I")


# ----------------------------------------------------------------------------- instrument master

MASTER: list[dict[str, Any]] = [
    {
        "segment": "NSE_EQ",
        "name": "INFOSYS LIMITED",
        "exchange": "NSE",
        "isin": "INE009A01021",
        "instrument_type": "EQ",
        "instrument_key": INFY,
        "lot_size": 1,
        "freeze_quantity": 100000.0,
        "exchange_token": "1594",
        "tick_size": 5.0,
        "trading_symbol": "INFY",
    },
    {
        "segment": "NSE_EQ",
        "name": "JOCIL LIMITED",
        "exchange": "NSE",
        "instrument_type": "EQ",
        "instrument_key": "NSE_EQ|INE839G01010",
        "lot_size": 1,
        "tick_size": 1.0,
        "trading_symbol": "JOCIL",
    },
    {
        "weekly": False,
        "segment": "NSE_FO",
        "name": "ADANI ENTERPRISES LTD",
        "exchange": "NSE",
        "expiry": 1740680999000,  # 2025-02-27 23:59:59 IST, as the master gives expiries
        "instrument_type": "CE",
        "instrument_key": NIFTY_FUT,
        "lot_size": 300,
        "tick_size": 5.0,
        "trading_symbol": "ADANIENT 2300 CE 27 FEB 25",
        "strike_price": 2300.0,
    },
    {"segment": "NSE_INDEX", "name": "Nifty 50", "exchange": "NSE", "instrument_key": "NSE_INDEX|Nifty 50"},
]


def test_instruments_from_a_gzipped_master_in_paise(api: StubServer, hft: StubServer) -> None:
    api.reply(
        "GET",
        "/assets/complete.json.gz",
        (200, "application/gzip", gzip.compress(json.dumps(MASTER).encode())),
    )
    upstox = make_broker(api, hft, instruments_url=f"{api.url}/assets/complete.json.gz")
    instruments = upstox.instruments()
    assert [i.instrument for i in instruments] == [row["instrument_key"] for row in MASTER]
    assert [i.tick_size for i in instruments] == [0.05, 0.01, 0.05, 0.0]
    option = instruments[2]
    assert (option.expiry, option.strike, option.lot_size) == (date(2025, 2, 27), 2300.0, 300)
    assert (option.segment, option.instrument_type, option.quote_key) == ("NSE_FO", "CE", NIFTY_FUT)
    assert instruments[0].expiry is None and instruments[0].symbol == "INFY"


def test_instruments_plain_json_in_rupees(api: StubServer, hft: StubServer) -> None:
    rupees = [dict(row, tick_size=row["tick_size"] / 100) for row in MASTER if "tick_size" in row]
    api.reply("GET", "/assets/NSE.json", (200, "application/json", json.dumps(rupees).encode()))
    upstox = make_broker(api, hft, instruments_url=f"{api.url}/assets/NSE.json")
    assert [i.tick_size for i in upstox.instruments()] == [0.05, 0.01, 0.05]


def test_tick_unit_detection_and_override() -> None:
    assert master_tick_unit(MASTER) == "paise"
    assert master_tick_unit([{"tick_size": 0.05}, {"tick_size": 0.01}, {"tick_size": 5.0}]) == "rupees"
    assert master_tick_unit([]) == "rupees"
    # An explicit unit wins over the guess.
    assert [i.tick_size for i in instruments_from_master(MASTER[:1], "rupees")] == [5.0]


def test_instrument_download_errors(api: StubServer, hft: StubServer) -> None:
    api.reply("GET", "/assets/missing.json.gz", (404, "text/plain", b"not here"))
    api.reply("GET", "/assets/broken.json.gz", (200, "application/gzip", b"\x1f\x8bnot really gzip"))
    with pytest.raises(BrokerInputError):
        make_broker(api, hft, instruments_url=f"{api.url}/assets/missing.json.gz").instruments()
    with pytest.raises(TemporaryError):
        make_broker(api, hft, instruments_url=f"{api.url}/assets/broken.json.gz").instruments()


# ----------------------------------------------------------------------------- login


def test_authorization_url(api: StubServer, upstox: UpstoxBroker) -> None:
    url = urlsplit(upstox.authorization_url("http://127.0.0.1:5000/callback", state="s1"))
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{api.url}/v2/login/authorization/dialog"
    assert parse_qs(url.query) == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": ["http://127.0.0.1:5000/callback"],
        "state": ["s1"],
    }
    custom = UpstoxBroker(CLIENT_ID, api_root=api.url, dialog_url="http://127.0.0.1:1/dialog")
    assert custom.authorization_url("http://cb").startswith("http://127.0.0.1:1/dialog?response_type=code&")


def test_exchange_code_posts_a_form_and_uses_the_new_token(api: StubServer, hft: StubServer) -> None:
    token_reply = {
        "email": "a@example.com",
        "exchanges": ["NSE"],
        "products": ["D", "I"],
        "broker": "UPSTOX",
        "user_id": "123456",
        "user_name": "A Trader",
        "order_types": ["MARKET"],
        "user_type": "individual",
        "poa": False,
        "is_active": True,
        "access_token": "fresh_upstox_token_42",
        "extended_token": None,
    }
    api.reply(
        "POST", "/v2/login/authorization/token", (200, "application/json", json.dumps(token_reply).encode())
    )
    api.reply("GET", "/v2/order/retrieve-all", success([]))
    upstox = UpstoxBroker(CLIENT_ID, api_root=api.url, order_root=hft.url)
    info = upstox.exchange_code("code_abc", "secret_xyz", "http://127.0.0.1:5000/callback")
    assert (info.access_token, info.user_id, info.user_name, info.broker) == (
        "fresh_upstox_token_42",
        "123456",
        "A Trader",
        "upstox",
    )
    [login] = api.seen
    assert login.headers["content-type"] == "application/x-www-form-urlencoded"
    assert login.form() == {
        "code": "code_abc",
        "client_id": CLIENT_ID,
        "client_secret": "secret_xyz",
        "redirect_uri": "http://127.0.0.1:5000/callback",
        "grant_type": "authorization_code",
    }
    upstox.orders()
    assert api.seen[1].headers["authorization"] == "Bearer fresh_upstox_token_42"


def test_failed_code_exchange_leaks_no_secret(api: StubServer, upstox: UpstoxBroker) -> None:
    api.reply(
        "POST",
        "/v2/login/authorization/token",
        failure(400, "UDAPI100057", "Invalid auth code code_abc for secret_xyz"),
    )
    with pytest.raises(AuthError) as caught:
        upstox.exchange_code("code_abc", "secret_xyz", "http://cb")
    assert "code_abc" not in str(caught.value) and "secret_xyz" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_two_accounts_never_share_a_token_or_a_host(api: StubServer, hft: StubServer) -> None:
    other = StubServer()
    try:
        for server in (api, other):
            server.reply("GET", "/v2/order/retrieve-all", success([]))
        first = UpstoxBroker(CLIENT_ID, "token_first_account", api_root=api.url, order_root=hft.url)
        second = UpstoxBroker(CLIENT_ID, "token_second_account", api_root=other.url)
        first.orders()
        second.orders()
        first.set_access_token("token_first_renewed")
        first.orders()
        assert [s.headers["authorization"] for s in api.seen] == [
            "Bearer token_first_account",
            "Bearer token_first_renewed",
        ]
        assert [s.headers["authorization"] for s in other.seen] == ["Bearer token_second_account"]
        # A custom API root without an order root sends orders there too, never to the real order host.
        assert second.order_root == other.url
        assert UpstoxBroker(CLIENT_ID).order_root == DEFAULT_ORDER_ROOT
    finally:
        other.close()


# ----------------------------------------------------------------------------- error mapping end to end


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (failure(401, "UDAPI100050", "Invalid token used to access API"), AuthError),
        (failure(429, "UDAPI10005", "Too Many Request Sent"), RateLimitedError),
        (failure(400, "UDAPI100036", "Invalid Input"), RejectedError),
        (failure(500, "UDAPI100500", "Something went wrong"), AmbiguousError),
        ((503, "text/html", b"<html>maintenance</html>"), AmbiguousError),
        ((200, "text/html", b"<html>captive portal</html>"), AmbiguousError),
    ],
)
def test_place_order_errors(
    hft: StubServer, upstox: UpstoxBroker, reply: Reply, expected: type[BrokerError]
) -> None:
    hft.reply("POST", "/v3/order/place", reply)
    with pytest.raises(expected) as caught:
        upstox.place_order(exit_order())
    assert type(caught.value) is expected
    assert TOKEN not in str(caught.value)
    assert len(hft.seen) == 1  # an order is never sent twice by the adapter


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (failure(401, "UDAPI100050", "Invalid token used to access API"), AuthError),
        (failure(400, "UDAPI100036", "Invalid Input"), BrokerInputError),
        (failure(500, "UDAPI100500", "Something went wrong"), TemporaryError),
    ],
)
def test_read_errors(
    api: StubServer, upstox: UpstoxBroker, reply: Reply, expected: type[BrokerError]
) -> None:
    api.reply("GET", "/v2/portfolio/short-term-positions", reply)
    with pytest.raises(expected) as caught:
        upstox.positions()
    assert type(caught.value) is expected


def test_timeout_after_sending_an_order_is_ambiguous(api: StubServer, hft: StubServer) -> None:
    release = threading.Event()

    def slow(seen: Seen, handler: BaseHTTPRequestHandler) -> Reply:
        release.wait(5)
        return success({"order_ids": ["1"]})

    hft.reply("POST", "/v3/order/place", slow)
    upstox = make_broker(api, hft, timeout=0.3)
    try:
        with pytest.raises(AmbiguousError, match="timed out"):
            upstox.place_order(exit_order())
    finally:
        release.set()
    assert len(hft.seen) == 1


def test_a_dropped_order_is_ambiguous_and_not_resent(hft: StubServer, upstox: UpstoxBroker) -> None:
    hft.reply("POST", "/v3/order/place", lambda seen, handler: None)
    with pytest.raises(AmbiguousError):
        upstox.place_order(exit_order())
    assert len(hft.seen) == 1


def test_a_dropped_read_is_retried_once(api: StubServer, upstox: UpstoxBroker) -> None:
    attempts: list[int] = []

    def flaky(seen: Seen, handler: BaseHTTPRequestHandler) -> Reply | None:
        attempts.append(1)
        return None if len(attempts) == 1 else success([order_row()])

    api.reply("GET", "/v2/order/retrieve-all", flaky)
    assert [o.order_id for o in upstox.orders()] == ["231019025562880"]
    assert len(attempts) == 2


def test_connection_refused_is_temporary_not_ambiguous() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    upstox = UpstoxBroker(CLIENT_ID, TOKEN, api_root=f"http://127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(TemporaryError) as caught:
        upstox.place_order(exit_order())
    assert type(caught.value) is TemporaryError
