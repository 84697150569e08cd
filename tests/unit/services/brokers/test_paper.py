"""PaperBroker: fills at bid/ask, limit crossing, stops, netting, tags, persistence. No Qt, no network."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.factories import unsaved_protection
from trailstop_gui.models import db
from trailstop_gui.models.domain import InstrumentId, Product, Side, Tick
from trailstop_gui.models.paper_db import PaperOrder, PaperTrade, create_paper_tables
from trailstop_gui.services.brokers.base import (
    UPSTOX_CAPABILITIES,
    Broker,
    Instrument,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
)
from trailstop_gui.services.brokers.errors import BrokerInputError, RejectedError, TemporaryError
from trailstop_gui.services.brokers.paper import PaperBroker, paper_capabilities

INFY = 408065  # a Kite token: ticks carry ints
TCS = 2953217
INFY_KEY = "NSE_EQ|INE009A01021"  # an Upstox instrument key
TCS_INSTRUMENT = Instrument(TCS, "TCS", "NSE", "NSE", "EQ", "TATA CONSULTANCY", 0.05, 1, "NSE:TCS")


class Feed:
    """A quote source as the services build one from the FeedWorker's latest quotes."""

    def __init__(self) -> None:
        self.quotes: dict[InstrumentId, tuple[float, float | None, float | None]] = {}

    def set(
        self, instrument: InstrumentId, ltp: float, bid: float | None = None, ask: float | None = None
    ) -> None:
        self.quotes[instrument] = (ltp, bid, ask)

    def __call__(self, instrument: InstrumentId) -> tuple[float, float | None, float | None] | None:
        return self.quotes.get(instrument)


class PriceBroker:
    """The real account's broker, asked for LTPs only."""

    def __init__(self, prices: dict[str, float] | None = None, fail: bool = False) -> None:
        self.prices = prices or {}
        self.fail = fail
        self.asked: list[list[str]] = []

    def ltp(self, keys: Sequence[str]) -> dict[str, float]:
        self.asked.append(list(keys))
        if self.fail:
            raise TemporaryError("connection failed")
        return {key: self.prices[key] for key in keys if key in self.prices}

    def instruments(self) -> list[Instrument]:
        return [TCS_INSTRUMENT]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "paper.db"
    db.init_db(path)
    create_paper_tables()
    yield path
    db.database.close()


@pytest.fixture
def feed() -> Feed:
    f = Feed()
    f.set(INFY, 1500.0, 1499.95, 1500.05)
    return f


@pytest.fixture
def paper(database: Path, feed: Feed) -> PaperBroker:
    return PaperBroker("acct1", feed)


def buy(
    quantity: int = 1,
    order_type: OrderType = OrderType.MARKET,
    *,
    side: Side = Side.BUY,
    price: float | None = None,
    trigger: float | None = None,
    tag: str | None = None,
    product: Product = Product.MIS,
    instrument: InstrumentId | None = INFY,
    symbol: str = "INFY",
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        exchange="NSE",
        side=side,
        quantity=quantity,
        product=product,
        order_type=order_type,
        price=price,
        trigger_price=trigger,
        instrument=instrument,
        tag=tag,
    )


def sell(quantity: int = 1, order_type: OrderType = OrderType.MARKET, **kwargs: object) -> OrderRequest:
    return buy(quantity, order_type, side=Side.SELL, **kwargs)  # type: ignore[arg-type]


def tick(
    ltp: float, bid: float | None = None, ask: float | None = None, instrument: InstrumentId = INFY
) -> Tick:
    return Tick(instrument=instrument, ltp=ltp, bid=bid, ask=ask)


# ----------------------------------------------------------------------------- the protocol and capabilities


