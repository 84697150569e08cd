"""Matching, statuses, positions and the exchange's faults, without a server."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from trailstop_gui.simulator.exchange import (
    Exchange,
    Order,
    OrderInputError,
    OrderRequest,
    OrderStateError,
    OrderStatus,
)
from trailstop_gui.simulator.faults import Faults, parse_fault
from trailstop_gui.simulator.instruments import Instrument, InstrumentIndex, build_universe
from trailstop_gui.simulator.market import Market

USER = ("kite", "DM1234")


class ManualScheduler:
    """Collects delayed callbacks; the test decides when time passes."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((delay, callback))

    def run(self) -> None:
        while self.pending:
            _, callback = self.pending.pop(0)
            callback()


class Bench:
    def __init__(self) -> None:
        self.index = InstrumentIndex(build_universe(date(2025, 1, 17)))
        self.market = Market(self.index, random.Random(3))
        self.faults = Faults(random.Random(3))
        self.scheduler = ManualScheduler()
        self.updates: list[tuple[str, OrderStatus, int]] = []
        self.exchange = Exchange(self.market, self.faults, self.scheduler, self._updated, fill_delay=0.25)

    def _updated(self, order: Order) -> None:
        self.updates.append((order.order_id, order.status, order.state.filled_quantity))

    def inst(self, symbol: str) -> Instrument:
        inst = self.index.find(symbol)
        assert inst is not None
        return inst

    def price(self, symbol: str, ltp: float, bid: float | None = None, ask: float | None = None) -> None:
        inst = self.inst(symbol)
        self.market.set_price(inst, ltp, bid, ask)
        self.exchange.on_prices([inst])

    def place(self, symbol: str = "NSE:INFY", broker: str = "kite", **fields: Any) -> Order:
        spec: dict[str, Any] = {
            "transaction_type": "BUY",
            "quantity": 10,
            "product": "MIS",
            "order_type": "MARKET",
        }
        spec.update(fields)
        return self.exchange.place(broker, USER[1], OrderRequest(instrument=self.inst(symbol), **spec))

    def statuses(self, order: Order) -> list[str]:
        return [s.status.value for s in order.history]


def _status(order: Order) -> OrderStatus:
    """The order's status, read fresh (an order changes under the test's feet)."""
    return order.status


@pytest.fixture
def bench() -> Bench:
    b = Bench()
    b.price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    return b


def test_market_orders_fill_after_the_delay_at_the_opposite_best_price(bench: Bench) -> None:
    buy = bench.place()
    assert _status(buy) == OrderStatus.OPEN and buy.state.filled_quantity == 0
    assert bench.scheduler.pending[0][0] == 0.25
    bench.scheduler.run()
    assert _status(buy) == OrderStatus.COMPLETE and buy.state.average_price == 1500.05
    assert bench.statuses(buy) == [
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "OPEN",
        "COMPLETE",
    ]
    sell = bench.place(transaction_type="SELL", quantity=4)
    bench.scheduler.run()
    assert sell.state.average_price == 1499.95
    assert [(s, f) for oid, s, f in bench.updates if oid == buy.order_id] == [
        (OrderStatus.OPEN, 0),
        (OrderStatus.COMPLETE, 10),
    ]
    (position,) = bench.exchange.positions(*USER)
    assert (position.quantity, position.buy_quantity, position.sell_quantity) == (6, 10, 4)
    assert position.realised() == pytest.approx(4 * (1499.95 - 1500.05))
    trades = bench.exchange.trades(*USER)
    assert [(t.order_id, t.quantity, t.price) for t in trades] == [
        (buy.order_id, 10, 1500.05),
        (sell.order_id, 4, 1499.95),
    ]


def test_limit_orders_rest_until_crossed_and_fill_at_their_price(bench: Bench) -> None:
    order = bench.place(order_type="LIMIT", price=1490.0)
    bench.scheduler.run()
    assert _status(order) == OrderStatus.OPEN
    bench.price("NSE:INFY", 1492.0, bid=1491.95, ask=1492.05)
    assert _status(order) == OrderStatus.OPEN
    bench.price("NSE:INFY", 1488.0, bid=1487.95, ask=1488.05)  # gapped through the limit
    assert _status(order) == OrderStatus.COMPLETE and order.state.average_price == 1490.0


