"""The /_sim/ control API and the in-process runner."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import websockets
from kiteconnect import KiteConnect, KiteTicker

from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator


def _get(handle: SimulatorHandle, path: str) -> Any:
    response = requests.get(f"{handle.url}/_sim/{path}", headers=handle.control_headers, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    return response.json()


def _post(handle: SimulatorHandle, path: str, body: Any) -> requests.Response:
    return requests.post(f"{handle.url}/_sim/{path}", json=body, headers=handle.control_headers, timeout=5)


def test_info_is_the_documented_shape(simulator: SimulatorHandle) -> None:
    info = _get(simulator, "info")
    assert info == simulator.info
    assert info["http"] == simulator.url == f"http://127.0.0.1:{simulator.port}"
    assert set(info["kite"]) == {
        "api_root",
        "login_url",
        "ws_url",
        "api_key",
        "api_secret",
        "redirect_url",
        "user_id",
        "password",
    }
    assert set(info["upstox"]) == {
        "api_root",
        "order_root",
        "dialog_url",
        "client_id",
        "client_secret",
        "redirect_uri",
        "user_id",
        "password",
    }
    assert info["kite"]["ws_url"] == f"ws://127.0.0.1:{simulator.port}/kite-ws"
    assert info["upstox"]["dialog_url"] == f"{simulator.url}/v2/login/authorization/dialog"
    assert all(isinstance(v, str) and v for section in ("kite", "upstox") for v in info[section].values())


def test_instruments_list(simulator: SimulatorHandle) -> None:
    rows = _get(simulator, "instruments")
    infy = next(r for r in rows if r["symbol"] == "NSE:INFY")
    assert {k: infy[k] for k in ("kite_token", "upstox_key", "tick_size", "lot_size")} == {
        "kite_token": 408065,
        "upstox_key": "NSE_EQ|INE009A01021",
        "tick_size": 0.05,
        "lot_size": 1,
    }
    assert {r["upstox_key"] for r in rows} >= {"NSE_INDEX|Nifty 50"}
    assert len(rows) == len({r["kite_token"] for r in rows}) >= 55


def test_price_sets_the_book_and_is_validated(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    answer = _post(simulator, "price", {"symbol": "NSE:TCS", "ltp": 3500.0, "bid": 3499.5, "ask": 3500.5})
    assert answer.status_code == 200 and (answer.json()["bid"], answer.json()["ask"]) == (3499.5, 3500.5)
    assert kite_client.ltp("NSE:TCS")["NSE:TCS"]["last_price"] == 3500.0
    by_key = _post(simulator, "price", {"symbol": "NSE_EQ|INE467B01029", "ltp": 3510.0})
    assert by_key.status_code == 200 and by_key.json()["symbol"] == "NSE:TCS"
    for bad in (
        {"symbol": "NSE:NOPE", "ltp": 1},
        {"symbol": "NSE:TCS"},
        {"symbol": "NSE:TCS", "ltp": -5},
        {"symbol": "NSE:TCS", "ltp": "many"},
        {"symbol": "NSE:TCS", "ltp": 10, "bid": 11, "ask": 10.5},
        {"symbol": "NSE:NIFTY 50", "ltp": 24000, "bid": 23999},
        [1, 2],
    ):
        response = _post(simulator, "price", bad)
        assert response.status_code == 400 and "error" in response.json(), bad
    garbled = requests.post(
        f"{simulator.url}/_sim/price",
        data=b"{nope",
        headers={**simulator.control_headers, "Content-Type": "application/json"},
        timeout=5,
    )
    assert garbled.status_code == 400 and "error" in garbled.json()


def test_auto_walk_can_be_switched(simulator: SimulatorHandle, wait_until: Callable[..., Any]) -> None:
    def ltp() -> float:
        return float(_get(simulator, "quote?symbol=NSE:RELIANCE")["ltp"])

    first = ltp()
    assert _post(simulator, "auto", {"on": True, "interval": 0.02}).json() == {"auto": True, "interval": 0.02}
    wait_until(lambda: ltp() != first, what="the random walk to move a price")
    assert _post(simulator, "auto", {"on": False}).status_code == 200
    frozen = ltp()
    time.sleep(0.1)  # five walk intervals: nothing may move now
    assert ltp() == frozen
    assert _post(simulator, "auto", {"on": "yes"}).status_code == 400
    assert _post(simulator, "auto", {"on": True, "interval": 0}).status_code == 400


def test_order_log_sessions_and_reset(
    simulator: SimulatorHandle, kite_client: KiteConnect, wait_until: Callable[..., Any]
) -> None:
    kite_client.place_order(
        "regular", "NSE", "SBIN", "BUY", 2, "MIS", "MARKET", market_protection=-1, tag="log1"
    )
    requests.post(
        f"{simulator.url}/_sim/fault",
        json={"fault": "reject_orders"},
        headers=simulator.control_headers,
        timeout=5,
    )
    kite_client.place_order("regular", "NSE", "ITC", "BUY", 1, "CNC", "LIMIT", price=100.0)
    log = wait_until(lambda: (rows := _get(simulator, "orders"))[0]["status"] == "COMPLETE" and rows)
    assert [(o["tradingsymbol"], o["status"], o["broker"]) for o in log] == [
        ("SBIN", "COMPLETE", "kite"),
        ("ITC", "REJECTED", "kite"),
    ]
    keys = {"order_id", "tradingsymbol", "exchange", "transaction_type", "quantity", "product", "order_type"}
    keys |= {"status", "average_price", "tag", "order_timestamp", "broker"}
    assert keys <= set(log[0]) and log[0]["tag"] == "log1"
    assert _get(simulator, "orders?broker=upstox") == []

    sessions = _get(simulator, "sessions")
    assert [(s["broker"], s["user_id"], s["access_token"]) for s in sessions] == [
        ("kite", simulator.info["kite"]["user_id"], kite_client.access_token)
    ]
    assert sessions[0]["request_token"] and sessions[0]["expired"] is False

    assert _post(simulator, "reset", {}).json() == {"reset": True}
    assert _get(simulator, "orders") == [] and kite_client.orders() == []
    assert _get(simulator, "sessions")[0]["expired"] is False


def test_feeds_show_connections_and_subscriptions(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    kite = simulator.info["kite"]
    url = f"{kite['ws_url']}?api_key={kite['api_key']}&access_token={kite_client.access_token}"
    parse = KiteTicker("k", "t")._parse_binary

    async def scenario() -> tuple[list[Any], list[dict[str, Any]]]:
        async with websockets.connect(url, additional_headers={"X-Kite-Version": "3"}) as ws:
            await ws.send(json.dumps({"a": "subscribe", "v": [408065, 738561, 999]}))
            await ws.send(json.dumps({"a": "mode", "v": ["full", [408065]]}))
            ticks: list[dict[str, Any]] = []
            while len(ticks) < 3:
                message = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(message, bytes) and len(message) > 1:
                    ticks.extend(parse(message))
            feeds = await asyncio.to_thread(_get, simulator, "feeds")
            return ticks, feeds

    ticks, feeds = asyncio.run(scenario())
    assert [(t["instrument_token"], t["mode"]) for t in ticks] == [
        (408065, "quote"),
        (738561, "quote"),
        (408065, "full"),
    ]
    (feed,) = feeds
    assert feed["broker"] == "kite" and feed["path"] == "/kite-ws"
    assert feed["subscriptions"] == {"408065": "full", "738561": "quote"}


def test_the_ticker_refuses_a_bad_token(simulator: SimulatorHandle) -> None:
    kite = simulator.info["kite"]

    async def connect() -> None:
        async with websockets.connect(f"{kite['ws_url']}?api_key={kite['api_key']}&access_token=nope"):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
        asyncio.run(connect())
    assert caught.value.response.status_code == 403


def test_runner_handle_helpers_and_context_manager() -> None:
    with start_simulator(seed=3, auto=False) as handle:
        quote = handle.set_price("NSE:ITC", 401.0)
        assert (quote.ltp, quote.bid, quote.ask) == (401.0, 400.95, 401.05)
        handle.fault(fault="fill_delay", seconds=2)
        assert handle.call(lambda: handle.sim.faults.fill_delay) == 2.0
        handle.clear_faults()
        assert handle.exchange.all_orders() == []
        url = handle.url
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/_sim/info", timeout=2)


def test_same_seed_same_prices() -> None:
    def walk(seed: int) -> list[float]:
        with start_simulator(seed=seed, auto=False) as handle:
            market = handle.sim.market
            inst = handle.sim.instruments.find("NSE:HDFCBANK")
            assert inst is not None
            return [handle.call(lambda: (market.step(), market.ltp(inst))[1]) for _ in range(5)]

    assert walk(21) == walk(21) != walk(22)


# ----------------------------------------------------------------------------- who may drive the control API


def test_the_control_api_needs_the_runs_token_when_required() -> None:
    with start_simulator(seed=7, auto=False, fill_delay=0.0, require_token=True) as simulator:
        _check_the_token_is_needed(simulator)


def test_without_require_token_the_documented_control_api_needs_no_token(simulator: SimulatorHandle) -> None:
    # DESIGN.md's control API, as harnesses written against it call it: no token, JSON or no content type.
    info = requests.get(f"{simulator.url}/_sim/info", timeout=5)
    assert info.status_code == 200 and info.json()["kite"]["api_key"] == simulator.info["kite"]["api_key"]
    bare = requests.post(f"{simulator.url}/_sim/auto", data='{"on": true}', timeout=5)
    assert bare.status_code == 200
    assert simulator.call(lambda: simulator.sim.auto) is True
    assert requests.post(f"{simulator.url}/_sim/auto", json={"on": False}, timeout=5).status_code == 200
    assert simulator.call(lambda: simulator.sim.auto) is False


def test_the_demo_simulator_requires_its_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from trailstop_gui import runtime
    from trailstop_gui.simulator import runner
    from trailstop_gui.simulator.cli import _parser

    assert _parser().parse_args(["--require-token"]).require_token is True
    assert _parser().parse_args([]).require_token is False

    class Started(Exception):
        pass

    seen: dict[str, Any] = {}

    def start(**options: Any) -> SimulatorHandle:
        seen.update(options)
        raise Started

    monkeypatch.setattr(runner, "start_simulator", start)
    monkeypatch.setattr(runtime, "configure_logging", lambda *_a, **_k: None)
    with pytest.raises(Started):
        runtime.build_runtime(data_directory=str(tmp_path), demo=True)
    assert seen["require_token"] is True  # the trader's in-process demo: a web page cannot drive it


def _check_the_token_is_needed(simulator: SimulatorHandle) -> None:
    for method, path in (("GET", "info"), ("GET", "orders"), ("GET", "sessions"), ("POST", "auto")):
        bare = requests.request(method, f"{simulator.url}/_sim/{path}", json={"on": False}, timeout=5)
        assert bare.status_code == 401, (method, path)
        assert simulator.info["kite"]["api_secret"] not in bare.text
        wrong = requests.request(
            method,
            f"{simulator.url}/_sim/{path}",
            json={"on": False},
            headers={"X-Sim-Token": "x"},
            timeout=5,
        )
        assert wrong.status_code == 401
    assert _get(simulator, "info")["control_token"] == simulator.control_headers["X-Sim-Token"]
    # The instrument list is public market data: the app's instrument service reads it with no token.
    assert requests.get(f"{simulator.url}/_sim/instruments", timeout=5).status_code == 200


def test_the_control_api_answers_no_web_page(simulator: SimulatorHandle) -> None:
    headers = simulator.control_headers
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away.
    rebound = requests.get(
        f"{simulator.url}/_sim/info", headers={**headers, "Host": f"evil.example:{simulator.port}"}, timeout=5
    )
    assert rebound.status_code == 403
    cross = requests.post(
        f"{simulator.url}/_sim/auto",
        json={"on": True},
        headers={**headers, "Origin": "http://evil.example"},
        timeout=5,
    )
    assert cross.status_code == 403
    # A plain HTML form can send text/plain or a form body without a preflight: not accepted.
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        form = requests.post(
            f"{simulator.url}/_sim/auto",
            data='{"on": true}',
            headers={**headers, "Content-Type": content_type},
            timeout=5,
        )
        assert form.status_code == 415, content_type
    assert simulator.call(lambda: simulator.sim.auto) is False  # none of them switched the walk on
    same_origin = requests.post(
        f"{simulator.url}/_sim/auto",
        json={"on": False},
        headers={**headers, "Origin": simulator.url},
        timeout=5,
    )
    assert same_origin.status_code == 200
    localhost = requests.get(
        f"{simulator.url}/_sim/info", headers={**headers, "Host": f"localhost:{simulator.port}"}, timeout=5
    )
    assert localhost.status_code == 200
