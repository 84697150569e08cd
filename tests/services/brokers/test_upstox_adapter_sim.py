"""UpstoxBroker against the loopback simulator: every Broker call, every error mapping, rate limiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.services.conftest import control
from trailstop_gui.models.domain import Product, Side
from trailstop_gui.services.brokers.base import Broker, Order, OrderRequest, OrderStatus, OrderType
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    AuthError,
    BrokerError,
    BrokerInputError,
    RateLimitedError,
    RejectedError,
    TemporaryError,
)
from trailstop_gui.services.brokers.form_login import submit_login_form
from trailstop_gui.services.brokers.rate_limit import RateLimiter
from trailstop_gui.services.brokers.upstox import UpstoxBroker
from trailstop_gui.simulator.runner import SimulatorHandle

INFY = "NSE_EQ|INE009A01021"
TCS = "NSE_EQ|INE467B01029"
NIFTY_FUT = "NSE_FO|53001"
MASTER_PATH = "/market-quote/instruments/exchange/complete.json.gz"


def make_broker(sim: SimulatorHandle, **options: Any) -> UpstoxBroker:
    u = sim.info["upstox"]
    options.setdefault("timeout", 3.0)
    options.setdefault("instruments_url", sim.url + MASTER_PATH)
    return UpstoxBroker(
        u["client_id"],
        api_root=u["api_root"],
        order_root=u["order_root"],
        dialog_url=u["dialog_url"],
        **options,
    )


def log_in(sim: SimulatorHandle, broker: UpstoxBroker) -> None:
    u = sim.info["upstox"]
    params = submit_login_form(
        broker.authorization_url(u["redirect_uri"], "st4te"), u["user_id"], u["password"]
    )
    broker.exchange_code(params["code"], u["client_secret"], u["redirect_uri"])


def login(sim: SimulatorHandle, **options: Any) -> UpstoxBroker:
    """An UpstoxBroker logged in as the simulator's demo user, through the dialog and the code exchange."""
    broker = make_broker(sim, **options)
    log_in(sim, broker)
    return broker


@pytest.fixture
def upstox(simulator: SimulatorHandle) -> Iterator[UpstoxBroker]:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    yield login(simulator)


def order_request(
    side: Side = Side.BUY,
    quantity: int = 1,
    order_type: OrderType = OrderType.MARKET,
    *,
    instrument: str = INFY,
    symbol: str = "INFY",
    product: Product = Product.MIS,
    price: float | None = None,
    trigger: float | None = None,
    tag: str | None = None,
    urgent: bool = False,
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        exchange="NSE",
        instrument=instrument,
        side=side,
        quantity=quantity,
        product=product,
        order_type=order_type,
        price=price,
        trigger_price=trigger,
        tag=tag,
        urgent=urgent,
    )


def resting_buy(**options: Any) -> OrderRequest:
    """A LIMIT buy far below the market: it stays open and changes nothing else."""
    return order_request(Side.BUY, 1, OrderType.LIMIT, price=1000.0, **options)


def sim_orders(sim: SimulatorHandle, tag: str | None = None) -> list[dict[str, Any]]:
    return [o for o in control(sim, "orders?broker=upstox") if tag is None or o.get("tag") == tag]


def fault(sim: SimulatorHandle, **spec: Any) -> None:
    control(sim, "fault", spec)


def wait_for(
    broker: Broker, order_id: str, predicate: Callable[[Order], bool], timeout: float = 5.0
) -> Order:
    deadline = time.monotonic() + timeout
    while True:
        order = broker.order(order_id)
        if predicate(order):
            return order
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} stayed {order.raw_status}")
        time.sleep(0.02)


def final(broker: Broker, order_id: str) -> Order:
    return wait_for(broker, order_id, lambda o: o.is_final)


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times if start <= t < start + 1.0) for start in times), default=0)


# ----------------------------------------------------------------------------- session