def test_is_a_broker_with_paper_capabilities(paper: PaperBroker) -> None:
    assert isinstance(paper, Broker)
    caps = paper.capabilities
    assert caps.broker == "paper"
    assert caps.supports_gtt is False
    assert caps.needs_market_protection is False
    assert caps.broker_product(Product.NRML) == "NRML"
    # No rate limit worth the name: a burst of exits never waits.
    limiter = caps.make_limiter()
    assert all(limiter.try_acquire() for _ in range(1000))
    assert paper.profile().broker == "PAPER"
    assert paper.holdings() == []


def test_feed_modes_follow_the_feed_broker() -> None:
    caps = paper_capabilities(UPSTOX_CAPABILITIES)
    assert caps.depth_modes == UPSTOX_CAPABILITIES.depth_modes
    assert caps.ltp_mode == "ltpc"
    assert caps.broker == "paper"


# ----------------------------------------------------------------------------- market orders


def test_market_buy_fills_at_once_at_the_best_ask(paper: PaperBroker) -> None:
    order = paper.order(paper.place_order(buy(3)))
    assert order.status is OrderStatus.COMPLETE
    assert order.average_price == 1500.05
    assert (order.filled_quantity, order.pending_quantity) == (3, 0)
    assert order.instrument == INFY


def test_market_sell_fills_at_the_best_bid(paper: PaperBroker) -> None:
    order = paper.order(paper.place_order(sell(2)))
    assert order.status is OrderStatus.COMPLETE
    assert order.average_price == 1499.95


def test_without_depth_a_market_order_fills_at_the_ltp(paper: PaperBroker, feed: Feed) -> None:
    feed.set(INFY, 1501.0)  # an LTP-only feed mode
    assert paper.order(paper.place_order(buy())).average_price == 1501.0
    feed.set(INFY, 1502.0, bid=0.0, ask=-1.0)  # an empty book side counts as missing
    assert paper.order(paper.place_order(sell())).average_price == 1502.0


def test_a_market_order_without_any_price_waits_for_the_first_tick(paper: PaperBroker) -> None:
    order_id = paper.place_order(buy(instrument=TCS, symbol="TCS"))
    assert paper.order(order_id).status is OrderStatus.OPEN
    assert paper.on_tick(tick(3450.0, 3449.9, 3450.1, instrument=INFY)) == []  # another instrument
    changed = paper.on_tick(tick(3450.0, 3449.9, 3450.1, instrument=TCS))
    assert [o.order_id for o in changed] == [order_id]
    assert changed[0].status is OrderStatus.COMPLETE
    assert paper.order(order_id).average_price == 3450.1


def test_the_account_broker_is_the_fallback_price(database: Path) -> None:
    prices = PriceBroker({"NSE:TCS": 3452.1})
    paper = PaperBroker("acct1", None, price_broker=prices)
    order = paper.order(paper.place_order(buy(instrument=TCS, symbol="TCS")))
    assert order.status is OrderStatus.COMPLETE
    assert order.average_price == 3452.1
    assert prices.asked == [["NSE:TCS"]]
    assert paper.ltp(["NSE:TCS", "NSE:SBIN"]) == {"NSE:TCS": 3452.1}
    assert paper.instruments() == [TCS_INSTRUMENT]


def test_a_failing_fallback_leaves_the_order_waiting_and_poll_fills_it_later(database: Path) -> None:
    prices = PriceBroker({"NSE:TCS": 3452.1}, fail=True)
    paper = PaperBroker("acct1", None, price_broker=prices)
    order_id = paper.place_order(buy(instrument=TCS, symbol="TCS"))
    assert paper.order(order_id).status is OrderStatus.OPEN
    assert paper.poll() == []
    prices.fail = False
    assert [o.status for o in paper.poll()] == [OrderStatus.COMPLETE]
    assert paper.order(order_id).average_price == 3452.1


def test_the_feed_comes_before_the_last_tick_and_the_fallback(paper: PaperBroker, feed: Feed) -> None:
    paper.on_tick(tick(1400.0, 1399.95, 1400.05))
    assert paper.order(paper.place_order(buy())).average_price == 1500.05  # the quote source
    del feed.quotes[INFY]
    assert paper.order(paper.place_order(buy())).average_price == 1400.05  # the last tick


