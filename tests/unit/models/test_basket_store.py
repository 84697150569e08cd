"""Durable baskets: validation names the field, the breach is a compare-and-set, the lock never falls."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from tests import factories
from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.basket_store import BasketStatus, BasketStore, realised_today
from trailstop_gui.models.domain import Side, Status
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore

RULES = BasketRules(max_loss=1000)


def protection(store: ProtectionStore, account_id: int, side: Side = Side.BUY) -> int:
    return factories.protection(store, account_id, quantity=10, entry_price=100.0, side=side).id


def test_create_and_read_back(store: ProtectionStore) -> None:
    account = store.add_account("kite", "k").id
    a, b = protection(store, account), protection(store, account, Side.SELL)
    baskets = BasketStore(store)
    basket = baskets.create(account, " pair ", RULES, [a, b, a])
    assert (basket.name, basket.members, basket.status, basket.rules) == (
        "pair",
        (a, b),
        BasketStatus.ACTIVE,
        RULES,
    )
    assert baskets.baskets_of(a) == [basket]
    assert baskets.set_square_off(basket.id, "15:15").square_off == time(15, 15)


def test_bad_input_names_the_field_and_writes_nothing(store: ProtectionStore) -> None:
    account = store.add_account("kite", "k").id
    other = store.add_account("kite", "other").id
    mine, theirs = protection(store, account), protection(store, other)
    baskets = BasketStore(store)
    with pytest.raises(ValueError, match="^name"):
        baskets.create(account, "", RULES, [mine])
    with pytest.raises(ValueError, match="^members: protection .* another account"):
        baskets.create(account, "x", RULES, [mine, theirs])
    with pytest.raises(ValueError, match="^members: a basket needs"):
        baskets.create(account, "x", RULES)
    with pytest.raises(ValueError, match="^account"):
        baskets.create(999, "x", RULES, [mine])
    assert baskets.baskets() == []


def test_the_breach_is_committed_once_and_the_lock_never_falls(store: ProtectionStore) -> None:
    account = store.add_account("kite", "k").id
    a = protection(store, account)
    baskets = BasketStore(store)
    basket = baskets.create(account, "b", BasketRules(lock_at=100, lock_profit=50), [a])
    baskets.record_lock(basket.id, 150.0, 50.0)
    baskets.record_lock(basket.id, 120.0, 40.0)  # a stale writer cannot lower it
    assert baskets.get(basket.id).lock == 50.0
    assert baskets.trigger(basket.id, "lock", 45.0, [a]).status is BasketStatus.TRIGGERED
    with pytest.raises(ConcurrentTransition):
        baskets.trigger(basket.id, "lock", 45.0, [a])
    with pytest.raises(ConcurrentTransition):
        baskets.set_rules(basket.id, RULES)
    assert baskets.finish(basket.id).status is BasketStatus.EXITED
    kinds = [e.kind for e in store.events() if e.kind.startswith("basket")]
    assert kinds == ["basket_created", "basket_lock", "basket_triggered", "basket_exited"]


def test_realised_today_of_longs_and_shorts(store: ProtectionStore) -> None:
    account = store.add_account("kite", "k").id
    short = store.get(protection(store, account, Side.SELL))
    now = datetime(2026, 12, 7, 14, 0)
    done = short.with_changes(status=Status.CLOSED, exit_price=95.0, exit_quantity=10, closed_at=now)
    assert realised_today(done, date(2026, 12, 7)) == pytest.approx(50.0)
    assert realised_today(done, date(2026, 12, 8)) == 0.0
    assert realised_today(done.with_changes(exit_price=None), date(2026, 12, 7)) == 0.0
    assert realised_today(short, date(2026, 12, 7)) == 0.0


@pytest.mark.parametrize(
    ("zone", "closed_local", "trading_day"),
    [
        # A VPS on UTC: 18:45 on the 6th is 00:15 IST on the 7th, that trading day's realised rupees.
        ("UTC", datetime(2026, 12, 6, 18, 45), date(2026, 12, 7)),
        # A trader's own machine in India: local time is IST.
        ("Asia/Kolkata", datetime(2026, 12, 7, 0, 15), date(2026, 12, 7)),
    ],
)
def test_realised_today_is_the_ist_trading_day_whatever_the_machine_zone(
    store: ProtectionStore,
    monkeypatch: pytest.MonkeyPatch,
    zone: str,
    closed_local: datetime,
    trading_day: date,
) -> None:
    """Found at 00:15 IST on a UTC machine: a member's own exit was stamped 'yesterday' and its loss left
    out of the basket's MTM, so the basket never breached."""
    import time as clock

    monkeypatch.setenv("TZ", zone)
    clock.tzset()
    try:
        account = store.add_account("kite", "k").id
        short = store.get(protection(store, account, Side.SELL))
        done = short.with_changes(
            status=Status.CLOSED, exit_price=95.0, exit_quantity=10, closed_at=closed_local
        )
        assert realised_today(done, trading_day) == pytest.approx(50.0)
        assert realised_today(done, date(2026, 12, 6)) == 0.0  # the day before, in IST
    finally:
        monkeypatch.undo()
        clock.tzset()