def test_marketable_limit_gets_the_better_price(bench: Bench) -> None:
    order = bench.place(order_type="LIMIT", price=1510.0)
    bench.scheduler.run()
    assert _status(order) == OrderStatus.COMPLETE and order.state.average_price == 1500.05


def test_stop_market_triggers_on_ltp_and_fills_at_the_bid(bench: Bench) -> None:
    stop = bench.place(
        transaction_type="SELL", quantity=5, product="CNC", order_type="SL-M", trigger_price=1480.0
    )
    assert _status(stop) == OrderStatus.TRIGGER_PENDING
    bench.price("NSE:INFY", 1481.0)
    assert _status(stop) == OrderStatus.TRIGGER_PENDING
    bench.price("NSE:INFY", 1470.0, bid=1469.5, ask=1470.5)
    assert _status(stop) == OrderStatus.OPEN
    bench.scheduler.run()
    assert _status(stop) == OrderStatus.COMPLETE and stop.state.average_price == 1469.5
    assert "TRIGGER PENDING" in bench.statuses(stop)
    holding = {h.instrument.tradingsymbol: h for h in bench.exchange.holdings(*USER)}["INFY"]
    assert holding.used_quantity == 5


def test_stop_limit_waits_for_its_limit_after_triggering(bench: Bench) -> None:
    stop = bench.place(transaction_type="SELL", order_type="SL", trigger_price=1480.0, price=1478.0)
    bench.price("NSE:INFY", 1475.0, bid=1474.95, ask=1475.05)
    bench.scheduler.run()
    assert _status(stop) == OrderStatus.OPEN and stop.state.filled_quantity == 0
    bench.price("NSE:INFY", 1479.0, bid=1478.5, ask=1479.05)
    assert _status(stop) == OrderStatus.COMPLETE and stop.state.average_price == 1478.0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"order_type": "SL-M", "transaction_type": "SELL", "trigger_price": 1510.0}, "lower than the last"),
        ({"order_type": "SL-M", "trigger_price": 1490.0}, "higher than the last"),
        (
            {"order_type": "SL", "transaction_type": "SELL", "trigger_price": 1490.0, "price": 1495.0},
            "trigger",
        ),
        ({"order_type": "LIMIT", "price": 1490.03}, "Tick size"),
        ({"product": "NRML"}, "NRML"),
        ({"product": "CNC", "transaction_type": "SELL", "quantity": 11}, "Insufficient holdings"),
    ],
)
def test_broker_rejections_become_rejected_orders(bench: Bench, fields: dict[str, Any], reason: str) -> None:
    order = bench.place(**fields)
    assert _status(order) == OrderStatus.REJECTED
    assert reason in (order.state.status_message or "")
    assert bench.statuses(order) == ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "REJECTED"]
    assert bench.updates[-1][:2] == (order.order_id, OrderStatus.REJECTED)


@pytest.mark.parametrize("kind", ["CE", "PE"])
def test_sl_m_on_an_option_is_refused_with_the_exchanges_message_and_sl_works(
    bench: Bench, kind: str
) -> None:
    # NSE withdrew SL-M for index and stock options in 2021: "16052: Function not available".
    option = next(i for i in bench.index if i.instrument_type == kind)
    bench.price(option.symbol, 100.0, bid=99.95, ask=100.05)
    slm = bench.place(
        option.symbol,
        quantity=option.lot_size,
        transaction_type="SELL",
        order_type="SL-M",
        trigger_price=95.0,
    )
    assert _status(slm) == OrderStatus.REJECTED
    assert slm.state.status_message == "16052: Function not available"
    sl = bench.place(
        option.symbol,
        quantity=option.lot_size,
        transaction_type="SELL",
        order_type="SL",
        trigger_price=95.0,
        price=93.1,
    )
    assert _status(sl) == OrderStatus.TRIGGER_PENDING


def test_sl_m_stays_available_on_futures_and_equities(bench: Bench) -> None:
    fut = next(i for i in bench.index if i.instrument_type == "FUT" and i.name == "NIFTY")
    bench.price(fut.symbol, 24000.0, bid=23999.95, ask=24000.05)
    slm = bench.place(
        fut.symbol,
        quantity=fut.lot_size,
        product="NRML",
        transaction_type="SELL",
        order_type="SL-M",
        trigger_price=23900.0,
    )
    assert _status(slm) == OrderStatus.TRIGGER_PENDING