# ----------------------------------------------------------------------------- limit orders


def test_a_limit_that_crosses_on_arrival_fills_at_the_better_price(paper: PaperBroker) -> None:
    order = paper.order(paper.place_order(buy(order_type=OrderType.LIMIT, price=1510.0)))
    assert order.status is OrderStatus.COMPLETE
    assert order.average_price == 1500.05
    order = paper.order(paper.place_order(sell(order_type=OrderType.LIMIT, price=1490.0)))
    assert order.average_price == 1499.95


def test_a_resting_buy_limit_fills_at_its_limit_once_the_ask_reaches_it(paper: PaperBroker) -> None:
    order_id = paper.place_order(buy(2, OrderType.LIMIT, price=1495.0))
    assert paper.order(order_id).status is OrderStatus.OPEN
    assert paper.on_tick(tick(1494.0, 1494.9, 1495.05)) == []  # the LTP alone does not fill a buy
    changed = paper.on_tick(tick(1494.0, 1493.9, 1494.5))
    assert [o.status for o in changed] == [OrderStatus.COMPLETE]
    order = paper.order(order_id)
    assert order.average_price == 1495.0
    assert order.filled_quantity == 2


def test_a_resting_sell_limit_fills_once_the_bid_reaches_it(paper: PaperBroker) -> None:
    order_id = paper.place_order(sell(1, OrderType.LIMIT, price=1505.0))
    paper.on_tick(tick(1504.0, 1504.95, 1505.0))
    assert paper.order(order_id).status is OrderStatus.OPEN
    paper.on_tick(tick(1506.0, 1505.5, 1506.0))
    assert paper.order(order_id).status is OrderStatus.COMPLETE
    assert paper.order(order_id).average_price == 1505.0


def test_bad_ticks_are_ignored(paper: PaperBroker) -> None:
    order_id = paper.place_order(buy(1, OrderType.LIMIT, price=1495.0))
    for ltp in (0.0, -1.0, float("nan"), float("inf")):
        assert paper.on_tick(tick(ltp, 1.0, 1.0)) == []
    assert paper.order(order_id).status is OrderStatus.OPEN


# ----------------------------------------------------------------------------- stop orders


def test_sl_m_sell_waits_for_its_trigger_then_fills_at_the_bid(paper: PaperBroker) -> None:
    order_id = paper.place_order(sell(1, OrderType.SL_M, trigger=1490.0, tag="exit1"))
    assert paper.order(order_id).status is OrderStatus.TRIGGER_PENDING
    assert paper.on_tick(tick(1490.05, 1490.0, 1490.1)) == []  # the bid alone does not trigger
    changed = paper.on_tick(tick(1489.0, 1488.5, 1489.5))
    assert [o.status for o in changed] == [OrderStatus.OPEN, OrderStatus.COMPLETE]
    assert paper.order(order_id).average_price == 1488.5


def test_a_triggered_sl_acts_as_a_limit(paper: PaperBroker) -> None:
    order_id = paper.place_order(buy(1, OrderType.SL, price=1512.0, trigger=1510.0))
    assert paper.order(order_id).status is OrderStatus.TRIGGER_PENDING
    paper.on_tick(tick(1510.0, 1512.5, 1513.0))  # triggered, but the ask is above the limit
    assert paper.order(order_id).status is OrderStatus.OPEN
    paper.on_tick(tick(1511.0, 1511.5, 1511.9))
    order = paper.order(order_id)
    assert order.status is OrderStatus.COMPLETE
    assert order.average_price == 1512.0  # resting: at its limit
    statuses = [state.status for state in paper.order_history(order_id)]
    assert statuses == [OrderStatus.TRIGGER_PENDING, OrderStatus.OPEN, OrderStatus.COMPLETE]


