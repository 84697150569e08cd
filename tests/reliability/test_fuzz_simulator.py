"""Fuzzing the simulator's request handlers over HTTP: never a crash (a 500) and never a traceback.

Every route of the Kite and Upstox facades, the login pages and the control API gets random methods, path
parameters, query strings, headers (valid and broken tokens) and bodies (form fields and JSON with the
names the real APIs use and values of every type, or plain junk). Whatever comes in, the answer is the
broker's error envelope or a success, with a Content-Type; the handlers never raise (the server logs any
exception it catches, and that log must stay empty). The WebSockets survive junk frames as well.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kiteconnect import KiteConnect
from websockets.sync.client import connect

from tests.services.simulator.upstox_support import login as upstox_login
from trailstop_gui.simulator.login_flow import kite_request_token
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator

# Thousands of generated cases: make test runs them, make unit's quick loop leaves them out.
pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Crashes(logging.Handler):
    """Collects what the simulator logs at ERROR: a handler that raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Rig:
    def __init__(self, sim: SimulatorHandle) -> None:
        self.sim = sim
        self.http = requests.Session()
        # The control API's token: fuzzed /_sim/ calls reach the handlers, as the app's own would.
        self.http.headers.update(sim.control_headers)
        self.crashes = Crashes()
        self.login()

    def login(self) -> None:
        """Fresh tokens for the demo users (a fuzzed logout may have ended the last ones)."""
        kite = self.sim.info["kite"]
        client = KiteConnect(kite["api_key"], root=kite["api_root"])
        session = client.generate_session(kite_request_token(self.sim.info), api_secret=kite["api_secret"])
        self.kite_token = session["access_token"]
        self.upstox_token = upstox_login(self.sim)

    def headers(self, which: str) -> dict[str, str]:
        kite_key = self.sim.info["kite"]["api_key"]
        return {
            "kite": {"X-Kite-Version": "3", "Authorization": f"token {kite_key}:{self.kite_token}"},
            "upstox": {"Authorization": f"Bearer {self.upstox_token}", "Accept": "application/json"},
            "kite-bad": {"X-Kite-Version": "3", "Authorization": "token nope:nope"},
            "kite-mangled": {"Authorization": f"token {self.kite_token}"},
            "upstox-bad": {"Authorization": "Bearer "},
            "junk": {"Authorization": "\x7f\u00e9 junk", "Content-Type": "application/json; charset=latin-1"},
            "none": {},
        }[which]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    sim = start_simulator(seed=13, auto=False, fill_delay=0.0)
    r = Rig(sim)
    server_log = logging.getLogger("trailstop_gui.simulator")
    server_log.addHandler(r.crashes)
    yield r
    server_log.removeHandler(r.crashes)
    sim.stop()


# ------------------------------------------------------------------------------------------ generators

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1.5",
            "NaN",
            "1e400",
            "INFY",
            "NSE",
            "NFO",
            "BUY",
            "SELL",
            "MIS",
            "CNC",
            "NRML",
            "I",
            "D",
            "MARKET",
            "LIMIT",
            "SL",
            "SL-M",
            "DAY",
            "IOC",
            "regular",
            "NSE_EQ|INE009A01021",
            "NSE:INFY",
            "408065",
            "single",
            "two-leg",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "tradingsymbol",
    "exchange",
    "transaction_type",
    "quantity",
    "product",
    "order_type",
    "price",
    "trigger_price",
    "validity",
    "disclosed_quantity",
    "tag",
    "market_protection",
    "variety",
    "order_id",
    "instrument_token",
    "is_amo",
    "slice",
    "trigger_type",
    "condition",
    "orders",
    "rules",
    "type",
    "trigger_values",
    "last_price",
    "api_key",
    "request_token",
    "checksum",
    "code",
    "client_id",
    "client_secret",
    "redirect_uri",
    "grant_type",
    "user_id",
    "password",
    "state",
    "response_type",
    "symbol",
    "ltp",
    "bid",
    "ask",
    "on",
    "interval",
    "i",
    "instrument_key",
    "update_types",
    "segment",
]
field_dicts = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), JSON, max_size=10)
ids = st.one_of(
    st.sampled_from(["regular", "amo", "co", "iceberg", "auction", "NSE", "NFO", "equity", "1", "0"]),
    st.text(max_size=10).map(lambda t: urllib.parse.quote(t, safe="")),
    st.integers(0, 10**16).map(str),
)

