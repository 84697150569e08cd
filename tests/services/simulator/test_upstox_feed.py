"""The Upstox sockets: the V3 market-data feed (SDK streamer, our decoder and feed client) and the portfolio
stream, with the stall, drop and expiry faults."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import upstox_client
import websocket
from upstox_client.feeder import market_data_streamer_v3, portfolio_data_streamer
from upstox_client.feeder.market_data_feeder_v3 import MarketDataFeederV3
from upstox_client.feeder.portfolio_data_feeder import PortfolioDataFeeder
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.services.simulator.upstox_support import (
    INFY_KEY,
    ITC_KEY,
    NIFTY_KEY,
    SBIN_KEY,
    bearer,
    fault,
    login,
    sdk_client,
)
from trailstop_gui.models.domain import Tick
from trailstop_gui.services.brokers.feed_loop import Depth
from trailstop_gui.services.brokers.upstox_feed import UpstoxFeed, UpstoxPortfolioFeed, decode_message
from trailstop_gui.simulator.runner import SimulatorHandle

TIMEOUT = 5.0


@pytest.fixture
def token(simulator: SimulatorHandle) -> str:
    return login(simulator)


def _feeds(handle: SimulatorHandle) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = requests.get(
        f"{handle.url}/_sim/feeds", headers=handle.control_headers, timeout=5
    ).json()
    return [r for r in rows if r["broker"] == "upstox"]


def _authorize(handle: SimulatorHandle, token: str, path: str) -> str:
    response = requests.get(handle.url + path, headers=bearer(token), timeout=5)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["authorized_redirect_uri"] == data["authorizedRedirectUri"]
    url: str = data["authorized_redirect_uri"]
    return url


def _market_url(handle: SimulatorHandle, token: str) -> str:
    return _authorize(handle, token, "/v3/feed/market-data-feed/authorize")


def _sub(method: str, keys: list[str], mode: str | None = None) -> bytes:
    data: dict[str, Any] = {"instrumentKeys": keys}
    if mode is not None:
        data["mode"] = mode
    return json.dumps({"guid": "test", "method": method, "data": data}).encode()


async def _frame(ws: ClientConnection) -> bytes:
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, bytes), f"the V3 feed sends binary frames only, got {frame!r}"
    return frame


async def _ticks(ws: ClientConnection) -> list[Tick]:
    """The ticks of the next frame that carries any."""
    while True:
        ticks = decode_message(await _frame(ws))
        if ticks:
            return ticks


async def _silent(ws: ClientConnection, seconds: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


# -- the SDK's own V3 streamer ---------------------------------------------------------------------


class _Messages:
    def __init__(self) -> None:
        self.items: queue.Queue[Any] = queue.Queue()

    def next(self, predicate: Callable[[Any], bool] = lambda m: True) -> Any:
        while True:
            item = self.items.get(timeout=TIMEOUT)
            if predicate(item):
                return item


@pytest.fixture
def sdk_streamer_url(monkeypatch: pytest.MonkeyPatch, simulator: SimulatorHandle) -> str:
    """Point the SDK's V3 feeder at the simulator: the SDK hard-codes wss://api.upstox.com in connect()."""
    url = f"{simulator.sim.ws_base_url}/v3/feed/market-data-feed"

    class SimFeeder(MarketDataFeederV3):  # type: ignore[misc]
        def connect(self) -> None:
            # The SDK's connect, with the simulator's URL and a daemon thread (a failed test must not hang).
            existing = getattr(self, "ws", None)
            if existing is not None and existing.sock:
                return
            headers = {"Authorization": self.api_client.configuration.auth_settings()["OAUTH2"]["value"]}
            self.ws = websocket.WebSocketApp(
                url,
                header=headers,
                on_open=self.on_open,
                on_message=self.on_message,
                on_error=self.on_error,
                on_close=self.on_close,
            )
            threading.Thread(target=self.ws.run_forever, daemon=True).start()

    monkeypatch.setattr(market_data_streamer_v3, "MarketDataFeederV3", SimFeeder)
    return url