def test_a_sl_that_triggers_into_a_crossing_book_takes_the_better_price(paper: PaperBroker) -> None:
    order_id = paper.place_order(sell(1, OrderType.SL, price=1480.0, trigger=1490.0))
    paper.on_tick(tick(1485.0, 1484.9, 1485.1))
    assert paper.order(order_id).average_price == 1484.9


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (buy(1, OrderType.SL_M, trigger=1499.0), "Trigger price for stoploss buy orders should be higher"),
        (sell(1, OrderType.SL_M, trigger=1500.0), "Trigger price for stoploss sell orders should be lower"),
        (
            sell(1, OrderType.SL, price=1495.0, trigger=1490.0),
            "Price for stoploss sell orders should be lower",
        ),
    ],
)
def test_stops_on_the_wrong_side_are_rejected_as_a_broker_does(
    paper: PaperBroker, request_: OrderRequest, message: str
) -> None:
    order = paper.order(paper.place_order(request_))
    assert order.status is OrderStatus.REJECTED
    assert order.status_message is not None and order.status_message.startswith(message)
    assert paper.on_tick(tick(1400.0)) == [] and paper.on_tick(tick(1600.0)) == []
    assert paper.positions() == []


# ----------------------------------------------------------------------------- modify and cancel


def test_modify_a_resting_limit_into_a_crossing_one_fills_it(paper: PaperBroker) -> None:
    order_id = paper.place_order(buy(1, OrderType.LIMIT, price=1490.0))
    assert paper.modify_order(order_id, price=1492.0, quantity=4) == order_id
    order = paper.order(order_id)
    assert (order.status, order.price, order.quantity) == (OrderStatus.OPEN, 1492.0, 4)
    paper.modify_order(order_id, order_type=OrderType.MARKET)
    order = paper.order(order_id)
    assert order.status is OrderStatus.COMPLETE
    assert (order.filled_quantity, order.average_price, order.order_type) == (4, 1500.05, OrderType.MARKET)


def test_modify_a_limit_into_a_stop(paper: PaperBroker) -> None:
    order_id = paper.place_order(sell(1, OrderType.LIMIT, price=1600.0))
    paper.modify_order(order_id, order_type=OrderType.SL_M, trigger_price=1480.0)
    assert paper.order(order_id).status is OrderStatus.TRIGGER_PENDING
    paper.on_tick(tick(1479.0, 1478.9, 1479.1))
    assert paper.order(order_id).average_price == 1478.9


def test_cancel_stops_a_resting_order_from_filling(paper: PaperBroker) -> None:
    order_id = paper.place_order(buy(1, OrderType.LIMIT, price=1490.0))
    assert paper.cancel_order(order_id) == order_id
    assert paper.on_tick(tick(1480.0, 1479.9, 1480.1)) == []
    order = paper.order(order_id)
    assert order.status is OrderStatus.CANCELLED
    assert (order.filled_quantity, order.pending_quantity) == (0, 0)
    assert paper.positions() == []


def test_final_and_unknown_orders_cannot_be_changed(paper: PaperBroker) -> None:
    done = paper.place_order(buy())
    with pytest.raises(RejectedError, match="complete"):
        paper.modify_order(done, price=1.0)
    with pytest.raises(RejectedError, match="complete"):
        paper.cancel_order(done)
    with pytest.raises(RejectedError):
        paper.cancel_order("P404")
    with pytest.raises(BrokerInputError):
        paper.order("P404")
    with pytest.raises(BrokerInputError):
        paper.order_history("P404")
    resting = paper.place_order(buy(1, OrderType.LIMIT, price=1490.0))
    with pytest.raises(BrokerInputError):
        paper.modify_order(resting, price=-5.0)
    with pytest.raises(BrokerInputError):
        paper.modify_order(resting, order_type="ICEBERG")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- positions