ROUTES = [
    ("POST", "/orders/{}"),
    ("PUT", "/orders/{}/{}"),
    ("DELETE", "/orders/{}/{}"),
    ("GET", "/orders"),
    ("GET", "/orders/{}"),
    ("GET", "/orders/{}/trades"),
    ("GET", "/trades"),
    ("GET", "/portfolio/positions"),
    ("GET", "/portfolio/holdings"),
    ("GET", "/user/profile"),
    ("GET", "/user/margins"),
    ("GET", "/user/margins/{}"),
    ("GET", "/quote"),
    ("GET", "/quote/ltp"),
    ("GET", "/quote/ohlc"),
    ("GET", "/instruments"),
    ("GET", "/instruments/{}"),
    ("POST", "/gtt/triggers"),
    ("GET", "/gtt/triggers"),
    ("GET", "/gtt/triggers/{}"),
    ("PUT", "/gtt/triggers/{}"),
    ("DELETE", "/gtt/triggers/{}"),
    ("GET", "/connect/login"),
    ("POST", "/connect/login"),
    ("POST", "/session/token"),
    ("DELETE", "/session/token"),
    ("GET", "/redirect/{}"),
    ("POST", "/v2/order/place"),
    ("POST", "/v3/order/place"),
    ("PUT", "/v2/order/modify"),
    ("PUT", "/v3/order/modify"),
    ("DELETE", "/v2/order/cancel"),
    ("DELETE", "/v3/order/cancel"),
    ("GET", "/v2/order/details"),
    ("GET", "/v2/order/history"),
    ("GET", "/v2/order/retrieve-all"),
    ("GET", "/v2/order/trades/get-trades-for-day"),
    ("GET", "/v2/order/trades"),
    ("GET", "/v2/portfolio/short-term-positions"),
    ("GET", "/v2/portfolio/long-term-holdings"),
    ("GET", "/v2/market-quote/ltp"),
    ("GET", "/v3/market-quote/ltp"),
    ("GET", "/v2/user/profile"),
    ("DELETE", "/v2/logout"),
    ("GET", "/market-quote/instruments/exchange/{}"),
    ("GET", "/v3/feed/market-data-feed/authorize"),
    ("GET", "/v2/feed/portfolio-stream-feed/authorize"),
    ("GET", "/v3/feed/market-data-feed"),
    ("GET", "/kite-ws"),
    ("POST", "/v3/order/gtt/place"),
    ("PUT", "/v3/order/gtt/modify"),
    ("DELETE", "/v3/order/gtt/cancel"),
    ("GET", "/v3/order/gtt"),
    ("GET", "/v2/login/authorization/dialog"),
    ("POST", "/v2/login/authorization/dialog"),
    ("POST", "/v2/login/authorization/token"),
    ("GET", "/_sim/info"),
    ("GET", "/_sim/quote"),
    ("POST", "/_sim/price"),
    ("GET", "/_sim/orders"),
    ("GET", "/_sim/feeds"),
    ("GET", "/_sim/gtts"),
    ("GET", "/_sim/sessions"),
    ("GET", "/_sim/fault"),
    ("GET", "/nowhere/{}"),
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


@st.composite
def requests_(draw: st.DrawFn) -> dict[str, Any]:
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(METHODS))  # the wrong method for the route
    path = template.format(*(draw(ids) for _ in range(template.count("{}"))))
    body_kind = draw(st.sampled_from(["none", "form", "json", "json-any", "junk"]))
    body: bytes | None = None
    content_type: str | None = None
    if body_kind == "form":
        fields = draw(field_dicts)
        body = urllib.parse.urlencode(
            {k: json.dumps(v) if not isinstance(v, str) else v for k, v in fields.items()}
        ).encode()
        content_type = "application/x-www-form-urlencoded"
    elif body_kind == "json":
        body = json.dumps(draw(field_dicts)).encode()
        content_type = "application/json"
    elif body_kind == "json-any":
        body = json.dumps(draw(JSON)).encode()
        content_type = "application/json"
    elif body_kind == "junk":
        body = draw(st.binary(max_size=200))
        content_type = draw(
            st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"])
        )
    query = draw(st.dictionaries(st.sampled_from(FIELDS), SCALARS.map(str), max_size=4))
    return {
        "method": method,
        "path": path,
        "query": query,
        "body": body,
        "content_type": content_type,
        "auth": draw(
            st.sampled_from(["kite", "upstox", "kite-bad", "kite-mangled", "upstox-bad", "junk", "none"])
        ),
    }


