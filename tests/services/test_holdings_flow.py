"""Delivery holdings end to end against the simulator: protect them, trade them outside, never buy back."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from tests.services.conftest import BROKERS, control
from tests.services.test_protection_flow import HALF, Rig, half_scale, wait_until
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import OrderRequest, OrderType
from trailstop_gui.services.holdings import DEMAT_REFUSAL_ADVICE, DeliveryStock
from trailstop_gui.services.notifier import AlertKind
from trailstop_gui.services.protection_service import EntryRequest
from trailstop_gui.simulator.runner import SimulatorHandle


def trade_outside(rig: Rig, symbol: str, side: Side, quantity: int) -> None:
    """The trader trades delivery shares outside TrailStop (the official SDK, behind the adapter)."""
    instrument, tradingsymbol = rig.instrument(symbol)
    order_id = rig.session.broker.place_order(
        OrderRequest(
            symbol=tradingsymbol,
            exchange="NSE",
            instrument=instrument,
            side=side,
            quantity=quantity,
            product=Product.CNC,
            order_type=OrderType.MARKET,
        )
    )
    wait_until(lambda: rig.session.broker.order(order_id).is_final, what="the outside order to fill")
    assert rig.session.broker.order(order_id).status.value == "COMPLETE"


def holding(rig: Rig, symbol: str) -> DeliveryStock:
    rows = [r for r in rig.service.unprotected_positions(rig.account_id) if r.symbol == symbol]
    assert len(rows) == 1, rows
    stock = rows[0]
    assert isinstance(stock, DeliveryStock)
    return stock


def protect_itc(rig: Rig) -> int:
    """ITC (100 held) protected at 2 %, its stop trailed up to 411.60 by a tick at 420."""
    rig.sim.set_price("NSE:ITC", 400.0, bid=399.95, ask=400.05)
    stock = holding(rig, "ITC")
    assert (stock.quantity, stock.held, stock.is_holding, stock.side) == (100, 100, True, Side.BUY)
    pid = rig.service.adopt(rig.account_id, stock, TrailRule.percent(2.0)).id
    rig.sim.set_price("NSE:ITC", 420.0, bid=419.95, ask=420.05)
    wait_until(
        lambda: rig.store.get(pid).stop == pytest.approx(411.6), what="the stop to trail", qtbot=rig.qtbot
    )
    return pid


def buys_of(rig: Rig, tradingsymbol: str) -> list[dict[str, object]]:
    return [
        o for o in rig.sim_orders() if o["tradingsymbol"] == tradingsymbol and o["transaction_type"] == "BUY"
    ]


def reconcile_until(rig: Rig, done, what: str) -> None:  # type: ignore[no-untyped-def]
    """Reconcile every half second until ``done()`` (a flat read may need confirming by a second one)."""
    for _ in range(40):
        rig.service.reconcile(rig.account_id)
        try:
            wait_until(done, 0.5, what, rig.qtbot)
            return
        except AssertionError:
            continue
    raise AssertionError(f"timed out waiting for {what}")


def test_sell_part_outside_then_the_stop_sells_exactly_the_rest_and_buys_nothing(rig: Rig) -> None:
    pid = protect_itc(rig)
    trade_outside(rig, "NSE:ITC", Side.SELL, 40)
    reconcile_until(
        rig, lambda: rig.store.get(pid).filled_quantity == 60, "the protection to follow the sale"
    )
    rig.sim.set_price("NSE:ITC", 405.0, bid=404.95, ask=405.05)
    rig.wait_status(pid, Status.CLOSED)
    exits = rig.sim_orders(rig.store.get(pid).exit_tag)
    assert [(o["transaction_type"], o["quantity"], o["product"], o["status"]) for o in exits] == [
        ("SELL", 60, "CNC", "COMPLETE")
    ]
    assert buys_of(rig, "ITC") == []
    assert holding_left(rig, "ITC") == 0


def holding_left(rig: Rig, symbol: str) -> int:
    return sum(r.quantity for r in rig.service.unprotected_positions(rig.account_id) if r.symbol == symbol)


def test_sell_all_outside_closes_the_protection_with_no_order(rig: Rig) -> None:
    pid = protect_itc(rig)
    trade_outside(rig, "NSE:ITC", Side.SELL, 100)
    reconcile_until(rig, lambda: rig.status(pid) is Status.CLOSED, "the protection to close")
    assert rig.store.get(pid).reason == "external"
    assert rig.sim_orders(rig.store.get(pid).exit_tag) == []
    rig.sim.set_price("NSE:ITC", 380.0, bid=379.95, ask=380.05)  # through the old stop: nothing happens
    assert buys_of(rig, "ITC") == []
    assert [o["transaction_type"] for o in rig.sim_orders() if o["tradingsymbol"] == "ITC"] == ["SELL"]


def test_buy_back_outside_then_the_stop_sells_what_is_protected(rig: Rig) -> None:
    """Sold 40, the protection shrank to 60; the 40 bought back the same day leave the holdings intact.

    The exit is not refused (the simulator used to count only the unsold holdings) and the protection
    never grows past what it protected after a sale: 60 are sold, the 40 bought back stay.
    """
    pid = protect_itc(rig)
    trade_outside(rig, "NSE:ITC", Side.SELL, 40)
    reconcile_until(
        rig, lambda: rig.store.get(pid).filled_quantity == 60, "the protection to follow the sale"
    )
    trade_outside(rig, "NSE:ITC", Side.BUY, 40)
    rig.sim.set_price("NSE:ITC", 405.0, bid=404.95, ask=405.05)
    rig.wait_status(pid, Status.CLOSED)
    exits = rig.sim_orders(rig.store.get(pid).exit_tag)
    assert [(o["transaction_type"], o["quantity"], o["status"]) for o in exits] == [("SELL", 60, "COMPLETE")]
    assert [o["quantity"] for o in buys_of(rig, "ITC")] == [40]  # the trader's own buy-back, nothing else
    assert holding_left(rig, "ITC") == 40


def sell_outside_at(rig: Rig, symbol: str, quantity: int, price: float) -> str:
    """The trader's own delivery LIMIT sale, placed outside TrailStop above the market: it stays working."""
    instrument, tradingsymbol = rig.instrument(symbol)
    order_id = rig.session.broker.place_order(
        OrderRequest(
            symbol=tradingsymbol,
            exchange="NSE",
            instrument=instrument,
            side=Side.SELL,
            quantity=quantity,
            product=Product.CNC,
            order_type=OrderType.LIMIT,
            price=price,
        )
    )
    wait_until(lambda: rig.session.broker.order(order_id).status.value == "OPEN", what="the sale to work")
    return order_id