def test_bse_and_bfo_have_no_sl_m_at_all() -> None:
    from trailstop_gui.simulator.exchange import slm_withdrawn

    assert slm_withdrawn("BSE", "EQ") and slm_withdrawn("BFO", "FUT") and slm_withdrawn("BFO", "CE")
    assert not slm_withdrawn("NSE", "EQ") and not slm_withdrawn("NFO", "FUT")


def test_fo_orders_need_whole_lots(bench: Bench) -> None:
    fut = next(i for i in bench.index if i.instrument_type == "FUT" and i.name == "NIFTY")
    odd = bench.place(fut.symbol, quantity=fut.lot_size + 1, product="NRML")
    assert _status(odd) == OrderStatus.REJECTED and "lot size" in (odd.state.status_message or "")
    cnc = bench.place(fut.symbol, quantity=fut.lot_size, product="CNC")
    assert _status(cnc) == OrderStatus.REJECTED
    good = bench.place(fut.symbol, quantity=2 * fut.lot_size, product="NRML")
    bench.scheduler.run()
    assert _status(good) == OrderStatus.COMPLETE


@pytest.mark.parametrize(
    "fields",
    [{"quantity": 0}, {"quantity": -5}, {"order_type": "LIMIT"}, {"order_type": "SL-M"}, {"product": "BO"}],
)
def test_malformed_requests_raise_before_an_order_exists(bench: Bench, fields: dict[str, Any]) -> None:
    with pytest.raises(OrderInputError):
        bench.place(**fields)
    assert bench.exchange.all_orders() == []


def test_an_index_cannot_be_traded(bench: Bench) -> None:
    with pytest.raises(OrderInputError, match="not tradable"):
        bench.place("NSE:NIFTY 50")


def test_cancel_and_modify(bench: Bench) -> None:
    order = bench.place(order_type="LIMIT", price=1450.0)
    bench.exchange.modify(*USER, order.order_id, price=1455.0)
    assert order.state.price == 1455.0 and order.state.modified and _status(order) == OrderStatus.OPEN
    history = bench.statuses(order)
    assert history[-4:] == ["MODIFY VALIDATION PENDING", "MODIFY PENDING", "MODIFIED", "OPEN"]
    with pytest.raises(OrderInputError, match="Tick size"):
        bench.exchange.modify(*USER, order.order_id, price=1455.01)
    bench.exchange.modify(*USER, order.order_id, price=1505.0)  # now marketable
    bench.scheduler.run()
    assert _status(order) == OrderStatus.COMPLETE and order.state.average_price == 1500.05
    with pytest.raises(OrderStateError):
        bench.exchange.cancel(*USER, order.order_id)
    other = bench.place(order_type="LIMIT", price=1400.0)
    bench.exchange.cancel(*USER, other.order_id)
    assert _status(other) == OrderStatus.CANCELLED and other.state.cancelled_quantity == 10


def test_modifications_are_limited(bench: Bench) -> None:
    order = bench.place(order_type="LIMIT", price=1400.0)
    for i in range(25):
        bench.exchange.modify(*USER, order.order_id, price=1400.0 - (i + 1) * 0.05)
    with pytest.raises(OrderStateError, match="Maximum"):
        bench.exchange.modify(*USER, order.order_id, price=1300.0)


def test_market_protection_turns_a_market_order_into_a_bounded_limit(bench: Bench) -> None:
    order = bench.place(market_protection=2)
    assert order.state.order_type == "LIMIT" and order.state.price == 1530.0
    assert order.tags == ["mktp", "mktp:2.00"]
    bench.price("NSE:INFY", 1500.0, bid=1499.0, ask=1560.0)  # the book ran away before the fill
    bench.scheduler.run()
    assert _status(order) == OrderStatus.OPEN and order.state.filled_quantity == 0
    bench.price("NSE:INFY", 1520.0, bid=1519.95, ask=1520.05)
    assert _status(order) == OrderStatus.COMPLETE and order.state.average_price == 1530.0


def test_ioc_limit_that_does_not_cross_is_cancelled(bench: Bench) -> None:
    order = bench.place(order_type="LIMIT", price=1400.0, validity="IOC")
    assert _status(order) == OrderStatus.CANCELLED