def test_positions_net_fills_with_average_cost_and_realised_pnl(paper: PaperBroker, feed: Feed) -> None:
    def fill_at(request: OrderRequest, price: float) -> None:
        feed.set(INFY, price, price, price)
        paper.place_order(request)

    fill_at(buy(10), 100.0)
    fill_at(buy(10), 110.0)
    [pos] = paper.positions()
    assert (pos.quantity, pos.average_price, pos.side) == (20, 105.0, Side.BUY)
    assert (pos.instrument, pos.quote_key, pos.product, pos.symbol) == (INFY, "NSE:INFY", Product.MIS, "INFY")
    fill_at(sell(15), 120.0)  # realises 15 x 15
    [pos] = paper.positions()
    assert (pos.quantity, pos.average_price) == (5, 105.0)
    assert pos.last_price == 120.0
    assert pos.pnl == pytest.approx(225.0 + 5 * 15.0)
    fill_at(sell(10), 100.0)  # closes 5 (-25) and opens a short of 5 at 100
    [pos] = paper.positions()
    assert (pos.quantity, pos.average_price, pos.side) == (-5, 100.0, Side.SELL)
    fill_at(buy(5), 90.0)  # covers the short: +50
    [pos] = paper.positions()
    assert (pos.quantity, pos.average_price, pos.side) == (0, 0.0, None)  # flat, still listed
    assert pos.pnl == pytest.approx(250.0)


def test_positions_are_per_instrument_and_product(paper: PaperBroker, feed: Feed) -> None:
    feed.set(TCS, 3450.0, 3449.9, 3450.1)
    paper.place_order(buy(2))
    paper.place_order(buy(3, product=Product.CNC))
    paper.place_order(sell(1, instrument=TCS, symbol="TCS"))
    got = {(p.instrument, p.product): p.quantity for p in paper.positions()}
    assert got == {(INFY, Product.MIS): 2, (INFY, Product.CNC): 3, (TCS, Product.MIS): -1}


def test_an_exit_sized_from_paper_positions_never_flips_them(paper: PaperBroker) -> None:
    """The exit path reads the live quantity from positions(): it must see what paper fills made."""
    from trailstop_gui.services.positions import open_quantity

    paper.place_order(buy(7))
    protection = unsaved_protection(10, broker="paper", instrument=str(INFY), peak=None, exit_tag="X1")
    assert open_quantity(protection, paper.positions(), paper.holdings(), paper.capabilities) == 7


def test_upstox_keys_are_their_own_quote_keys(paper: PaperBroker, feed: Feed) -> None:
    feed.set(INFY_KEY, 1500.0, 1499.95, 1500.05)
    paper.place_order(buy(2, instrument=INFY_KEY))
    [pos] = paper.positions()
    assert (pos.instrument, pos.quote_key) == (INFY_KEY, INFY_KEY)
    assert paper.ltp([INFY_KEY]) == {INFY_KEY: 1500.0}


def test_ltp_reads_the_feed_for_traded_instruments(paper: PaperBroker) -> None:
    paper.place_order(buy())
    assert paper.ltp(["NSE:INFY", "NSE:SBIN"]) == {"NSE:INFY": 1500.0}  # no fallback: SBIN unknown
    assert paper.ltp([]) == {}


# ----------------------------------------------------------------------------- tags and history


def test_find_order_by_tag_gives_the_latest_order_with_it(paper: PaperBroker) -> None:
    first = paper.place_order(buy(tag="X7K2P1"))
    assert paper.find_order_by_tag("X7K2P1") is not None
    second = paper.place_order(sell(1, OrderType.LIMIT, price=1600.0, tag="X7K2P1"))
    paper.place_order(buy(tag="OTHER"))
    found = paper.find_order_by_tag("X7K2P1")
    assert found is not None and found.order_id == second != first
    assert found.tag == "X7K2P1"
    assert paper.find_order_by_tag("NOPE") is None


def test_tags_the_brokers_refuse_are_refused_here_too(paper: PaperBroker) -> None:
    for tag in ("has space", "x" * 21, "under_score"):
        with pytest.raises(BrokerInputError):
            paper.place_order(buy(tag=tag))
    assert paper.orders() == []


