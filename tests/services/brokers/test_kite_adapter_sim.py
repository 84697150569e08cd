"""KiteBroker against the loopback simulator: every Broker call, every error mapping, rate limiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.services.conftest import control
from trailstop_gui.models.domain import Product, Side
from trailstop_gui.services.brokers.base import Broker, Order, OrderRequest, OrderStatus, OrderType
from trailstop_gui.services.brokers.errors import (
    RETRY_AFTER_CAP,
    AmbiguousError,
    AuthError,
    BrokerError,
    BrokerInputError,
    RateLimitedError,
    RejectedError,
    TemporaryError,
)
from trailstop_gui.services.brokers.form_login import submit_login_form
from trailstop_gui.services.brokers.kite import KiteBroker
from trailstop_gui.services.brokers.rate_limit import RateLimiter
from trailstop_gui.simulator.runner import SimulatorHandle

INFY = 408065
NIFTY_FUT = "NFO:NIFTY26DECFUT"


def login(sim: SimulatorHandle, **options: Any) -> KiteBroker:
    """A KiteBroker logged in as the simulator's demo user, through the login form and the exchange."""
    k = sim.info["kite"]
    options.setdefault("timeout", 3.0)
    broker = KiteBroker(k["api_key"], root=k["api_root"], login_uri=k["login_url"], **options)
    params = submit_login_form(broker.login_url(), k["user_id"], k["password"])
    broker.exchange_token(params["request_token"], k["api_secret"])
    return broker


@pytest.fixture
def kite(simulator: SimulatorHandle) -> Iterator[KiteBroker]:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    yield login(simulator)


