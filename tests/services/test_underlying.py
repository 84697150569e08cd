"""A stop on NIFTY 50 protecting a NIFTY option, against the simulator: it trails and fires on the index,
and the exit goes to the option, once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.services.conftest import control
from tests.services.test_protection_flow import Rig, wait_until
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.protection_service import EntryRequest
from trailstop_gui.services.underlying import UnderlyingService


def instrument(rig: Rig, predicate: Any) -> dict[str, Any]:
    return next(i for i in control(rig.sim, "instruments") if predicate(i))


def key(rig: Rig, inst: dict[str, Any]) -> Any:
    return inst["kite_token"] if rig.broker == "kite" else inst["upstox_key"]


def index_ltp(rig: Rig) -> float:
    return float(control(rig.sim, "quote?symbol=NSE:NIFTY 50")["ltp"])


def buy_option(rig: Rig, kind: str) -> tuple[int, dict[str, Any]]:
    opt = instrument(rig, lambda i: i["name"] == "NIFTY" and i["instrument_type"] == kind)
    p = rig.service.place_entry(
        EntryRequest(
            account_id=rig.account_id,
            instrument=key(rig, opt),
            symbol=opt["tradingsymbol"],
            exchange="NFO",
            side=Side.BUY,
            quantity=opt["lot_size"],
            product=Product.NRML,
            tick_size=0.05,
            rule=TrailRule.points(50.0),
        )
    )
    rig.wait_status(p.id, Status.OPEN)
    return p.id, opt


def on_index(rig: Rig, underlying: UnderlyingService, pid: int, view: Side) -> float:
    index = instrument(rig, lambda i: i["symbol"] == "NSE:NIFTY 50")
    reference = index_ltp(rig)
    underlying.set_underlying(
        pid,
        instrument=key(rig, index),
        symbol="NIFTY 50",
        exchange="NSE",
        view=view,
        tick_size=0.05,
        reference=reference,
    )
    return reference


def test_a_bought_call_trails_on_nifty_and_exits_the_call(rig: Rig) -> None:
    underlying = UnderlyingService(rig.service)
    pid, opt = buy_option(rig, "CE")
    reference = on_index(rig, underlying, pid, Side.BUY)
    assert rig.store.get(pid).stop == pytest.approx(reference - 50)
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 100})  # the call rises ~50
    wait_until(
        lambda: rig.store.get(pid).stop == pytest.approx(reference + 50),
        what="the stop to trail",
        qtbot=rig.qtbot,
    )
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 60})
    assert rig.status(pid) is Status.OPEN  # above the stop on the index (the call fell 20: no matter)
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 45})
    rig.wait_status(pid, Status.CLOSED)
    exits = rig.sim_orders(rig.store.get(pid).exit_tag)
    assert len(exits) == 1
    assert exits[0]["transaction_type"] == "SELL" and exits[0]["quantity"] == opt["lot_size"]
    assert exits[0]["tradingsymbol"] == opt["tradingsymbol"]
    fired = [e for e in rig.store.events(protection_id=pid, kinds=["transition"]) if e.new == "TRIGGERED"]
    assert fired[0].price == pytest.approx(reference + 45)  # the index's price, not the option's


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_a_bought_put_is_exited_when_nifty_rises(rig: Rig) -> None:
    underlying = UnderlyingService(rig.service)
    pid, opt = buy_option(rig, "PE")
    reference = on_index(rig, underlying, pid, Side.SELL)
    assert rig.store.get(pid).stop == pytest.approx(reference + 50)
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 49})
    assert rig.status(pid) is Status.OPEN
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 51})
    rig.wait_status(pid, Status.CLOSED)
    exits = rig.sim_orders(rig.store.get(pid).exit_tag)
    assert len(exits) == 1 and exits[0]["tradingsymbol"] == opt["tradingsymbol"]


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_no_safety_stop_with_a_stop_on_the_underlying(rig: Rig) -> None:
    underlying = UnderlyingService(rig.service)
    pid, _opt = buy_option(rig, "CE")
    on_index(rig, underlying, pid, Side.BUY)
    with pytest.raises(ValueError, match="safety stop"):
        rig.service.set_safety(pid, True)
    assert not rig.store.get(pid).safety_enabled


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_the_rule_survives_a_restart_of_the_services(rig: Rig) -> None:
    underlying = UnderlyingService(rig.service)
    pid, _opt = buy_option(rig, "CE")
    reference = on_index(rig, underlying, pid, Side.BUY)
    again = UnderlyingService(rig.service)  # as a restart builds it, from the table
    assert again.rule(pid) == underlying.rule(pid)
    assert again.view(rig.store.get(pid)).entry_price == reference


def option_request(rig: Rig, kind: str, side: Side = Side.BUY) -> tuple[EntryRequest, dict[str, Any]]:
    opt = instrument(rig, lambda i: i["name"] == "NIFTY" and i["instrument_type"] == kind)
    return (
        EntryRequest(
            account_id=rig.account_id,
            instrument=key(rig, opt),
            symbol=opt["tradingsymbol"],
            exchange="NFO",
            side=side,
            quantity=opt["lot_size"],
            product=Product.NRML,
            tick_size=0.05,
            rule=TrailRule.points(50.0),
        ),
        opt,
    )


def test_a_rule_set_with_the_order_starts_on_the_underlying_at_the_fill(rig: Rig) -> None:
    """The order form attaches the rule before the entry goes out: the fill's stop is the index's, never the
    option's price read as an index level (a short view would fire at once on it)."""
    underlying = UnderlyingService(rig.service)
    index = instrument(rig, lambda i: i["symbol"] == "NSE:NIFTY 50")
    reference = index_ltp(rig)
    request, opt = option_request(rig, "PE")

    def attach(p: Any) -> None:
        assert p.status is Status.PENDING
        underlying.set_underlying(
            p.id,
            instrument=key(rig, index),
            symbol="NIFTY 50",
            exchange="NSE",
            view=Side.SELL,
            tick_size=0.05,
            reference=reference,
        )

    p = rig.service.place_entry(request, attach=attach)
    rig.wait_status(p.id, Status.OPEN)
    filled = rig.store.get(p.id)
    assert filled.stop == pytest.approx(reference + 50) and filled.peak == pytest.approx(reference)
    assert filled.entry_price is not None and filled.entry_price < reference / 10  # the option's own fill
    assert rig.status(p.id) is Status.OPEN  # the index at the reference is below its short-view stop
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 51})
    rig.wait_status(p.id, Status.CLOSED)
    exits = rig.sim_orders(filled.exit_tag)
    assert len(exits) == 1 and exits[0]["tradingsymbol"] == opt["tradingsymbol"]
    assert exits[0]["transaction_type"] == "SELL" and exits[0]["quantity"] == opt["lot_size"]


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_an_attachment_refused_sends_no_entry(rig: Rig) -> None:
    underlying = UnderlyingService(rig.service)
    request, _opt = option_request(rig, "CE")

    def attach(p: Any) -> None:
        underlying.set_underlying(
            p.id, instrument="", symbol="NIFTY 50", exchange="NSE", view="BUY", tick_size=0.05, reference=1.0
        )

    with pytest.raises(ValueError, match="underlying: the instrument must not be empty"):
        rig.service.place_entry(request, attach=attach)
    (p,) = rig.store.protections()
    assert p.status is Status.REJECTED and "not sent" in p.reason
    assert underlying.rule(p.id) is None
    assert rig.service.actions.waitForDone(5000)  # nothing was handed to the pool: nothing to wait for
    assert rig.sim_orders(p.entry_tag) == []


def test_the_options_own_price_keeps_coming(rig: Rig) -> None:
    """Armed on NIFTY, the call's row still shows the call's price: the feed keeps the call subscribed (it
    used to subscribe the index alone, and the call's LTP and P&L froze where the rule was set)."""
    underlying = UnderlyingService(rig.service)
    pid, opt = buy_option(rig, "CE")
    reference = on_index(rig, underlying, pid, Side.BUY)
    feed = rig.session.feed
    assert feed is not None
    before = float(control(rig.sim, f"quote?symbol={opt['symbol']}")["ltp"])
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 100})  # the call ~ +50
    wait_until(
        lambda: (
            (q := feed.latest_quote(key(rig, opt))) is not None
            and q.ltp == pytest.approx(before + 50, abs=0.1)
        ),
        what="the call's own price",
        qtbot=rig.qtbot,
    )
