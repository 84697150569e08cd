"""Baskets against the simulator: a breach exits every member once (shorts first), lock-and-trail, crash."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.conftest import control
from tests.services.test_protection_flow import Rig, enter, wait_until
from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.basket_store import BasketStatus, BasketStore
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.baskets import BasketService

WIDE = TrailRule.percent(20.0)  # the members' own stops stay out of the way unless a test wants them


@pytest.fixture
def baskets(rig: Rig) -> Iterator[BasketService]:
    service = BasketService(rig.service)
    yield service
    service.shutdown()


def two_legs(rig: Rig) -> tuple[int, int]:
    """A long INFY and a short TCS, 3 shares each, MIS."""
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig.sim.set_price("NSE:TCS", 3000.0, bid=2999.95, ask=3000.05)
    long = enter(rig, Side.BUY, Product.MIS, WIDE, "NSE:INFY")
    short = enter(rig, Side.SELL, Product.MIS, WIDE, "NSE:TCS")
    return long, short


def step_until(rig: Rig, baskets: BasketService, predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    def stepped() -> bool:
        baskets.step()
        return bool(predicate())

    wait_until(stepped, 10.0, what, rig.qtbot)


def closed(rig: Rig, baskets: BasketService, *pids: int) -> None:
    """Step the basket service (the longs wait for the shorts' exits) until every member is CLOSED."""
    step_until(rig, baskets, lambda: all(rig.status(pid) is Status.CLOSED for pid in pids), f"{pids} closed")


def exits(rig: Rig, pid: int) -> list[dict[str, object]]:
    return rig.sim_orders(rig.store.get(pid).exit_tag)


def test_max_loss_exits_every_member_once_shorts_first(rig: Rig, baskets: BasketService) -> None:
    long, short = two_legs(rig)
    basket = baskets.create(rig.account_id, "pair", BasketRules(max_loss=300), [long, short])
    entry_long = rig.store.get(long).entry_price or 0
    entry_short = rig.store.get(short).entry_price or 0
    rig.sim.set_price("NSE:INFY", 1460.0)  # long: about -120
    step_until(rig, baskets, lambda: (baskets.preview(basket.id) or {}).get("mtm", 0) < -100, "the MTM")
    preview = baskets.preview(basket.id)
    assert preview is not None and preview["loss_limit"] == -300
    assert preview["mtm"] == pytest.approx((1460.0 - entry_long) * 3 + (entry_short - 3000.0) * 3, abs=0.5)
    assert rig.store.get(long).status is Status.OPEN
    # The first exit to reach the broker is slow: the long must still wait for the short's.
    control(
        rig.sim,
        "fault",
        {"fault": "slow", "seconds": 1.0, "count": 1, "path": rig.order_path, "phase": "before"},
    )
    rig.sim.set_price("NSE:TCS", 3080.0)  # short: about -240 more
    step_until(
        rig,
        baskets,
        lambda: BasketStore(rig.store).get(basket.id).status is not BasketStatus.ACTIVE,
        "breach",
    )
    closed(rig, baskets, long, short)
    step_until(
        rig, baskets, lambda: BasketStore(rig.store).get(basket.id).status is BasketStatus.EXITED, "exited"
    )
    long_exits, short_exits = exits(rig, long), exits(rig, short)
    assert len(long_exits) == 1 and len(short_exits) == 1
    assert long_exits[0]["transaction_type"] == "SELL" and long_exits[0]["quantity"] == 3
    assert short_exits[0]["transaction_type"] == "BUY" and short_exits[0]["quantity"] == 3
    order_ids = [o["order_id"] for o in rig.sim_orders()]
    assert order_ids.index(short_exits[0]["order_id"]) < order_ids.index(long_exits[0]["order_id"])
    for _ in range(5):
        baskets.step()  # more steps, more prices: nothing more is sent
    rig.sim.set_price("NSE:TCS", 3200.0)
    baskets.step()
    assert len(exits(rig, long)) == 1 and len(exits(rig, short)) == 1
    kinds = [e.kind for e in rig.store.events(kinds=["basket_created", "basket_triggered", "basket_exited"])]
    assert kinds == ["basket_created", "basket_triggered", "basket_exited"]


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_lock_and_trail_exit_on_the_way_back(rig: Rig, baskets: BasketService) -> None:
    long, short = two_legs(rig)
    rules = BasketRules(lock_at=150, lock_profit=60, trail_every=60, trail_by=30)
    basket = baskets.create(rig.account_id, "locked", rules, [long, short])
    entry_long = rig.store.get(long).entry_price or 0
    rig.sim.set_price("NSE:INFY", entry_long + 70)  # ~ +210 on the long, short about flat
    step_until(rig, baskets, lambda: BasketStore(rig.store).get(basket.id).lock is not None, "the lock")
    stored = BasketStore(rig.store).get(basket.id)
    assert stored.lock == pytest.approx(90, abs=30.01)  # 60 locked, +30 per 60 above 150
    assert stored.status is BasketStatus.ACTIVE
    lock = stored.lock or 0
    rig.sim.set_price("NSE:INFY", entry_long + 60)  # back a little, still above the lock
    for _ in range(3):
        baskets.step()
    assert BasketStore(rig.store).get(basket.id).status is BasketStatus.ACTIVE
    assert BasketStore(rig.store).get(basket.id).lock == lock  # the lock never goes down
    rig.sim.set_price("NSE:INFY", entry_long + 5)  # MTM falls through the lock
    step_until(
        rig,
        baskets,
        lambda: BasketStore(rig.store).get(basket.id).status is not BasketStatus.ACTIVE,
        "breach",
    )
    closed(rig, baskets, long, short)
    assert "lock" in BasketStore(rig.store).get(basket.id).reason


def test_a_member_whose_own_stop_fired_is_not_exited_twice(rig: Rig, baskets: BasketService) -> None:
    long, short = two_legs(rig)
    rig.service.modify_rule(long, TrailRule.points(10.0))
    basket = baskets.create(rig.account_id, "pair", BasketRules(max_loss=50), [long, short])
    rig.sim.set_price("NSE:INFY", 1400.0)  # through the long's own stop, and through the basket's loss
    step_until(
        rig,
        baskets,
        lambda: BasketStore(rig.store).get(basket.id).status is not BasketStatus.ACTIVE,
        "breach",
    )
    closed(rig, baskets, long, short)
    assert len(exits(rig, long)) == 1 and len(exits(rig, short)) == 1


@pytest.mark.parametrize("rig", ["upstox"], indirect=True)
def test_a_crash_mid_exit_is_finished_after_the_restart(rig: Rig) -> None:
    long, short = two_legs(rig)
    store = BasketStore(rig.store)
    basket = store.create(rig.account_id, "pair", BasketRules(max_loss=100), [long, short])
    # The basket's breach was committed, the short's exit was handed over, then the app died.
    store.trigger(basket.id, "max loss: MTM -150.00 reached -100.00", -150.0, [long, short])
    rig.service.exit_now(short, reason="basket pair")
    rig.wait_status(short, Status.CLOSED)
    restarted = BasketService(rig.service)
    try:
        restarted.refresh()  # what start() does first
        closed(rig, restarted, long)
        step_until(rig, restarted, lambda: store.get(basket.id).status is BasketStatus.EXITED, "exited")
    finally:
        restarted.shutdown()
    assert len(exits(rig, long)) == 1 and len(exits(rig, short)) == 1


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_the_whole_account_takes_in_later_positions(rig: Rig, baskets: BasketService) -> None:
    long, _short = two_legs(rig)
    basket = baskets.create(rig.account_id, "everything", BasketRules(max_loss=10_000), whole_account=True)
    assert set(BasketStore(rig.store).get(basket.id).members) >= {long, _short}
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    later = enter(rig, Side.BUY, Product.MIS, WIDE, "NSE:INFY")
    baskets.refresh()
    assert later in BasketStore(rig.store).get(basket.id).members


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_a_basket_square_off_exits_every_member_once(rig: Rig, baskets: BasketService) -> None:
    from datetime import date, datetime
    from datetime import time as time_of_day

    from trailstop_gui.models.square_off import IST
    from trailstop_gui.services.square_off import SquareOffService

    long, short = two_legs(rig)
    basket = baskets.create(rig.account_id, "pair", BasketRules(max_loss=100_000), [long, short])
    baskets.set_square_off(basket.id, "15:15")
    now = [datetime.combine(date(2026, 12, 7), time_of_day(15, 14), IST)]
    square_off = SquareOffService(rig.service, clock=lambda: now[0])
    square_off.baskets = baskets
    try:
        assert square_off.check_now() == []
        assert BasketStore(rig.store).get(basket.id).status is BasketStatus.ACTIVE
        now[0] = now[0].replace(minute=15)
        square_off.check_now()
        assert BasketStore(rig.store).get(basket.id).reason == "square-off 15:15"
        closed(rig, baskets, long, short)
        square_off.check_now()
    finally:
        square_off.shutdown()
    assert len(exits(rig, long)) == 1 and len(exits(rig, short)) == 1


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_a_position_already_exiting_never_joins_and_breaks_no_refresh(
    rig: Rig, baskets: BasketService
) -> None:
    long, short = two_legs(rig)
    everything = baskets.create(
        rig.account_id, "everything", BasketRules(max_loss=10_000), whole_account=True
    )
    pair = baskets.create(rig.account_id, "pair", BasketRules(max_loss=10_000), [long, short])
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    later = enter(rig, Side.BUY, Product.MIS, WIDE, "NSE:INFY")
    rig.service.exit_now(later)  # on its way out before the basket looked: it must not join now
    baskets.refresh()
    assert later not in BasketStore(rig.store).get(everything.id).members
    step_until(rig, baskets, lambda: baskets.preview(pair.id) is not None, "the pair armed")
    assert baskets.preview(everything.id) is not None


def test_a_member_stopped_on_nifty_is_judged_on_its_own_price(rig: Rig, baskets: BasketService) -> None:
    """A bought call whose stop is on NIFTY 50: its engine watches the index, yet the basket's MTM is the
    call's. Once, the feed subscribed only the index for it: the call's quote froze at the rule's setting
    (NIFTY +100 moved the simulator's call +50 and the app's not at all) and the basket never locked."""
    from tests.services.test_underlying import buy_option, on_index
    from trailstop_gui.services.underlying import UnderlyingService

    pid, opt = buy_option(rig, "CE")
    reference = on_index(rig, UnderlyingService(rig.service), pid, Side.BUY)  # stop at NIFTY - 50
    lot, entry = opt["lot_size"], rig.store.get(pid).entry_price or 0
    rules = BasketRules(lock_at=30 * lot, lock_profit=20 * lot)
    basket = baskets.create(rig.account_id, "call on nifty", rules, [pid])
    control(rig.sim, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference + 100})  # the call ~ +50
    step_until(rig, baskets, lambda: BasketStore(rig.store).get(basket.id).lock is not None, "the lock")
    assert BasketStore(rig.store).get(basket.id).lock == pytest.approx(20 * lot)
    assert rig.status(pid) is Status.OPEN  # its own stop trails on NIFTY, far below
    # The call alone falls back (NIFTY stays): the basket sees it and exits the call, once.
    rig.sim.set_price(opt["symbol"], entry + 5, bid=entry + 4.95, ask=entry + 5.05)
    step_until(
        rig,
        baskets,
        lambda: BasketStore(rig.store).get(basket.id).status is not BasketStatus.ACTIVE,
        "breach",
    )
    closed(rig, baskets, pid)
    assert "lock" in BasketStore(rig.store).get(basket.id).reason
    (exit_order,) = exits(rig, pid)
    assert exit_order["tradingsymbol"] == opt["tradingsymbol"] and exit_order["quantity"] == lot