def test_a_working_outside_sale_of_every_share_closes_the_protection_and_sells_nothing(rig: Rig) -> None:
    """The trader's own sale of all 100 is working (a target above the market). The shares are spoken for:
    the broker refuses to sell them twice. The stop crosses: the protection closes as "closed outside",
    with no sale of ours filled and the trader's order untouched (it used to end EXIT_FAILED on Kite, whose
    positions and holdings do not show a working sale)."""
    pid = protect_itc(rig)
    target = sell_outside_at(rig, "NSE:ITC", 100, 450.0)
    rig.sim.set_price("NSE:ITC", 405.0, bid=404.95, ask=405.05)
    wait_until(lambda: rig.status(pid) is Status.CLOSED, 15.0, "the protection to close", rig.qtbot)
    closed = rig.store.get(pid)
    assert (closed.reason, closed.exit_price) == ("external", None)
    ours = rig.sim_orders(closed.exit_tag)
    assert [o["status"] for o in ours if o["status"] != "REJECTED"] == []
    assert rig.session.broker.order(target).status.value == "OPEN"
    assert buys_of(rig, "ITC") == []


def test_a_working_outside_sale_of_some_shares_leaves_the_stop_the_rest(rig: Rig) -> None:
    """The trader's target sale of 30 works; the stop sells the other 70 (on Kite after one refusal of
    100: its reads do not show the working sale, so the exit is sized again on the order book)."""
    pid = protect_itc(rig)
    target = sell_outside_at(rig, "NSE:ITC", 30, 450.0)
    rig.sim.set_price("NSE:ITC", 405.0, bid=404.95, ask=405.05)
    wait_until(lambda: rig.status(pid) is Status.CLOSED, 15.0, "the protection to close", rig.qtbot)
    closed = rig.store.get(pid)
    ours = rig.sim_orders(closed.exit_tag)
    assert [(o["quantity"], o["status"]) for o in ours if o["status"] != "REJECTED"] == [(70, "COMPLETE")]
    assert [o["quantity"] for o in ours if o["status"] == "REJECTED"] in ([], [100])
    assert (closed.reason, closed.exit_quantity) == ("stop", 70)
    assert rig.session.broker.order(target).status.value == "OPEN"
    assert buys_of(rig, "ITC") == []


@half_scale
def test_a_sale_the_positions_do_not_show_yet_is_not_sold_again(rig: Rig) -> None:
    """Found by make chaos-safety: the trader sold 40 outside, and positions trailed the fill when the stop
    crossed a moment later. The exit of 100 was refused ("available 60") and the protection ended
    EXIT_FAILED with 60 shares unprotected. Now the refusal is followed by a fresh read: 60 are sold."""
    pid = protect_itc(rig)
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": 1.5 * HALF})
    instrument, tradingsymbol = rig.instrument("NSE:ITC")
    sale = OrderRequest(
        symbol=tradingsymbol,
        exchange="NSE",
        instrument=instrument,
        side=Side.SELL,
        quantity=40,
        product=Product.CNC,
        order_type=OrderType.MARKET,
    )
    rig.session.broker.place_order(sale)
    wait_until(
        lambda: any(o["quantity"] == 40 and o["status"] == "COMPLETE" for o in rig.sim_orders()),
        what="the outside sale to fill",
    )
    rig.sim.set_price("NSE:ITC", 405.0, bid=404.95, ask=405.05)
    wait_until(lambda: rig.status(pid) is Status.CLOSED, 15.0, "the protection to close", rig.qtbot)
    control(rig.sim, "fault", {"fault": "clear", "kind": "book_lag"})
    closed = rig.store.get(pid)
    ours = rig.sim_orders(closed.exit_tag)
    assert [(o["quantity"], o["status"]) for o in ours if o["status"] != "REJECTED"] == [(60, "COMPLETE")]
    assert (closed.reason, closed.exit_quantity) == ("stop", 60)
    assert buys_of(rig, "ITC") == []
    assert holding_left(rig, "ITC") == 0