def order_request(
    side: Side = Side.BUY,
    quantity: int = 1,
    order_type: OrderType = OrderType.MARKET,
    *,
    symbol: str = "INFY",
    exchange: str = "NSE",
    product: Product = Product.MIS,
    price: float | None = None,
    trigger: float | None = None,
    tag: str | None = None,
    urgent: bool = False,
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        exchange=exchange,
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
    return [o for o in control(sim, "orders?broker=kite") if tag is None or o.get("tag") == tag]


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


def test_login_url_and_request_token_exchange(simulator: SimulatorHandle) -> None:
    k = simulator.info["kite"]
    broker = KiteBroker(k["api_key"], root=k["api_root"], login_uri=k["login_url"])
    url = broker.login_url()
    assert url.startswith(k["login_url"] + "?")
    assert parse_qs(urlsplit(url).query) == {"api_key": [k["api_key"]], "v": ["3"]}
    params = submit_login_form(url, k["user_id"], k["password"])
    assert params["status"] == "success"

    session = broker.exchange_token(params["request_token"], k["api_secret"])

    assert (session.user_id, session.broker, session.user_name) == (k["user_id"], "kite", "Demo Trader")
    assert session.access_token not in repr(session)
    [issued] = [s for s in control(simulator, "sessions") if s["broker"] == "kite"]
    assert issued["request_token"] == params["request_token"]
    assert issued["access_token"] == session.access_token
    assert broker.profile().user_id == k["user_id"]  # the adapter uses the new token from now on


def test_a_request_token_works_once_and_only_with_the_right_secret(simulator: SimulatorHandle) -> None:
    k = simulator.info["kite"]
    broker = KiteBroker(k["api_key"], root=k["api_root"], login_uri=k["login_url"])
    params = submit_login_form(broker.login_url(), k["user_id"], k["password"])
    with pytest.raises(AuthError) as wrong:
        broker.exchange_token(params["request_token"], "not-the-secret")
    assert params["request_token"] not in str(wrong.value)
    fresh = submit_login_form(broker.login_url(), k["user_id"], k["password"])
    broker.exchange_token(fresh["request_token"], k["api_secret"])
    with pytest.raises(AuthError) as reused:
        broker.exchange_token(fresh["request_token"], k["api_secret"])
    assert k["api_secret"] not in str(reused.value) and fresh["request_token"] not in str(reused.value)


def test_profile(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    profile = kite.profile()
    assert profile.user_id == simulator.info["kite"]["user_id"]
    assert profile.broker == "ZERODHA"
    assert {"NSE", "NFO"} <= set(profile.exchanges)
    assert {"MIS", "CNC", "NRML"} <= set(profile.products)
    assert set(profile.order_types) == {"MARKET", "LIMIT", "SL", "SL-M"}


# ----------------------------------------------------------------------------- orders


def test_a_market_order_carries_market_protection_and_fills_at_the_ask(
    simulator: SimulatorHandle, kite: KiteBroker
) -> None:
    order_id = kite.place_order(order_request(Side.BUY, 2, tag="ENTRY1"))

    order = final(kite, order_id)
    assert order.status is OrderStatus.COMPLETE
    assert (order.average_price, order.filled_quantity, order.pending_quantity) == (1500.05, 2, 0)
    assert (order.side, order.product, order.instrument, order.tag) == (Side.BUY, Product.MIS, INFY, "ENTRY1")
    assert order.placed_at is not None and order.placed_at.tzinfo is not None
    [logged] = sim_orders(simulator)
    assert logged["market_protection"] == -1  # automatic: the broker refuses API market orders without it
    assert "mktp" in logged["tags"]
    history = kite.order_history(order_id)
    assert history[0].raw_status == "PUT ORDER REQ RECEIVED"
    assert history[0].status is OrderStatus.PENDING
    assert history[-1].status is OrderStatus.COMPLETE
    assert [o.order_id for o in kite.orders()] == [order_id]


def test_a_custom_market_protection_reaches_the_broker(simulator: SimulatorHandle) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    kite = login(simulator, market_protection=3)
    final(kite, kite.place_order(order_request(Side.SELL, 1)))
    [logged] = sim_orders(simulator)
    assert logged["market_protection"] == 3


def test_sl_m_waits_for_its_trigger_then_fills_at_the_bid(
    simulator: SimulatorHandle, kite: KiteBroker
) -> None:
    order_id = kite.place_order(order_request(Side.SELL, 1, OrderType.SL_M, trigger=1490.0, tag="EXIT1"))
    order = wait_for(kite, order_id, lambda o: o.status is not OrderStatus.PENDING)
    assert order.status is OrderStatus.TRIGGER_PENDING
    assert order.trigger_price == 1490.0

    simulator.set_price("NSE:INFY", 1489.0, bid=1488.95, ask=1489.05)

    order = final(kite, order_id)
    assert (order.status, order.average_price) == (OrderStatus.COMPLETE, 1488.95)
    assert sim_orders(simulator, "EXIT1")[0]["market_protection"] == -1


def test_sl_triggers_into_a_limit(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    order_id = kite.place_order(order_request(Side.BUY, 1, OrderType.SL, price=1512.0, trigger=1510.0))
    order = wait_for(kite, order_id, lambda o: o.status is OrderStatus.TRIGGER_PENDING)
    assert (order.price, order.trigger_price, order.order_type) == (1512.0, 1510.0, OrderType.SL)
    simulator.set_price("NSE:INFY", 1511.0, bid=1510.95, ask=1511.05)
    order = final(kite, order_id)
    assert (order.status, order.average_price) == (OrderStatus.COMPLETE, 1511.05)


def test_a_partial_fill_is_reported_and_the_rest_can_be_cancelled(
    simulator: SimulatorHandle, kite: KiteBroker
) -> None:
    fault(simulator, fault="partial_fill", ratio=0.5)
    order_id = kite.place_order(order_request(Side.BUY, 4))
    order = wait_for(kite, order_id, lambda o: o.filled_quantity > 0)
    assert (order.status, order.filled_quantity, order.pending_quantity) == (OrderStatus.OPEN, 2, 2)
    assert not order.is_final
    kite.cancel_order(order_id)
    order = final(kite, order_id)
    assert (order.status, order.filled_quantity) == (OrderStatus.CANCELLED, 2)
    assert [p.quantity for p in kite.positions()] == [2]


def test_limit_order_modify_and_cancel(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    order_id = kite.place_order(order_request(Side.BUY, 1, OrderType.LIMIT, price=1450.0))
    assert wait_for(kite, order_id, lambda o: o.status is OrderStatus.OPEN).price == 1450.0

    assert kite.modify_order(order_id, price=1455.0, quantity=3) == order_id
    order = wait_for(kite, order_id, lambda o: o.status is OrderStatus.OPEN and o.price == 1455.0)
    assert (order.quantity, order.pending_quantity) == (3, 3)

    assert kite.cancel_order(order_id) == order_id
    assert final(kite, order_id).status is OrderStatus.CANCELLED
    with pytest.raises(RejectedError):
        kite.cancel_order(order_id)
    with pytest.raises(RejectedError):
        kite.modify_order(order_id, price=1460.0)
    assert [o["status"] for o in sim_orders(simulator)] == ["CANCELLED"]


def test_modify_a_limit_into_a_market_order(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    order_id = kite.place_order(order_request(Side.SELL, 1, OrderType.LIMIT, price=1600.0))
    wait_for(kite, order_id, lambda o: o.status is OrderStatus.OPEN)
    kite.modify_order(order_id, order_type=OrderType.MARKET)  # needs market protection, as placing does
    order = final(kite, order_id)
    assert (order.status, order.average_price) == (OrderStatus.COMPLETE, 1499.95)


def test_find_order_by_tag_gives_the_latest_order_with_it(kite: KiteBroker) -> None:
    first = kite.place_order(resting_buy(tag="X7K2P1"))
    second = kite.place_order(resting_buy(tag="X7K2P1"))
    kite.place_order(resting_buy(tag="OTHER"))
    found = kite.find_order_by_tag("X7K2P1")
    assert found is not None and found.order_id == second != first
    assert kite.find_order_by_tag("NOSUCHTAG") is None


# ----------------------------------------------------------------------------- portfolio and market


def test_positions_net_the_fills(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    simulator.set_price(NIFTY_FUT, 24500.0, bid=24499.95, ask=24500.05)
    for request in (
        order_request(Side.BUY, 3),
        order_request(Side.SELL, 1),
        order_request(Side.SELL, 75, symbol="NIFTY26DECFUT", exchange="NFO", product=Product.NRML),
    ):
        final(kite, kite.place_order(request))

    positions = {(p.symbol, p.product): p for p in kite.positions()}
    infy = positions["INFY", Product.MIS]
    assert (infy.quantity, infy.instrument, infy.quote_key, infy.side) == (2, INFY, "NSE:INFY", Side.BUY)
    assert infy.average_price == pytest.approx(1500.05)
    future = positions["NIFTY26DECFUT", Product.NRML]
    assert (future.quantity, future.exchange, future.side) == (-75, "NFO", Side.SELL)


def test_holdings(kite: KiteBroker) -> None:
    holdings = {h.symbol: h for h in kite.holdings()}
    assert {"INFY", "ITC", "SBIN", "TCS"} <= set(holdings)
    infy = holdings["INFY"]
    assert (infy.instrument, infy.quote_key, infy.isin) == (INFY, "NSE:INFY", "INE009A01021")
    assert infy.quantity > 0 and infy.average_price > 0


def test_ltp(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    simulator.set_price("NSE:TCS", 3452.1)
    assert kite.ltp(["NSE:INFY", "NSE:TCS"]) == {"NSE:INFY": 1500.0, "NSE:TCS": 3452.1}
    assert kite.ltp(["NSE:NOSUCHSTOCK", "NSE:INFY"]) == {"NSE:INFY": 1500.0}
    assert kite.ltp([]) == {}


def test_instruments(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    listed = control(simulator, "instruments")
    dump = {i.instrument: i for i in kite.instruments()}
    assert {i["kite_token"] for i in listed} <= set(dump)
    infy = dump[INFY]
    assert (infy.symbol, infy.exchange, infy.tick_size, infy.lot_size, infy.quote_key) == (
        "INFY",
        "NSE",
        0.05,
        1,
        "NSE:INFY",
    )
    [future] = [i for i in listed if i["symbol"] == NIFTY_FUT]
    fut = dump[future["kite_token"]]
    assert (fut.lot_size, fut.instrument_type, fut.exchange) == (75, "FUT", "NFO")
    assert fut.expiry == date.fromisoformat(future["expiry"])


# ----------------------------------------------------------------------------- errors


def test_expired_tokens_mean_login_again(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    fault(simulator, fault="expire_tokens", broker="kite")
    calls: list[Callable[[], object]] = [
        kite.orders,
        kite.positions,
        kite.holdings,
        kite.profile,
        lambda: kite.ltp(["NSE:INFY"]),
        lambda: kite.place_order(order_request()),
        lambda: kite.cancel_order("1"),
    ]
    for call in calls:
        with pytest.raises(AuthError) as raised:
            call()
        assert raised.value.status == 403 and not raised.value.retryable
    assert sim_orders(simulator) == []
    # A new login gives a token that works.
    k = simulator.info["kite"]
    params = submit_login_form(kite.login_url(), k["user_id"], k["password"])
    kite.exchange_token(params["request_token"], k["api_secret"])
    assert kite.orders() == []


@pytest.mark.parametrize(
    ("status", "order_error", "read_error"),
    [
        (400, RejectedError, BrokerInputError),
        (403, AuthError, AuthError),  # TokenException
        (429, RateLimitedError, RateLimitedError),
        (500, AmbiguousError, TemporaryError),
        (502, AmbiguousError, TemporaryError),
        (503, AmbiguousError, TemporaryError),
        (504, AmbiguousError, TemporaryError),
    ],
)
def test_http_errors_map_onto_the_project_errors(
    simulator: SimulatorHandle,
    kite: KiteBroker,
    status: int,
    order_error: type[BrokerError],
    read_error: type[BrokerError],
) -> None:
    fault(simulator, fault="http_error", status=status, path="/orders/regular")
    with pytest.raises(BrokerError) as placed:
        kite.place_order(resting_buy())
    assert type(placed.value) is order_error
    assert placed.value.status == status

    fault(simulator, fault="http_error", status=status, path="/portfolio/positions")
    with pytest.raises(BrokerError) as read:
        kite.positions()
    assert type(read.value) is read_error

    # Each fault fired once and the request was not carried out.
    assert kite.positions() == []
    assert sim_orders(simulator) == []


@pytest.mark.parametrize(("header", "seconds"), [("2", 2.0), ("3600", RETRY_AFTER_CAP), ("inf", None)])
def test_a_429s_retry_after_is_read_and_capped(
    simulator: SimulatorHandle, kite: KiteBroker, header: str, seconds: float | None
) -> None:
    # kiteconnect raises NetworkException without the headers; the adapter still reads Retry-After.
    fault(simulator, fault="http_error", status=429, path="/orders/regular", retry_after=header)
    with pytest.raises(RateLimitedError) as caught:
        kite.place_order(resting_buy())
    assert caught.value.retry_after == seconds
    assert sim_orders(simulator) == []


def test_an_order_that_failed_after_reaching_the_broker_is_ambiguous_and_found_by_its_tag(
    simulator: SimulatorHandle, kite: KiteBroker
) -> None:
    fault(simulator, fault="http_error", status=502, path="/orders/regular", phase="after")
    with pytest.raises(AmbiguousError):
        kite.place_order(order_request(Side.SELL, 1, tag="EXIT7", urgent=True))
    found = kite.find_order_by_tag("EXIT7")
    assert found is not None
    assert [o["order_id"] for o in sim_orders(simulator, "EXIT7")] == [found.order_id]


def test_slow_answers_past_the_timeout(simulator: SimulatorHandle) -> None:
    kite = login(simulator, timeout=0.3)
    fault(simulator, fault="slow", seconds=1.0, path="/orders/regular")  # carried out, then answered late
    started = time.monotonic()
    with pytest.raises(AmbiguousError, match="timed out"):
        kite.place_order(resting_buy(tag="SLOW1"))
    assert time.monotonic() - started < 0.9
    found = kite.find_order_by_tag("SLOW1")
    assert found is not None  # the order went through: retrying blindly would have placed a second one

    fault(simulator, fault="slow", seconds=1.0, path="/portfolio/positions")
    with pytest.raises(TemporaryError, match="timed out") as read:
        kite.positions()
    assert not isinstance(read.value, AmbiguousError)  # a read is safe to repeat


def test_orders_the_broker_refuses(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    # At the door: the order never gets an id.
    with pytest.raises(RejectedError) as unknown:
        kite.place_order(order_request(symbol="NOSUCHSTOCK"))
    assert unknown.value.status == 400 and not unknown.value.retryable
    # After acceptance: an id, then REJECTED with the broker's reason.
    fault(simulator, fault="reject_orders", reason="RMS:Margin Exceeds")
    order = final(kite, kite.place_order(order_request(tag="REJ1")))
    assert (order.status, order.status_message) == (OrderStatus.REJECTED, "RMS:Margin Exceeds")
    order = final(kite, kite.place_order(order_request(product=Product.NRML)))
    assert order.status is OrderStatus.REJECTED
    assert order.status_message is not None and "NRML" in order.status_message
    # A trigger on the wrong side of the last price.
    order = final(kite, kite.place_order(order_request(Side.SELL, 1, OrderType.SL_M, trigger=1510.0)))
    assert order.status is OrderStatus.REJECTED


def test_bad_input(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    with pytest.raises(BrokerInputError, match="tag"):
        kite.place_order(order_request(tag="not a tag!"))  # refused before anything is sent
    with pytest.raises(BrokerInputError) as lookup:
        kite.order("999999")
    assert lookup.value.status == 400
    with pytest.raises(BrokerInputError):
        kite.order_history("999999")
    with pytest.raises(RejectedError):  # an order call: the broker refused it
        kite.cancel_order("999999")
    assert sim_orders(simulator) == []


# ----------------------------------------------------------------------------- rate limiting


def test_a_burst_of_exits_from_several_threads_stays_within_kites_order_limits(
    simulator: SimulatorHandle, kite: KiteBroker
) -> None:
    """14 urgent orders at once: our limiter spreads them so that the simulator (10/s) never says 429."""
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: kite.place_order(resting_buy(urgent=True)), range(14)))
    elapsed = time.monotonic() - started

    assert len(set(ids)) == 14  # no call raised RateLimitedError
    logged = sim_orders(simulator)
    assert len(logged) == 14
    assert elapsed >= 1.0  # the 11th waited for the first second to pass
    assert most_in_one_second([o["received_at"] for o in logged]) <= 10


def test_ordinary_orders_leave_a_slot_for_exits(simulator: SimulatorHandle, kite: KiteBroker) -> None:
    started = time.monotonic()
    for _ in range(9):
        kite.place_order(resting_buy())
    assert time.monotonic() - started < 0.9
    kite.place_order(resting_buy(urgent=True))  # the tenth slot of this second is kept for an exit
    assert time.monotonic() - started < 0.9
    kite.place_order(resting_buy())  # an ordinary order waits for the next second
    assert time.monotonic() - started >= 1.0
    assert len(sim_orders(simulator)) == 11


def test_without_our_limiter_the_simulator_answers_429(simulator: SimulatorHandle) -> None:
    """The control experiment for the tests above: the simulator does enforce Kite's limit."""
    kite = login(simulator, limiter=RateLimiter([(1000, 1.0)]))
    refused: list[RateLimitedError] = []
    for _ in range(13):
        try:
            kite.place_order(resting_buy())
        except RateLimitedError as exc:
            refused.append(exc)
    assert refused and all(exc.status == 429 for exc in refused)
    assert len(sim_orders(simulator)) == 13 - len(refused) <= 10


def test_a_full_client_side_limiter_refuses_without_sending(simulator: SimulatorHandle) -> None:
    kite = login(simulator, limiter=RateLimiter([(1, 60.0)]), rate_limit_wait=0.05)
    kite.place_order(resting_buy())
    with pytest.raises(RateLimitedError) as raised:
        kite.place_order(resting_buy())
    assert raised.value.status is None
    assert len(sim_orders(simulator)) == 1