def test_sdk_streamer_receives_market_info_snapshots_and_live_feed(
    simulator: SimulatorHandle, token: str, sdk_streamer_url: str, wait_until: Callable[..., Any]
) -> None:
    streamer = upstox_client.MarketDataStreamerV3(sdk_client(simulator, token), [INFY_KEY, NIFTY_KEY], "full")
    streamer.auto_reconnect(False)
    messages = _Messages()
    errors: list[Any] = []
    streamer.on("message", messages.items.put)
    streamer.on("error", errors.append)
    streamer.connect()
    try:
        info = messages.next()
        assert info["type"] == "market_info"
        assert info["marketInfo"]["segmentStatus"]["NSE_EQ"] == "NORMAL_OPEN"

        snapshot = messages.next(lambda m: "feeds" in m)
        assert snapshot.get("type", "initial_feed") == "initial_feed"  # 0 is left out of the dict
        assert set(snapshot["feeds"]) == {INFY_KEY, NIFTY_KEY}
        assert "indexFF" in snapshot["feeds"][NIFTY_KEY]["fullFeed"]
        assert snapshot["feeds"][INFY_KEY]["requestMode"] == "full_d5"

        simulator.set_price("NSE:INFY", 1600.0, bid=1599.95, ask=1600.05)
        live = messages.next(lambda m: "feeds" in m)
        assert live["type"] == "live_feed" and set(live["feeds"]) == {INFY_KEY}
        market = live["feeds"][INFY_KEY]["fullFeed"]["marketFF"]
        assert market["ltpc"]["ltp"] == 1600.0
        depth = market["marketLevel"]["bidAskQuote"]
        assert len(depth) == 5 and (depth[0]["bidP"], depth[0]["askP"]) == (1599.95, 1600.05)
        assert [d["bidP"] for d in depth] == sorted((d["bidP"] for d in depth), reverse=True)
        assert market["marketOHLC"]["ohlc"][0]["interval"] == "1d"

        streamer.change_mode([INFY_KEY], "ltpc")
        changed = messages.next(lambda m: "feeds" in m)
        assert set(changed["feeds"][INFY_KEY]) == {"ltpc"}  # requestMode ltpc is 0: left out of the dict
        assert changed["feeds"][INFY_KEY]["ltpc"]["ltp"] == 1600.0

        streamer.unsubscribe([INFY_KEY])
        wait_until(lambda: INFY_KEY not in _feeds(simulator)[0]["subscriptions"], what="unsubscribe")
        simulator.set_price("NSE:INFY", 1610.0)
        simulator.set_price("NSE:NIFTY 50", 24400.0)
        after = messages.next(lambda m: "feeds" in m)
        assert set(after["feeds"]) == {NIFTY_KEY}
        assert after["feeds"][NIFTY_KEY]["fullFeed"]["indexFF"]["ltpc"]["ltp"] == 24400.0
        assert errors == []
    finally:
        streamer.disconnect()


def test_sdk_streamer_is_refused_with_401_after_expiry(
    simulator: SimulatorHandle, token: str, sdk_streamer_url: str
) -> None:
    fault(simulator, fault="expire_tokens", broker="upstox")
    streamer = upstox_client.MarketDataStreamerV3(sdk_client(simulator, token), [INFY_KEY], "ltpc")
    errors: queue.Queue[Any] = queue.Queue()
    streamer.on("error", errors.put)
    streamer.connect()
    try:
        assert "401 Unauthorized" in str(errors.get(timeout=TIMEOUT))
    finally:
        if streamer.feeder.ws is not None:
            streamer.feeder.ws.close()


# -- our own feed client and decoder ---------------------------------------------------------------