def test_reject_fault_hits_the_next_orders_of_its_broker(bench: Bench) -> None:
    bench.faults.add(
        parse_fault({"fault": "reject_orders", "count": 2, "reason": "RMS: blocked", "broker": "kite"})
    )
    upstox = bench.place(broker="upstox")
    first, second, third = bench.place(), bench.place(), bench.place()
    assert _status(upstox) == OrderStatus.OPEN
    assert [_status(o) for o in (first, second)] == [OrderStatus.REJECTED] * 2
    assert first.state.status_message == "RMS: blocked"
    assert _status(third) == OrderStatus.OPEN


def test_partial_fill_rests_until_cancelled(bench: Bench) -> None:
    bench.faults.add(parse_fault({"fault": "partial_fill", "ratio": 0.3}))
    order = bench.place()
    bench.scheduler.run()
    assert _status(order) == OrderStatus.OPEN and order.state.filled_quantity == 3
    bench.price("NSE:INFY", 1500.0)
    assert order.state.filled_quantity == 3
    bench.exchange.cancel(*USER, order.order_id)
    assert _status(order) == OrderStatus.CANCELLED and order.state.cancelled_quantity == 7
    assert bench.exchange.positions(*USER)[0].quantity == 3


def test_partial_fill_remainder_can_follow(bench: Bench) -> None:
    bench.faults.add(parse_fault({"fault": "partial_fill", "ratio": 0.5, "rest_after": 1.5}))
    order = bench.place()
    bench.scheduler.run()
    assert _status(order) == OrderStatus.COMPLETE and [t.quantity for t in bench.exchange.trades(*USER)] == [
        5,
        5,
    ]
    assert [f for oid, s, f in bench.updates if oid == order.order_id] == [0, 5, 10]


def test_fill_delay_fault_overrides_the_default(bench: Bench) -> None:
    bench.faults.add(parse_fault({"fault": "fill_delay", "seconds": 3}))
    bench.place()
    assert bench.scheduler.pending[-1][0] == 3.0
    bench.faults.clear("fill_delay")
    bench.place()
    assert bench.scheduler.pending[-1][0] == 0.25


def test_accounts_are_separate_per_broker_and_reset_forgets_everything(bench: Bench) -> None:
    bench.place(broker="upstox")
    assert bench.exchange.orders("kite", USER[1]) == []
    assert len(bench.exchange.orders("upstox", USER[1])) == 1
    assert {h.instrument.tradingsymbol for h in bench.exchange.holdings("upstox", USER[1])} >= {"INFY", "ITC"}
    bench.exchange.reset()
    assert bench.exchange.all_orders() == []


# -- delivery holdings, as the brokers keep them -----------------------------------------------------


def _cnc(bench: Bench, side: str, quantity: int, symbol: str = "NSE:ITC", broker: str = "kite") -> Order:
    order = bench.place(symbol, broker, transaction_type=side, quantity=quantity, product="CNC")
    bench.scheduler.run()
    return order


def _holdings(bench: Bench, symbol: str, broker: str = "kite") -> list[tuple[str, int, int, int]]:
    isin = bench.inst(symbol).isin
    rows = bench.exchange.holdings(broker, USER[1])
    return [
        (h.exchange, h.quantity, h.t1_quantity, h.used_quantity) for h in rows if h.instrument.isin == isin
    ]


@pytest.fixture
def itc(bench: Bench) -> Bench:
    bench.price("NSE:ITC", 420.0, bid=419.95, ask=420.05)
    bench.price("NSE:SBIN", 810.0, bid=809.95, ask=810.05)
    return bench


def test_sale_from_holdings_shows_negative_cnc_and_raises_used_quantity(itc: Bench) -> None:
    assert _status(_cnc(itc, "SELL", 40)) == OrderStatus.COMPLETE
    position = next(p for p in itc.exchange.positions("kite", USER[1]) if p.product == "CNC")
    assert position.quantity == -40
    assert _holdings(itc, "NSE:ITC") == [("NSE", 100, 0, 40)]


def test_same_day_buy_back_leaves_holdings_intact_and_all_can_be_sold(itc: Bench) -> None:
    """The chaos defect: sold 40, bought 40 back, then selling all 100 was refused 'Insufficient holdings'."""
    _cnc(itc, "SELL", 40)
    _cnc(itc, "BUY", 40)
    assert _holdings(itc, "NSE:ITC") == [("NSE", 100, 0, 0)]
    assert _status(_cnc(itc, "SELL", 100)) == OrderStatus.COMPLETE