def test_authorization_url_and_code_exchange(simulator: SimulatorHandle) -> None:
    u = simulator.info["upstox"]
    broker = make_broker(simulator)
    url = broker.authorization_url(u["redirect_uri"], "st4te")
    assert url.startswith(u["dialog_url"] + "?")
    assert parse_qs(urlsplit(url).query) == {
        "response_type": ["code"],
        "client_id": [u["client_id"]],
        "redirect_uri": [u["redirect_uri"]],
        "state": ["st4te"],
    }
    params = submit_login_form(url, u["user_id"], u["password"])
    assert params["state"] == "st4te"

    session = broker.exchange_code(params["code"], u["client_secret"], u["redirect_uri"])

    assert (session.user_id, session.broker, session.user_name) == (u["user_id"], "upstox", "Demo Trader")
    assert session.access_token not in repr(session)
    [issued] = [s for s in control(simulator, "sessions") if s["broker"] == "upstox"]
    assert (issued["code"], issued["access_token"]) == (params["code"], session.access_token)
    assert broker.profile().user_id == u["user_id"]  # the adapter uses the new token from now on


def test_a_code_works_once_and_only_with_the_right_secret(simulator: SimulatorHandle) -> None:
    u = simulator.info["upstox"]
    broker = make_broker(simulator)
    url = broker.authorization_url(u["redirect_uri"], "s")
    code = submit_login_form(url, u["user_id"], u["password"])["code"]
    with pytest.raises(AuthError) as wrong:
        broker.exchange_code(code, "not-the-secret", u["redirect_uri"])
    assert wrong.value.status == 401
    fresh = submit_login_form(url, u["user_id"], u["password"])["code"]
    broker.exchange_code(fresh, u["client_secret"], u["redirect_uri"])
    with pytest.raises(AuthError) as reused:
        broker.exchange_code(fresh, u["client_secret"], u["redirect_uri"])
    assert u["client_secret"] not in str(reused.value)