def test_our_feed_client_and_decoder_read_every_mode(simulator: SimulatorHandle, token: str) -> None:
    async def scenario() -> None:
        feed = UpstoxFeed(lambda: token, api_root=simulator.url, ping_interval=None)
        ws = await feed.open()
        try:
            assert decode_message(await _frame(ws)) == []  # market_info
            for frame in feed.subscribe_frames(
                {INFY_KEY: Depth.DEPTH, NIFTY_KEY: Depth.DEPTH, ITC_KEY: Depth.LTP}
            ):
                await ws.send(frame)
            seen: dict[Any, Tick] = {}
            while len(seen) < 3:
                seen.update((t.instrument, t) for t in await _ticks(ws))
            quote = await asyncio.to_thread(
                simulator.call, simulator.sim.market.quote, simulator.sim.instruments.find(INFY_KEY)
            )
            infy = seen[INFY_KEY]
            assert (infy.ltp, infy.bid, infy.ask, infy.volume) == (
                quote.ltp,
                quote.bid,
                quote.ask,
                quote.volume,
            )
            assert seen[NIFTY_KEY].bid is None and seen[NIFTY_KEY].ltp > 0
            assert seen[ITC_KEY].bid is None and seen[ITC_KEY].ask is None
            subscriptions = (await asyncio.to_thread(_feeds, simulator))[0]["subscriptions"]
            assert subscriptions == {INFY_KEY: "full", NIFTY_KEY: "full", ITC_KEY: "ltpc"}

            await asyncio.to_thread(simulator.set_price, "NSE:INFY", 1601.5, 1601.45, 1601.6)
            (tick,) = await _ticks(ws)
            assert (tick.instrument, tick.ltp, tick.bid, tick.ask) == (INFY_KEY, 1601.5, 1601.45, 1601.6)
            assert tick.ts is not None and tick.ts > 0

            await ws.send(_sub("change_mode", [INFY_KEY], "option_greeks"))
            (greeks,) = await _ticks(ws)
            assert (greeks.ltp, greeks.bid, greeks.ask) == (1601.5, 1601.45, 1601.6)
            await ws.send(_sub("change_mode", [SBIN_KEY], "full"))  # not subscribed: nothing happens
            await ws.send(_sub("unsub", [INFY_KEY, ITC_KEY]))
            await ws.send(b"{not json")  # ignored, the socket stays up
            await ws.send(_sub("sub", [SBIN_KEY, "NSE_EQ|NOPE"], "ltpc"))
            assert [t.instrument for t in await _ticks(ws)] == [SBIN_KEY]
            await asyncio.to_thread(simulator.set_price, "NSE:INFY", 1602.0)
            await asyncio.to_thread(simulator.set_price, "NSE:SBIN", 801.0)
            assert [(t.instrument, t.ltp) for t in await _ticks(ws)] == [(SBIN_KEY, 801.0)]
        finally:
            await ws.close()

    asyncio.run(scenario())


# -- faults on the market socket -------------------------------------------------------------------


def test_a_stalled_socket_sends_nothing_and_answers_no_ping(simulator: SimulatorHandle, token: str) -> None:
    async def scenario() -> None:
        async with connect(_market_url(simulator, token), ping_interval=None) as ws:
            await ws.recv()  # market_info
            await ws.send(_sub("sub", [INFY_KEY], "full"))
            await _ticks(ws)
            await asyncio.wait_for(await ws.ping(), TIMEOUT)  # answered while healthy

            await asyncio.to_thread(fault, simulator, fault="stall_ws")
            assert (await asyncio.to_thread(_feeds, simulator))[0]["stalled"] is True
            unanswered = asyncio.ensure_future(await ws.ping())
            await asyncio.to_thread(simulator.set_price, "NSE:INFY", 1590.0)
            assert await _silent(ws)
            assert not unanswered.done()

            await asyncio.to_thread(fault, simulator, fault="clear", kind="stall_ws")
            await asyncio.wait_for(await ws.ping(), TIMEOUT)
            await asyncio.to_thread(simulator.set_price, "NSE:INFY", 1595.0)
            assert [t.ltp for t in await _ticks(ws)] == [1595.0]

    asyncio.run(scenario())


def test_drop_fault_closes_upstox_sockets(simulator: SimulatorHandle, token: str) -> None:
    async def scenario() -> None:
        async with connect(_market_url(simulator, token), ping_interval=None) as ws:
            await ws.recv()
            result = await asyncio.to_thread(fault, simulator, fault="drop_ws", broker="upstox")
            assert result["dropped"] == 1
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)

    asyncio.run(scenario())


def test_expired_tokens_close_the_feed_and_refuse_authorize_and_handshake(
    simulator: SimulatorHandle, token: str
) -> None:
    unused_url = _market_url(simulator, token)
    plain_url = f"{simulator.sim.ws_base_url}/v3/feed/market-data-feed"

    async def scenario() -> None:
        async with connect(plain_url, additional_headers=bearer(token), ping_interval=None) as ws:
            await ws.recv()  # a Bearer header on the plain URL works too (the SDK's way)
            await asyncio.to_thread(fault, simulator, fault="expire_tokens", broker="upstox")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        for url, headers in ((unused_url, None), (plain_url, bearer(token))):
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, additional_headers=headers)
            assert refused.value.response.status_code == 401

    asyncio.run(scenario())
    response = requests.get(
        f"{simulator.url}/v3/feed/market-data-feed/authorize", headers=bearer(token), timeout=5
    )
    assert response.status_code == 401 and response.json()["errors"][0]["errorCode"] == "UDAPI100050"


def test_a_socket_code_works_once(simulator: SimulatorHandle, token: str) -> None:
    url = _market_url(simulator, token)

    async def scenario() -> None:
        async with connect(url, ping_interval=None) as ws:
            await ws.recv()
        with pytest.raises(InvalidStatus) as again:
            await connect(url)
        assert again.value.response.status_code == 401

    asyncio.run(scenario())