def test_a_sale_beyond_holdings_and_todays_net_is_refused(itc: Bench) -> None:
    _cnc(itc, "SELL", 70)
    refused = _cnc(itc, "SELL", 31)
    assert _status(refused) == OrderStatus.REJECTED
    assert refused.state.status_message == "Insufficient holdings for ITC: available 30."


def test_t1_is_inside_holdings_quantity(itc: Bench) -> None:
    assert _holdings(itc, "NSE:TCS") == [("NSE", 5, 2, 0)]
    itc.price("NSE:TCS", 3450.0, bid=3449.95, ask=3450.05)
    assert _status(_cnc(itc, "SELL", 6, "NSE:TCS")) == OrderStatus.REJECTED
    assert _status(_cnc(itc, "SELL", 5, "NSE:TCS")) == OrderStatus.COMPLETE


def test_one_isin_listed_on_nse_and_bse_sells_as_one(itc: Bench) -> None:
    sbin = itc.inst("NSE:SBIN")
    rows = [h for h in itc.exchange.holdings("kite", USER[1]) if h.instrument.isin == sbin.isin]
    assert {(h.exchange, h.quantity) for h in rows} == {("NSE", 10), ("BSE", 6)}
    bse = next(h for h in rows if h.exchange == "BSE")
    assert bse.kite_token & 0xFF == 4 and bse.upstox_key == f"BSE_EQ|{sbin.isin}"
    assert _status(_cnc(itc, "SELL", 12, "NSE:SBIN")) == OrderStatus.COMPLETE
    assert sorted(_holdings(itc, "NSE:SBIN")) == [("BSE", 6, 0, 2), ("NSE", 10, 0, 10)]
    assert _status(_cnc(itc, "SELL", 5, "NSE:SBIN")) == OrderStatus.REJECTED


@pytest.mark.parametrize("broker", ["kite", "upstox"])
def test_without_demat_consent_a_sale_from_holdings_gets_the_brokers_refusal(itc: Bench, broker: str) -> None:
    itc.exchange.set_demat_consent(broker, False)
    refused = _cnc(itc, "SELL", 10, broker=broker)
    assert _status(refused) == OrderStatus.REJECTED
    assert "TPIN" in (refused.state.status_message or "")
    # Today's own delivery buys are not in the demat yet: selling them needs no authorisation.
    _cnc(itc, "BUY", 5, broker=broker)
    assert _status(_cnc(itc, "SELL", 5, broker=broker)) == OrderStatus.COMPLETE
    itc.exchange.set_demat_consent(broker, True)
    assert _status(_cnc(itc, "SELL", 10, broker=broker)) == OrderStatus.COMPLETE


def test_a_working_delivery_sale_blocks_its_shares_from_a_second_sale(itc: Bench) -> None:
    """The broker will not deliver the same shares twice: a working CNC sale holds them until it ends."""
    target = itc.place(
        "NSE:ITC", transaction_type="SELL", quantity=70, product="CNC", order_type="LIMIT", price=450.0
    )
    itc.scheduler.run()
    assert _status(target) == OrderStatus.OPEN
    refused = _cnc(itc, "SELL", 40)
    assert _status(refused) == OrderStatus.REJECTED
    assert refused.state.status_message == "Insufficient holdings for ITC: available 30."
    assert _status(_cnc(itc, "SELL", 30)) == OrderStatus.COMPLETE
    itc.exchange.cancel("kite", USER[1], target.order_id)
    assert _status(_cnc(itc, "SELL", 70)) == OrderStatus.COMPLETE


def test_upstox_holdings_count_a_working_sale_in_cnc_used_quantity(itc: Bench) -> None:
    """Upstox: ``cnc_used_quantity`` is "Quantity either blocked towards open or completed order"."""
    itc.place(
        "NSE:ITC",
        "upstox",
        transaction_type="SELL",
        quantity=70,
        product="CNC",
        order_type="LIMIT",
        price=450.0,
    )
    itc.scheduler.run()
    _cnc(itc, "SELL", 10, broker="upstox")
    isin = itc.inst("NSE:ITC").isin
    rows = [h for h in itc.exchange.blocked_holdings("upstox", USER[1]) if h.instrument.isin == isin]
    assert [(h.quantity, h.used_quantity) for h in rows] == [(100, 80)]
    assert _holdings(itc, "NSE:ITC", "upstox") == [("NSE", 100, 0, 10)]  # what sales took, as before