def test_profile(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    profile = upstox.profile()
    assert profile.user_id == simulator.info["upstox"]["user_id"]
    assert profile.broker == "UPSTOX"
    assert {"NSE", "NFO"} <= set(profile.exchanges)
    assert {"I", "D"} <= set(profile.products)


# ----------------------------------------------------------------------------- orders


@pytest.mark.parametrize("order_api", ["v3", "v2"])
def test_a_market_order_fills_at_the_ask(simulator: SimulatorHandle, order_api: Literal["v2", "v3"]) -> None:
    """v3 (the default) sends market_protection -1; the simulator refuses anything but -1 or 0-25."""
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    upstox = login(simulator, order_api=order_api)
    order_id = upstox.place_order(order_request(Side.BUY, 2, tag="ENTRY1"))

    order = final(upstox, order_id)
    assert order.status is OrderStatus.COMPLETE
    assert (order.average_price, order.filled_quantity, order.pending_quantity) == (1500.05, 2, 0)
    assert (order.side, order.product, order.raw_product, order.instrument) == (
        Side.BUY,
        Product.MIS,
        "I",
        INFY,
    )
    assert (order.tag, order.raw_status) == ("ENTRY1", "complete")
    history = upstox.order_history(order_id)
    assert history[0].status is OrderStatus.PENDING
    assert history[-1].status is OrderStatus.COMPLETE
    assert [o.order_id for o in upstox.orders()] == [order_id]
    assert [o["order_id"] for o in sim_orders(simulator, "ENTRY1")] == [order_id]


def test_sl_m_waits_for_its_trigger_then_fills_at_the_bid(
    simulator: SimulatorHandle, upstox: UpstoxBroker
) -> None:
    order_id = upstox.place_order(order_request(Side.SELL, 1, OrderType.SL_M, trigger=1490.0, tag="EXIT1"))
    order = wait_for(upstox, order_id, lambda o: o.status is not OrderStatus.PENDING)
    assert (order.status, order.raw_status) == (OrderStatus.TRIGGER_PENDING, "trigger pending")

    simulator.set_price("NSE:INFY", 1489.0, bid=1488.95, ask=1489.05)

    order = final(upstox, order_id)
    assert (order.status, order.average_price) == (OrderStatus.COMPLETE, 1488.95)


def test_sl_triggers_into_a_limit(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    order_id = upstox.place_order(order_request(Side.BUY, 1, OrderType.SL, price=1512.0, trigger=1510.0))
    order = wait_for(upstox, order_id, lambda o: o.status is OrderStatus.TRIGGER_PENDING)
    assert (order.price, order.trigger_price, order.order_type) == (1512.0, 1510.0, OrderType.SL)
    simulator.set_price("NSE:INFY", 1511.0, bid=1510.95, ask=1511.05)
    order = final(upstox, order_id)
    assert (order.status, order.average_price) == (OrderStatus.COMPLETE, 1511.05)


def test_a_partial_fill_is_reported_and_the_rest_can_be_cancelled(
    simulator: SimulatorHandle, upstox: UpstoxBroker
) -> None:
    fault(simulator, fault="partial_fill", ratio=0.5)
    order_id = upstox.place_order(order_request(Side.BUY, 4))
    order = wait_for(upstox, order_id, lambda o: o.filled_quantity > 0)
    assert (order.status, order.filled_quantity, order.pending_quantity) == (OrderStatus.OPEN, 2, 2)
    upstox.cancel_order(order_id)
    order = final(upstox, order_id)
    assert (order.status, order.filled_quantity) == (OrderStatus.CANCELLED, 2)
    assert [p.quantity for p in upstox.positions()] == [2]


@pytest.mark.parametrize("order_api", ["v3", "v2"])
def test_limit_order_modify_and_cancel(simulator: SimulatorHandle, order_api: Literal["v2", "v3"]) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    upstox = login(simulator, order_api=order_api)
    order_id = upstox.place_order(order_request(Side.BUY, 1, OrderType.LIMIT, price=1450.0))
    assert wait_for(upstox, order_id, lambda o: o.status is OrderStatus.OPEN).price == 1450.0

    # Only the price changes; the adapter fills in the rest of the spec Upstox wants.
    assert upstox.modify_order(order_id, price=1455.0) == order_id
    order = wait_for(upstox, order_id, lambda o: o.status is OrderStatus.OPEN and o.price == 1455.0)
    assert (order.quantity, order.order_type) == (1, OrderType.LIMIT)
    upstox.modify_order(order_id, quantity=3)
    order = wait_for(upstox, order_id, lambda o: o.quantity == 3)
    assert order.price == 1455.0

    assert upstox.cancel_order(order_id) == order_id
    assert final(upstox, order_id).status is OrderStatus.CANCELLED
    with pytest.raises(RejectedError):
        upstox.cancel_order(order_id)
    with pytest.raises(RejectedError):
        upstox.modify_order(order_id, price=1460.0)
    assert [o["status"] for o in sim_orders(simulator)] == ["CANCELLED"]


def test_modify_a_limit_into_a_market_order(upstox: UpstoxBroker) -> None:
    order_id = upstox.place_order(order_request(Side.SELL, 1, OrderType.LIMIT, price=1600.0))
    wait_for(upstox, order_id, lambda o: o.status is OrderStatus.OPEN)
    upstox.modify_order(order_id, order_type=OrderType.MARKET)
    order = final(upstox, order_id)
    assert (order.status, order.average_price) == (OrderStatus.COMPLETE, 1499.95)


def test_find_order_by_tag_gives_the_latest_order_with_it(upstox: UpstoxBroker) -> None:
    first = upstox.place_order(resting_buy(tag="X7K2P1"))
    second = upstox.place_order(resting_buy(tag="X7K2P1"))
    upstox.place_order(resting_buy(tag="OTHER"))
    found = upstox.find_order_by_tag("X7K2P1")
    assert found is not None and found.order_id == second != first
    assert upstox.find_order_by_tag("NOSUCHTAG") is None


# ----------------------------------------------------------------------------- portfolio and market


def test_positions_net_the_fills(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    simulator.set_price(NIFTY_FUT, 24500.0, bid=24499.95, ask=24500.05)
    for request in (
        order_request(Side.BUY, 3),
        order_request(Side.SELL, 1),
        order_request(Side.SELL, 75, instrument=NIFTY_FUT, symbol="NIFTY26DECFUT", product=Product.NRML),
    ):
        final(upstox, upstox.place_order(request))

    positions = {(p.instrument, p.product): p for p in upstox.positions()}
    infy = positions[INFY, Product.MIS]
    assert (infy.quantity, infy.quote_key, infy.symbol, infy.side) == (2, INFY, "INFY", Side.BUY)
    assert infy.average_price == pytest.approx(1500.05)
    future = positions[NIFTY_FUT, Product.NRML]  # Upstox's "D" on a future is carry-forward
    assert (future.quantity, future.raw_product, future.side) == (-75, "D", Side.SELL)


def test_holdings(upstox: UpstoxBroker) -> None:
    holdings = {h.symbol: h for h in upstox.holdings()}
    assert {"INFY", "ITC", "SBIN", "TCS"} <= set(holdings)
    infy = holdings["INFY"]
    assert (infy.instrument, infy.quote_key, infy.isin) == (INFY, INFY, "INE009A01021")
    assert infy.quantity > 0 and infy.average_price > 0


def test_ltp_by_instrument_key(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    simulator.set_price("NSE:TCS", 3452.1)
    assert upstox.ltp([INFY, TCS]) == {INFY: 1500.0, TCS: 3452.1}
    assert upstox.ltp(["NSE_EQ|INE000000000", INFY]) == {INFY: 1500.0}  # unknown keys are left out
    assert upstox.ltp([]) == {}


def test_instruments_from_the_master_file(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    listed = control(simulator, "instruments")
    master = {i.instrument: i for i in upstox.instruments()}
    assert {i["upstox_key"] for i in listed} <= set(master)
    infy = master[INFY]
    assert (infy.symbol, infy.segment, infy.lot_size, infy.quote_key) == ("INFY", "NSE_EQ", 1, INFY)
    assert infy.tick_size == 0.05  # the file says 5 (paise)
    [future] = [i for i in listed if i["upstox_key"] == NIFTY_FUT]
    fut = master[NIFTY_FUT]
    assert (fut.lot_size, fut.instrument_type, fut.symbol) == (75, "FUT", "NIFTY26DECFUT")
    assert fut.expiry == date.fromisoformat(future["expiry"])


# ----------------------------------------------------------------------------- errors


def test_expired_tokens_mean_login_again(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    fault(simulator, fault="expire_tokens", broker="upstox")
    calls: list[Callable[[], object]] = [
        upstox.orders,
        upstox.positions,
        upstox.holdings,
        upstox.profile,
        lambda: upstox.ltp([INFY]),
        lambda: upstox.place_order(order_request()),
        lambda: upstox.cancel_order("1"),
    ]
    for call in calls:
        with pytest.raises(AuthError) as raised:
            call()
        assert raised.value.status == 401 and not raised.value.retryable
    assert sim_orders(simulator) == []
    log_in(simulator, upstox)  # a new login gives a token that works
    assert upstox.orders() == []


@pytest.mark.parametrize(
    ("status", "order_error", "read_error"),
    [
        (400, RejectedError, BrokerInputError),
        (401, AuthError, AuthError),
        (429, RateLimitedError, RateLimitedError),
        (500, AmbiguousError, TemporaryError),
        (502, AmbiguousError, TemporaryError),
        (503, AmbiguousError, TemporaryError),
    ],
)
def test_http_errors_map_onto_the_project_errors(
    simulator: SimulatorHandle,
    upstox: UpstoxBroker,
    status: int,
    order_error: type[BrokerError],
    read_error: type[BrokerError],
) -> None:
    fault(simulator, fault="http_error", status=status, path="/v3/order/place")
    with pytest.raises(BrokerError) as placed:
        upstox.place_order(resting_buy())
    assert type(placed.value) is order_error
    assert placed.value.status == status

    fault(simulator, fault="http_error", status=status, path="/v2/portfolio/short-term-positions")
    with pytest.raises(BrokerError) as read:
        upstox.positions()
    assert type(read.value) is read_error

    # Each fault fired once and the request was not carried out.
    assert upstox.positions() == []
    assert sim_orders(simulator) == []


def test_an_order_that_failed_after_reaching_the_broker_is_ambiguous_and_found_by_its_tag(
    simulator: SimulatorHandle, upstox: UpstoxBroker
) -> None:
    fault(simulator, fault="http_error", status=503, path="/v3/order/place", phase="after")
    with pytest.raises(AmbiguousError):
        upstox.place_order(order_request(Side.SELL, 1, tag="EXIT7", urgent=True))
    found = upstox.find_order_by_tag("EXIT7")
    assert found is not None
    assert [o["order_id"] for o in sim_orders(simulator, "EXIT7")] == [found.order_id]


def test_slow_answers_past_the_timeout(simulator: SimulatorHandle) -> None:
    upstox = login(simulator, timeout=0.3)
    fault(simulator, fault="slow", seconds=1.0, path="/v3/order/place")  # carried out, then answered late
    started = time.monotonic()
    with pytest.raises(AmbiguousError, match="timed out"):
        upstox.place_order(resting_buy(tag="SLOW1"))
    assert time.monotonic() - started < 0.9  # an order is never resent by the transport
    found = upstox.find_order_by_tag("SLOW1")
    assert found is not None
    assert len(sim_orders(simulator, "SLOW1")) == 1

    # A read is retried once by the transport; slow twice, it is a temporary error, never ambiguous.
    fault(simulator, fault="slow", seconds=1.0, path="/v2/portfolio/short-term-positions", count=2)
    with pytest.raises(TemporaryError, match="timed out") as read:
        upstox.positions()
    assert not isinstance(read.value, AmbiguousError)
    fault(simulator, fault="slow", seconds=1.0, path="/v2/portfolio/short-term-positions", count=1)
    assert upstox.positions() == []


def test_orders_the_broker_refuses(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    # At the door: the order never gets an id.
    with pytest.raises(RejectedError) as unknown:
        upstox.place_order(order_request(instrument="NSE_EQ|INE000000000"))
    assert (unknown.value.status, unknown.value.code) == (400, "UDAPI100011")
    assert not unknown.value.retryable
    # After acceptance: an id, then rejected with the broker's reason.
    fault(simulator, fault="reject_orders", reason="RMS:Margin Exceeds")
    order = final(upstox, upstox.place_order(order_request(tag="REJ1")))
    assert (order.status, order.raw_status) == (OrderStatus.REJECTED, "rejected")
    assert order.status_message == "RMS:Margin Exceeds"
    # Off the tick grid.
    order = final(upstox, upstox.place_order(order_request(order_type=OrderType.LIMIT, price=1450.03)))
    assert order.status is OrderStatus.REJECTED
    assert order.status_message is not None and "tick" in order.status_message.lower()


def test_bad_input(simulator: SimulatorHandle, upstox: UpstoxBroker) -> None:
    with pytest.raises(BrokerInputError, match="tag"):
        upstox.place_order(order_request(tag="not a tag!"))  # refused before anything is sent
    with pytest.raises(BrokerInputError, match="instrument key"):
        upstox.place_order(OrderRequest("INFY", "NSE", Side.BUY, 1, Product.MIS))  # a Kite-style request
    with pytest.raises(BrokerInputError) as lookup:
        upstox.order("999999")
    assert (lookup.value.status, lookup.value.code) == (400, "UDAPI100010")
    with pytest.raises(BrokerInputError):
        upstox.order_history("999999")
    with pytest.raises(BrokerInputError):
        upstox.ltp(["INFY"])  # not an instrument key
    # Order calls on an order that does not exist are refusals, as with Kite.
    with pytest.raises(RejectedError):
        upstox.cancel_order("999999")
    with pytest.raises(RejectedError):
        upstox.modify_order("999999", price=1.0)
    assert sim_orders(simulator) == []


# ----------------------------------------------------------------------------- rate limiting


def test_a_burst_of_exits_from_several_threads_stays_within_upstoxs_order_limits(
    simulator: SimulatorHandle, upstox: UpstoxBroker
) -> None:
    """15 urgent orders at once: our limiter spreads them so that the simulator (10/s) never says 429."""
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(lambda _: upstox.place_order(resting_buy(urgent=True)), range(15)))
    elapsed = time.monotonic() - started

    assert len(set(ids)) == 15  # no call raised RateLimitedError
    logged = sim_orders(simulator)
    assert len(logged) == 15
    assert elapsed >= 1.0  # the 11th waited for the first second to pass
    assert most_in_one_second([o["received_at"] for o in logged]) <= 10


def test_without_our_limiter_the_simulator_answers_429(simulator: SimulatorHandle) -> None:
    """The control experiment for the test above: the simulator does enforce Upstox's limit."""
    upstox = login(simulator, limiter=RateLimiter([(1000, 1.0)]))
    refused: list[RateLimitedError] = []
    for _ in range(13):
        try:
            upstox.place_order(resting_buy())
        except RateLimitedError as exc:
            refused.append(exc)
    assert refused and all((exc.status, exc.code) == (429, "UDAPI10005") for exc in refused)
    assert len(sim_orders(simulator)) == 13 - len(refused) <= 10