# -- the portfolio stream --------------------------------------------------------------------------


@pytest.fixture
def sdk_portfolio_streamer(monkeypatch: pytest.MonkeyPatch, simulator: SimulatorHandle) -> Iterator[None]:
    base = simulator.sim.ws_base_url

    class SimPortfolioFeeder(PortfolioDataFeeder):  # type: ignore[misc]
        def get_websocket_url(self) -> str:
            return base + str(super().get_websocket_url()).removeprefix("wss://api.upstox.com")

    monkeypatch.setattr(portfolio_data_streamer, "PortfolioDataFeeder", SimPortfolioFeeder)
    yield


def test_sdk_portfolio_streamer_gets_order_updates(
    simulator: SimulatorHandle, token: str, sdk_portfolio_streamer: None, wait_until: Callable[..., Any]
) -> None:
    client = sdk_client(simulator, token)
    streamer = upstox_client.PortfolioDataStreamer(client, order_update=True)
    messages = _Messages()
    opened = threading.Event()
    streamer.on("message", messages.items.put)
    streamer.on("open", opened.set)
    streamer.connect()
    try:
        assert opened.wait(TIMEOUT)
        (conn,) = wait_until(lambda: _feeds(simulator), what="the portfolio socket")
        assert conn["kind"] == "upstox-portfolio" and conn["subscriptions"] == {"order": "update_type"}
        simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
        placed = upstox_client.OrderApi(client).place_order(
            upstox_client.PlaceOrderRequest(
                quantity=2,
                product="I",
                validity="DAY",
                price=0.0,
                tag="pf1",
                instrument_token=INFY_KEY,
                order_type="MARKET",
                transaction_type="BUY",
                disclosed_quantity=0,
                trigger_price=0.0,
                is_amo=False,
            ),
            "2.0",
        )
        updates = [json.loads(messages.next()) for _ in range(2)]
        assert [u["status"] for u in updates] == ["open", "complete"]
        done = updates[-1]
        assert done["update_type"] == "order" and done["order_id"] == placed.data.order_id
        assert (done["tag"], done["transaction_type"], done["filled_quantity"]) == ("pf1", "BUY", 2)
        assert done["average_price"] == 1500.05 and done["instrument_token"] == INFY_KEY
        (update,) = UpstoxPortfolioFeed(lambda: token).decode(json.dumps(done)).orders
        assert (update.status, update.tag, update.filled_quantity) == ("complete", "pf1", 2)
    finally:
        streamer.disconnect()


def test_portfolio_authorize_gives_a_one_time_url_with_position_updates(
    simulator: SimulatorHandle, token: str
) -> None:
    url = _authorize(simulator, token, "/v2/feed/portfolio-stream-feed/authorize?update_types=order,position")
    assert url.startswith(f"{simulator.sim.ws_base_url}/v2/feed/portfolio-stream-feed?code=")
    other_user_orders = sdk_client(simulator, login(simulator))  # same demo user, another session

    async def scenario() -> list[dict[str, Any]]:
        async with connect(url, ping_interval=None) as ws:
            subscriptions = (await asyncio.to_thread(_feeds, simulator))[0]["subscriptions"]
            assert set(subscriptions) == {"order", "position"}
            await asyncio.to_thread(simulator.set_price, "NSE:SBIN", 800.0, 799.95, 800.05)
            await asyncio.to_thread(
                upstox_client.OrderApiV3(other_user_orders).place_order,
                upstox_client.PlaceOrderV3Request(
                    quantity=4,
                    product="D",
                    validity="DAY",
                    price=0.0,
                    instrument_token=SBIN_KEY,
                    order_type="MARKET",
                    transaction_type="BUY",
                    disclosed_quantity=0,
                    trigger_price=0.0,
                    is_amo=False,
                    market_protection=-1,
                ),
            )
            return [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(3)]

    updates = asyncio.run(scenario())
    assert [(u["update_type"], u.get("status")) for u in updates] == [
        ("order", "open"),
        ("order", "complete"),
        ("position", None),
    ]
    assert (updates[2]["quantity"], updates[2]["product"], updates[2]["instrument_token"]) == (
        4,
        "D",
        SBIN_KEY,
    )
    bad = requests.get(
        f"{simulator.url}/v2/feed/portfolio-stream-feed/authorize", headers=bearer("nope"), timeout=5
    )
    assert bad.status_code == 401