def test_orders_and_history_in_order(paper: PaperBroker) -> None:
    a = paper.place_order(buy())
    b = paper.place_order(buy(1, OrderType.LIMIT, price=1490.0))
    paper.modify_order(b, price=1491.0)
    paper.cancel_order(b)
    assert [o.order_id for o in paper.orders()] == [a, b]
    history = paper.order_history(b)
    assert [(s.status, s.price) for s in history] == [
        (OrderStatus.OPEN, 1490.0),
        (OrderStatus.OPEN, 1491.0),
        (OrderStatus.CANCELLED, 1491.0),
    ]
    assert all(s.placed_at is not None and s.placed_at.tzinfo is not None for s in history)
    assert [s.status for s in paper.order_history(a)] == [OrderStatus.OPEN, OrderStatus.COMPLETE]


def test_listeners_hear_every_change_and_cannot_break_the_broker(database: Path, feed: Feed) -> None:
    heard: list[Order] = []

    def listener(order: Order) -> None:
        heard.append(order)
        raise RuntimeError("a buggy listener")

    paper = PaperBroker("acct1", feed, on_order_update=listener)
    order_id = paper.place_order(sell(1, OrderType.SL_M, trigger=1490.0))
    paper.on_tick(tick(1489.0, 1488.9, 1489.1))
    assert [(o.order_id, o.status) for o in heard] == [
        (order_id, OrderStatus.TRIGGER_PENDING),
        (order_id, OrderStatus.OPEN),
        (order_id, OrderStatus.COMPLETE),
    ]


# ----------------------------------------------------------------------------- persistence and threads


def test_everything_survives_a_reopen(database: Path, feed: Feed) -> None:
    paper = PaperBroker("acct1", feed)
    filled = paper.place_order(buy(5, tag="ENTRY1"))
    resting = paper.place_order(sell(5, OrderType.SL_M, trigger=1480.0, tag="EXIT1"))
    db.database.close()

    db.init_db(database)
    create_paper_tables()
    reopened = PaperBroker("acct1", feed)
    assert [o.order_id for o in reopened.orders()] == [filled, resting]
    assert [(p.instrument, p.quantity, p.average_price) for p in reopened.positions()] == [(INFY, 5, 1500.05)]
    found = reopened.find_order_by_tag("EXIT1")
    assert found is not None and found.status is OrderStatus.TRIGGER_PENDING
    # The waiting stop is still watched after the restart.
    reopened.on_tick(tick(1479.0, 1478.9, 1479.1))
    assert reopened.order(resting).status is OrderStatus.COMPLETE
    assert reopened.positions()[0].quantity == 0
    assert PaperTrade.select().count() == 2


def test_paper_accounts_are_kept_apart(database: Path, feed: Feed) -> None:
    one = PaperBroker("acct1", feed)
    two = PaperBroker("acct2", feed)
    order_id = one.place_order(buy(tag="T1"))
    assert two.orders() == [] and two.positions() == [] and two.find_order_by_tag("T1") is None
    with pytest.raises(BrokerInputError):
        two.order(order_id)
    assert PaperOrder.select().count() == 1


def test_ticks_and_orders_from_several_threads(paper: PaperBroker, feed: Feed) -> None:
    errors: list[BaseException] = []

    def place() -> None:
        try:
            for _ in range(25):
                paper.place_order(buy(1, OrderType.LIMIT, price=1450.0))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def ticks() -> None:
        try:
            for i in range(200):
                paper.on_tick(tick(1500.0 - i * 0.05, 1499.95, 1500.05))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=place) for _ in range(2)] + [threading.Thread(target=ticks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert all(o.status is OrderStatus.OPEN for o in paper.orders())
    paper.on_tick(tick(1449.0, 1448.9, 1449.1))
    orders = paper.orders()
    assert len(orders) == 50 and all(o.status is OrderStatus.COMPLETE for o in orders)
    assert paper.positions()[0].quantity == 50