# ------------------------------------------------------------------------------------------ properties


@FUZZ
@given(requests_())
def test_no_request_crashes_a_handler(rig: Rig, req: dict[str, Any]) -> None:
    headers = dict(rig.headers(req["auth"]))
    if req["content_type"]:
        headers["Content-Type"] = req["content_type"]
    response = rig.http.request(
        req["method"],
        rig.sim.url + req["path"],
        params=req["query"],
        data=req["body"],
        headers=headers,
        timeout=10,
        allow_redirects=False,
    )
    if req["method"] == "DELETE" and req["path"] in ("/v2/logout", "/session/token"):
        rig.login()
    crashes = [r.getMessage() for r in rig.crashes.records]
    rig.crashes.records.clear()
    assert crashes == [], crashes
    event(f"HTTP {response.status_code}")
    assert response.status_code != 500, (response.status_code, response.text[:300])
    assert response.status_code < 500 or response.status_code in (501, 502, 503), response.status_code
    assert response.headers.get("Content-Type"), response.headers
    assert b"Traceback" not in response.content and b'File "' not in response.content


@FUZZ
@given(st.one_of(JSON, field_dicts), st.sampled_from(["fault", "auto", "price"]))
def test_the_control_api_refuses_bad_bodies_plainly(rig: Rig, body: Any, what: str) -> None:
    try:
        response = rig.http.post(
            f"{rig.sim.url}/_sim/{what}",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code in (200, 400), (response.status_code, response.text[:300])
        assert response.headers.get("Content-Type", "").startswith("application/json")
        assert rig.crashes.records == []
    finally:
        # A body that happened to be a valid fault or price must not leak into the next example.
        rig.http.delete(f"{rig.sim.url}/_sim/fault", timeout=10)
        rig.http.post(f"{rig.sim.url}/_sim/auto", json={"on": False}, timeout=10)


def test_the_kite_ticker_survives_junk_frames(rig: Rig) -> None:
    rig.login()
    key = rig.sim.info["kite"]["api_key"]
    url = f"{rig.sim.info['kite']['ws_url']}?api_key={key}&access_token={rig.kite_token}"
    junk: list[str | bytes] = [
        "",
        "{",
        "[]",
        "null",
        '{"a": "subscribe"}',
        '{"a": "subscribe", "v": "x"}',
        '{"a": "mode", "v": ["full"]}',
        '{"a": "mode", "v": ["nope", [1]]}',
        '{"a": "subscribe", "v": [1e999, -1, "408065", null]}',
        '{"a": 7, "v": {}}',
        b"\x00\xff" * 50,
        "\ud7ff" * 10,
    ]
    with connect(url, additional_headers={"X-Kite-Version": "3"}, open_timeout=5) as ws:
        for frame in junk:
            ws.send(frame)
        ws.send(json.dumps({"a": "subscribe", "v": [408065]}))
        ws.send(json.dumps({"a": "mode", "v": ["ltp", [408065]]}))
        rig.sim.set_price("NSE:INFY", 1500.0)
        for _ in range(50):
            message = ws.recv(timeout=5)
            if isinstance(message, bytes) and len(message) > 1:
                break
        else:
            pytest.fail("no tick after the junk frames")
    assert rig.crashes.records == []


def test_the_upstox_feed_survives_junk_frames(rig: Rig) -> None:
    rig.login()
    auth = requests.get(
        f"{rig.sim.url}/v3/feed/market-data-feed/authorize", headers=rig.headers("upstox"), timeout=10
    ).json()
    with connect(auth["data"]["authorized_redirect_uri"], open_timeout=5) as ws:
        ws.recv(timeout=5)  # market_info
        junk: list[str | bytes] = [
            b"",
            b"{",
            b"\xff\xfe",
            b'{"method": "sub"}',
            b'{"method": "sub", "data": 5}',
            "?",
        ]
        for frame in junk:
            ws.send(frame)
        sub = {
            "guid": "g",
            "method": "sub",
            "data": {"mode": "ltpc", "instrumentKeys": ["NSE_EQ|INE009A01021"]},
        }
        ws.send(json.dumps(sub).encode())
        assert isinstance(ws.recv(timeout=5), bytes)  # the snapshot of what was subscribed
    assert rig.crashes.records == []