def test_auto_protect_never_adopts_a_sale_from_holdings_and_covers_holdings_only_when_asked(rig: Rig) -> None:
    rig.sim.set_price("NSE:ITC", 420.0, bid=419.95, ask=420.05)
    trade_outside(rig, "NSE:ITC", Side.SELL, 40)
    broker = rig.session.broker
    rule = TrailRule.percent(2.0)
    rig.service.set_auto_protect(rig.account_id, rule)
    rig.service.reconciler.reconcile(rig.account_id, broker)
    # The CNC row of -40 is shares sold out of holdings: not a short to protect (and buy back).
    assert rig.store.live(rig.account_id) == []
    itc = holding(rig, "ITC")
    assert (itc.quantity, itc.held) == (60, 100)
    assert not [r for r in rig.service.unprotected_positions(rig.account_id) if r.quantity < 0]

    rig.service.set_auto_protect(rig.account_id, rule, holdings=True)
    rig.service.reconciler.reconcile(rig.account_id, broker)  # the service's own reconciles may beat it
    live = rig.store.live(rig.account_id)
    # SBIN is held on NSE (10) and BSE (6), one ISIN: one protection on the NSE listing for all 16.
    # TCS: 5 of which 2 are T1, included once.
    assert {(p.symbol, p.exchange): p.filled_quantity for p in live} == {
        ("INFY", "NSE"): 10,
        ("ITC", "NSE"): 60,
        ("SBIN", "NSE"): 16,
        ("TCS", "NSE"): 5,
    }
    assert all(p.side is Side.BUY and p.product is Product.CNC for p in live)
    assert rig.service.unprotected_positions(rig.account_id) == []
    again = rig.service.reconciler.reconcile(rig.account_id, broker)
    assert again.adopted == [] and len(rig.store.live(rig.account_id)) == 4


def test_a_delivery_sell_entry_is_refused_and_nothing_is_sent(rig: Rig) -> None:
    instrument, tradingsymbol = rig.instrument("NSE:INFY")
    with pytest.raises(ValueError, match="^side: .*never buys delivery shares back"):
        rig.service.place_entry(
            EntryRequest(
                account_id=rig.account_id,
                instrument=instrument,
                symbol=tradingsymbol,
                exchange="NSE",
                side=Side.SELL,
                quantity=3,
                product=Product.CNC,
                tick_size=0.05,
                rule=TrailRule.percent(1.0),
            )
        )
    assert rig.store.protections() == [] and rig.sim_orders() == []


def test_an_account_with_demat_consent_gets_no_warning(rig: Rig) -> None:
    wait_until(lambda: rig.account_id in rig.service._demat_consent, what="the profile", qtbot=rig.qtbot)
    assert rig.service.demat_warning(rig.account_id) is None


@pytest.mark.parametrize("broker", BROKERS)
def test_without_demat_consent_the_app_warns_and_the_refusal_alert_says_what_to_do(
    simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot, broker: str
) -> None:
    control(simulator, "demat", {"broker": broker, "consent": False})
    rig = Rig(simulator, store, broker, qtbot)
    try:
        wait_until(
            lambda: rig.service.demat_warning(rig.account_id) is not None, what="the warning", qtbot=qtbot
        )
        warning = rig.service.demat_warning(rig.account_id) or ""
        assert "TPIN" in warning and "DDPI" in warning and "may" in warning
        pid = protect_itc(rig)
        rig.sim.set_price("NSE:ITC", 405.0, bid=404.95, ask=405.05)
        rig.wait_status(pid, Status.EXIT_FAILED)
        exits = rig.sim_orders(rig.store.get(pid).exit_tag)
        assert [(o["transaction_type"], o["status"]) for o in exits] == [("SELL", "REJECTED")]
        assert buys_of(rig, "ITC") == []
        qtbot.waitUntil(lambda: any(a.kind is AlertKind.EXIT_FAILED for a in rig.alerts), timeout=3000)
        failed = next(a for a in rig.alerts if a.kind is AlertKind.EXIT_FAILED)
        assert "TPIN" in failed.message and DEMAT_REFUSAL_ADVICE in failed.message
    finally:
        rig.close()