@pytest.mark.parametrize("rig", ["kite"], indirect=True)
def test_a_member_stopped_on_nifty_from_the_order_form_gets_a_price(rig: Rig, baskets: BasketService) -> None:
    """The rule attached before the fill: the call was never watched on its own instrument at all."""
    from tests.services.test_underlying import index_ltp, instrument, key, option_request
    from trailstop_gui.services.underlying import UnderlyingService

    underlying = UnderlyingService(rig.service)
    index = instrument(rig, lambda i: i["symbol"] == "NSE:NIFTY 50")
    reference = index_ltp(rig)
    request, opt = option_request(rig, "CE")

    def attach(p: object) -> None:
        underlying.set_underlying(
            p.id,  # type: ignore[attr-defined]
            instrument=key(rig, index),
            symbol="NIFTY 50",
            exchange="NSE",
            view=Side.BUY,
            tick_size=0.05,
            reference=reference,
        )

    p = rig.service.place_entry(request, attach=attach)
    rig.wait_status(p.id, Status.OPEN)
    lot, entry = opt["lot_size"], rig.store.get(p.id).entry_price or 0
    basket = baskets.create(rig.account_id, "call", BasketRules(max_loss=10 * lot), [p.id])
    rig.sim.set_price(opt["symbol"], entry - 20, bid=entry - 20.05, ask=entry - 19.95)  # NIFTY stays
    step_until(
        rig,
        baskets,
        lambda: BasketStore(rig.store).get(basket.id).status is not BasketStatus.ACTIVE,
        "breach",
    )
    closed(rig, baskets, p.id)
    assert "max loss" in BasketStore(rig.store).get(basket.id).reason
    assert len(exits(rig, p.id)) == 1
