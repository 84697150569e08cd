"""Order routes against the simulator with a real proxy in between.

The simulator registers 127.0.0.2 for the demo users; a proxy bound to 127.0.0.2 is the trader's VPS. So
orders sent direct (from 127.0.0.1) are refused with the broker's "unregistered IP" answer, and the same
orders through the proxy pass. Reads never take the route: they work even while the proxy is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.proxies import ROUTE_ADDRESS, HttpProxy, Socks5Proxy, loopback_alias_works
from tests.services.brokers.test_kite_adapter_sim import login as kite_login
from tests.services.brokers.test_kite_adapter_sim import order_request
from tests.services.brokers.test_upstox_adapter_sim import INFY
from tests.services.brokers.test_upstox_adapter_sim import login as upstox_login
from tests.services.conftest import control
from trailstop_gui.models.domain import Product, Side
from trailstop_gui.services.brokers.base import OrderRequest
from trailstop_gui.services.brokers.errors import TemporaryError, UnregisteredIPError
from trailstop_gui.services.brokers.order_route import RouteState, parse_route
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator

pytestmark = pytest.mark.skipif(not loopback_alias_works(), reason="needs 127.0.0.2 (Linux loopback)")

ALERT = "orders from this IP are refused by {}: register it or set an order route"


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=1, auto=False, fill_delay=0.0, registered_ips=(ROUTE_ADDRESS,))
    handle.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    yield handle
    handle.stop()


@pytest.fixture(params=["http", "socks5"])
def proxy(request: pytest.FixtureRequest) -> Iterator[Any]:
    proxy = (HttpProxy if request.param == "http" else Socks5Proxy)().start()
    yield proxy
    proxy.stop()


def upstox_buy() -> OrderRequest:
    return OrderRequest(
        symbol="INFY", exchange="NSE", instrument=INFY, side=Side.BUY, quantity=1, product=Product.MIS
    )


def test_kite_orders_direct_are_refused_with_the_named_error(simulator: SimulatorHandle) -> None:
    kite = kite_login(simulator)
    with pytest.raises(UnregisteredIPError) as caught:
        kite.place_order(order_request(tag="direct1"))
    assert caught.value.alert_text == ALERT.format("Zerodha")
    assert isinstance(caught.value, TemporaryError)  # nothing was placed: retry once the route works
    assert control(simulator, "orders?broker=kite") == []
    assert kite.positions() == []  # reads work from any IP


def test_kite_orders_pass_through_the_route_and_reads_stay_direct(
    simulator: SimulatorHandle, proxy: Any
) -> None:
    kite = kite_login(simulator, order_route=parse_route(proxy.url))
    order_id = kite.place_order(order_request(tag="routed1"))
    assert [o["order_id"] for o in control(simulator, "orders?broker=kite")] == [order_id]
    tunnels = proxy.tunnels
    assert tunnels >= 1
    kite.orders()
    kite.positions()
    assert proxy.tunnels == tunnels  # reads did not take the route
    proxy.stop()
    assert kite.order(order_id).order_id == order_id  # a read while the route is down still works
    with pytest.raises(TemporaryError) as caught:
        kite.cancel_order(order_id)
    assert not isinstance(caught.value, UnregisteredIPError)  # the proxy is down, not refused


def test_upstox_orders_direct_refused_routed_pass(simulator: SimulatorHandle, proxy: Any) -> None:
    upstox = upstox_login(simulator)
    with pytest.raises(UnregisteredIPError) as caught:
        upstox.place_order(upstox_buy())
    assert caught.value.alert_text == ALERT.format("Upstox")
    upstox.set_order_route(parse_route(proxy.url))
    order_id = upstox.place_order(upstox_buy())
    assert [o["order_id"] for o in control(simulator, "orders?broker=upstox")] == [order_id]
    assert proxy.tunnels >= 1


@pytest.mark.parametrize("broker", ["kite", "upstox"])
def test_check_order_route_tells_refused_ok_and_unreachable(simulator: SimulatorHandle, broker: str) -> None:
    client: Any = kite_login(simulator) if broker == "kite" else upstox_login(simulator)
    refused = client.check_order_route()
    assert refused.state is RouteState.REFUSED and refused.failed
    assert "orders from this IP are refused by" in refused.message
    with Socks5Proxy() as proxy:
        client.set_order_route(parse_route(proxy.url))
        ok = client.check_order_route()
        assert ok.state is RouteState.OK and not ok.failed, ok
        if broker == "upstox":  # Upstox tells the registered IPs (GET /v2/user/ip)
            assert ok.registered_ips == (ROUTE_ADDRESS,)
        port = proxy.port
    client.set_order_route(parse_route(f"socks5://{ROUTE_ADDRESS}:{port}"))  # nothing listens there now
    down = client.check_order_route()
    assert down.state is RouteState.UNREACHABLE and down.failed
    assert control(simulator, f"orders?broker={broker}") == []  # the probe never placed anything


def test_a_proxy_with_a_password_gets_it_and_the_password_never_shows(simulator: SimulatorHandle) -> None:
    with HttpProxy(credentials=("trader", "s3cret-pass")) as proxy:
        route = parse_route(f"http://trader@{ROUTE_ADDRESS}:{proxy.port}")
        upstox = upstox_login(simulator, order_route=route, route_password="s3cret-pass")
        upstox.place_order(upstox_buy())
        assert route.describe() == f"HTTP trader@{ROUTE_ADDRESS}:{proxy.port}"
        kite = kite_login(simulator, order_route=route, route_password="wrong-pass")
        with pytest.raises(TemporaryError) as caught:
            kite.place_order(order_request(tag="badpass1"))
        assert "wrong-pass" not in str(caught.value)


def test_registering_an_ip_through_the_control_api(simulator: SimulatorHandle) -> None:
    kite = kite_login(simulator)
    control(simulator, "ips", {"broker": "kite", "ips": ["127.0.0.1"]})
    order_id = kite.place_order(order_request(tag="nowok1"))
    assert order_id
    listed = control(simulator, "ips")
    assert {"broker": "kite", "user_id": "DM1234", "ips": ["127.0.0.1"]} in listed
    control(simulator, "ips", {"broker": "kite", "ips": ["127.0.0.2"]})
    with pytest.raises(UnregisteredIPError):
        kite.cancel_order(order_id)
    with pytest.raises(requests.HTTPError) as caught:
        control(simulator, "ips", {"ips": ["127.0.0.1", "127.0.0.2", "127.0.0.3"]})
    assert caught.value.response.status_code == 400


@pytest.mark.parametrize("broker", ["kite", "upstox"])
def test_every_order_call_tells_the_route_observer_and_the_check_does_not(
    simulator: SimulatorHandle, broker: str
) -> None:
    client: Any = kite_login(simulator) if broker == "kite" else upstox_login(simulator)
    heard: list[UnregisteredIPError | None] = []
    client.order_route_observer = heard.append

    def place() -> None:
        client.place_order(order_request(tag="seen1") if broker == "kite" else upstox_buy())

    with pytest.raises(UnregisteredIPError) as caught:
        place()
    assert heard == [caught.value]  # the refusal of a real order call, the same error the caller got
    with pytest.raises(UnregisteredIPError) as cancel:
        client.cancel_order("240101000000001", urgent=True)  # a safety stop taken away: refused alike
    assert heard == [caught.value, cancel.value]
    assert client.check_order_route().state is RouteState.REFUSED
    client.positions()
    assert len(heard) == 2  # neither the route's own check nor a read reports anything
    control(simulator, "ips", {"broker": broker, "ips": ["127.0.0.1"]})  # the IP registered again
    place()
    assert heard[2:] == [None]  # accepted: the route works
