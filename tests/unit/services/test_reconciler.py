"""The reconciler on a bad day: shared positions, lagging or unreadable replies, failed arms, lost entries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests import factories
from trailstop_gui.models import db
from trailstop_gui.models.domain import Product, Protection, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Holding, Order, OrderStatus, Position
from trailstop_gui.services.brokers.errors import MalformedReplyError
from trailstop_gui.services.reconciler import FLAT_CONFIRM_SECONDS, Hooks, Reconciler

RULE = TrailRule.percent(2.0)


class FakeBroker:
    """Positions and orders set by the test; ``reads`` counts position reads."""

    capabilities = KITE_CAPABILITIES

    def __init__(self) -> None:
        self.net = 0
        self.orders_book: list[Order] = []
        self.reads = 0
        self.fail_positions: Exception | None = None

    def positions(self) -> list[Position]:
        self.reads += 1
        if self.fail_positions is not None:
            raise self.fail_positions
        return [factories.position(self.net)]

    def holdings(self) -> list[Any]:
        return []

    def orders(self) -> list[Order]:
        return list(self.orders_book)


@dataclass
class Calls:
    armed: list[int] = field(default_factory=list)
    disarmed: list[int] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    in_feed: set[int] | None = None
    now: float = 1000.0  # the reconciler's clock (monotonic seconds): a sleep moves it on

    def later(self, seconds: float = FLAT_CONFIRM_SECONDS) -> None:
        self.now += seconds


def rig(
    store: ProtectionStore, during_sleep: Callable[[], None] = lambda: None, **hooks: Any
) -> tuple[Reconciler, Calls, int]:
    account = store.add_account("kite", "Zerodha")
    calls = Calls()

    def sleep(seconds: float) -> None:
        calls.sleeps.append(seconds)
        calls.later(seconds)
        during_sleep()

    reconciler = Reconciler(
        store,
        Hooks(
            arm=lambda p: calls.armed.append(p.id),
            disarm=calls.disarmed.append,
            resume_exit=lambda _pid: None,
            tick_size=lambda _account, _pos: 0.05,
            armed=lambda _account: calls.in_feed,
            **hooks,
        ),
        sleep=sleep,
        clock=lambda: calls.now,
    )
    return reconciler, calls, account.id


def open_long(store: ProtectionStore, account_id: int, quantity: int, **kw: Any) -> Protection:
    return factories.protection(store, account_id, quantity=quantity, **kw)


def pending_long(store: ProtectionStore, account_id: int, quantity: int, **kw: Any) -> Protection:
    return factories.protection(store, account_id, quantity=quantity, status=Status.PENDING, **kw)


def entry_order(order_id: str, tag: str | None, filled: int, price: float) -> Order:
    return factories.order(order_id, quantity=filled, side=Side.BUY, tag=tag, average_price=price)


# ----------------------------------------------------------------------------- item 2: shared positions


def test_two_protections_on_one_position_share_it_oldest_first(store: ProtectionStore) -> None:
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    older = open_long(store, account_id, 60)
    newer = open_long(store, account_id, 60)
    broker.net = 100
    # A shrink is applied once a second read, FLAT_CONFIRM_SECONDS on, still shows it.
    assert reconciler.reconcile(account_id, broker).unconfirmed == [newer.id]  # type: ignore[arg-type]
    calls.later()
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.resized == [newer.id]
    assert (store.get(older.id).filled_quantity, store.get(newer.id).filled_quantity) == (60, 40)
    # Sold down to 50 outside: the older keeps 50, the newer covers nothing and ends (read twice). The
    # position is still held: it did not close outside TrailStop, the older protection covers all of it.
    broker.net = 50
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert store.get(older.id).filled_quantity == 50
    assert report.covered_by_others == [newer.id] and report.closed_externally == []
    assert (store.get(newer.id).status, store.get(newer.id).reason) == (Status.CLOSED, "external")
    # Then sold out: the older one's position is flat, and that is closed outside.
    broker.net = 0
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.closed_externally == [older.id] and report.covered_by_others == []


def test_a_position_with_an_exit_at_the_broker_is_left_alone(store: ProtectionStore) -> None:
    reconciler, _calls, account_id = rig(store)
    broker = FakeBroker()
    sold = open_long(store, account_id, 60)
    other = open_long(store, account_id, 40)
    store.transition(sold.id, Status.TRIGGERED)
    store.transition(sold.id, Status.EXITING, exit_order_id="X1", exit_quantity=60)
    broker.net = 40  # the exit filled; the positions show it, the protection does not know yet
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert not report.resized and not report.closed_externally
    assert store.get(other.id).filled_quantity == 40 and store.get(other.id).status is Status.OPEN


# ----------------------------------------------------------------------------- item 3: flat means flat twice


def test_a_single_flat_read_does_not_close_a_protection(store: ProtectionStore) -> None:
    broker = FakeBroker()
    # The positions endpoint lagged a fresh fill: flat at the first read, 10 at the second.
    reconciler, calls, account_id = rig(store, during_sleep=lambda: setattr(broker, "net", 10))
    p = open_long(store, account_id, 10)
    broker.net = 0
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert store.get(p.id).status is Status.OPEN and not report.closed_externally
    assert calls.sleeps == [FLAT_CONFIRM_SECONDS] and broker.reads == 2 and calls.disarmed == []


def test_two_flat_reads_some_seconds_apart_close_it(store: ProtectionStore) -> None:
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    p = open_long(store, account_id, 10)
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.closed_externally == [p.id] and store.get(p.id).reason == "external"
    assert calls.sleeps == [FLAT_CONFIRM_SECONDS] and FLAT_CONFIRM_SECONDS >= 1.0
    assert calls.disarmed == [p.id]


# ------------------------------------------------------------- item 3: a quantity changes on two reads, apart


def test_one_read_trailing_a_partly_filled_entry_does_not_shrink_it(store: ProtectionStore) -> None:
    """Found by the chaos run: an entry for 30 filled 10, then 20; a positions read that trailed the second
    fill showed 10, the protection shrank 30 -> 10 on it, and its exit sold 10 and left 20 unprotected."""
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    p = open_long(store, account_id, 30)
    broker.net = 10  # the read trails the fill of the other 20
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert store.get(p.id).filled_quantity == 30 and report.resized == []
    assert report.unconfirmed == [p.id] and report.recheck_in == FLAT_CONFIRM_SECONDS
    assert calls.sleeps == []  # nothing waits inside the reconcile
    calls.later()
    broker.net = 30  # the next read shows the fill: the sighting is forgotten
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.unconfirmed == [] and report.recheck_in is None
    assert reconciler.resizes.pending(p.id) == []
    calls.later()
    broker.net = 10  # a later lagging read is a first sighting again, not a confirmation
    assert reconciler.reconcile(account_id, broker).unconfirmed == [p.id]  # type: ignore[arg-type]
    assert store.get(p.id).filled_quantity == 30


def test_a_shrink_still_seen_some_seconds_on_is_applied_with_the_newer_read(store: ProtectionStore) -> None:
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    p = open_long(store, account_id, 30)
    broker.net = 10  # sold 20 outside the app
    assert reconciler.reconcile(account_id, broker).unconfirmed == [p.id]  # type: ignore[arg-type]
    calls.later(FLAT_CONFIRM_SECONDS / 2)
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.resized == [] and report.recheck_in == FLAT_CONFIRM_SECONDS / 2  # too soon
    calls.later(FLAT_CONFIRM_SECONDS / 2)
    broker.net = 12  # bought 2 back meanwhile: the newer read is the one applied
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.resized == [p.id] and report.unconfirmed == [] and report.recheck_in is None
    assert store.get(p.id).filled_quantity == 12
    changes = store.events(protection_id=p.id, kinds=["quantity_changed"])
    assert [e.message for e in changes] == ["position is 12, was 30"]


def test_a_fill_between_the_reads_starts_the_sighting_over(store: ProtectionStore) -> None:
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    p = open_long(store, account_id, 20)
    broker.net = 10
    reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    # More of the entry filled (an order update): the earlier read said nothing about this quantity.
    store.update(p.id, kind="entry_fill", filled_quantity=30, quantity=30)
    calls.later()
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.resized == [] and report.unconfirmed == [p.id]
    assert store.get(p.id).filled_quantity == 30
    calls.later()
    assert reconciler.reconcile(account_id, broker).resized == [p.id]  # type: ignore[arg-type]
    assert store.get(p.id).filled_quantity == 10


def test_the_flat_reads_second_look_confirms_a_partial_shrink(store: ProtectionStore) -> None:
    """A first read flat, the second (FLAT_CONFIRM_SECONDS later) shows 10 of 30: two reads apart agree
    that it is less, and the newer one is applied, as before."""
    broker = FakeBroker()
    reconciler, calls, account_id = rig(store, during_sleep=lambda: setattr(broker, "net", 10))
    p = open_long(store, account_id, 30)
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert calls.sleeps == [FLAT_CONFIRM_SECONDS] and report.closed_externally == []
    assert report.resized == [p.id] and store.get(p.id).filled_quantity == 10
    assert report.unconfirmed == [] and report.recheck_in is None


class DeliveryBroker(FakeBroker):
    """100 ITC held; today's CNC net (``cnc``) is set by the test: -40 after a sale out of holdings."""

    def __init__(self) -> None:
        super().__init__()
        self.cnc = 0

    def positions(self) -> list[Position]:
        self.reads += 1
        if not self.cnc:
            return []
        return [Position("ITC", "NSE", 424961, "NSE:ITC", self.cnc, 410.0, Product.CNC, "CNC")]

    def holdings(self) -> list[Holding]:
        return [Holding("ITC", "NSE", 424961, "NSE:ITC", "INE154A01025", 100, 0, 380.0, 420.0)]


def test_delivery_growth_on_one_read_that_trails_a_sale_waits_for_a_second(store: ProtectionStore) -> None:
    """Auto-protected holdings shrank 100 -> 60 after a sale of 40; a positions read that trails the sale
    (no CNC row yet) makes 100 sellable again. Grown on it, the protection and its broker-held stop would
    claim 40 shares that are gone; only a second read some seconds on may grow it."""
    reconciler, calls, account_id = rig(store)
    reconciler.auto_protect[account_id] = RULE
    reconciler.auto_protect_holdings.add(account_id)
    broker = DeliveryBroker()
    (pid,) = reconciler.reconcile(account_id, broker).adopted  # type: ignore[arg-type]
    assert store.get(pid).filled_quantity == 100
    broker.cnc = -40  # sold 40 out of holdings outside the app
    calls.later()
    reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    calls.later()
    assert reconciler.reconcile(account_id, broker).resized == [pid]  # type: ignore[arg-type]
    assert store.get(pid).filled_quantity == 60
    calls.later()
    broker.cnc = 0  # one read trailing the sale
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.resized == [] and report.unconfirmed == [pid] and store.get(pid).filled_quantity == 60
    calls.later()
    broker.cnc = -40  # the next read shows it again: nothing grew
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.resized == [] and report.unconfirmed == [] and store.get(pid).filled_quantity == 60
    # A real buy outside the app (40 more held today) is covered once a second read shows it too.
    broker.cnc = 40
    calls.later()
    assert reconciler.reconcile(account_id, broker).unconfirmed == [pid]  # type: ignore[arg-type]
    calls.later()
    assert reconciler.reconcile(account_id, broker).resized == [pid]  # type: ignore[arg-type]
    assert store.get(pid).filled_quantity == 140


def test_an_unreadable_positions_reply_is_an_error_and_closes_nothing(store: ProtectionStore) -> None:
    reconciler, _calls, account_id = rig(store)
    broker = FakeBroker()
    p = open_long(store, account_id, 10)
    broker.fail_positions = MalformedReplyError(
        "kite positions: unreadable reply (expected a list, got null)"
    )
    with pytest.raises(MalformedReplyError):
        reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert store.get(p.id).status is Status.OPEN


# ----------------------------------------------------------------------------- item 4: armed and subscribed


def test_an_open_protection_missing_from_the_feed_is_armed_again(store: ProtectionStore) -> None:
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    broker.net = 20
    watched = open_long(store, account_id, 10)
    lost = open_long(store, account_id, 5)  # its trigger's commit failed: OPEN, but the engine let go
    paused = open_long(store, account_id, 5)
    store.update(paused.id, kind="paused", paused=True)
    calls.in_feed = {watched.id}
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.rearmed == [lost.id] and calls.armed == [lost.id]
    calls.in_feed = {watched.id, lost.id}
    assert reconciler.reconcile(account_id, broker).rearmed == []  # type: ignore[arg-type]


def test_a_protection_opened_after_the_feed_was_read_is_left_to_whoever_opened_it(
    store: ProtectionStore,
) -> None:
    """An adoption between the reconciler's read of the armed set and its read of the store: the adoption
    arms it itself; the reconciler must not arm it a second time (nor warn that it was lost)."""
    reconciler, calls, account_id = rig(store)
    adopted: list[Protection] = []

    def armed_then_adopted(_account: int) -> set[int]:
        adopted.append(open_long(store, account_id, 5))
        return set()

    reconciler.hooks = replace(reconciler.hooks, armed=armed_then_adopted)
    broker = FakeBroker()
    broker.net = 5
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert len(adopted) == 1 and report.rearmed == [] and calls.armed == []
    # Still not armed at the next reconcile (its arm really was lost): armed again then.
    reconciler.hooks = replace(reconciler.hooks, armed=lambda _account: set())
    assert reconciler.reconcile(account_id, broker).rearmed == [adopted[0].id]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- item 5: one bad protection


def test_a_fill_whose_stop_would_be_below_zero_is_refused_and_the_rest_go_on(store: ProtectionStore) -> None:
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    broker.net = 13
    # A 5-point trail on a share that filled at 3.00 would put the stop at -2.00.
    cheap = pending_long(store, account_id, 3, rule=TrailRule.points(5.0))
    store.update(cheap.id, kind="entry_placed", entry_order_id="E1")
    other = pending_long(store, account_id, 10)
    store.update(other.id, kind="entry_placed", entry_order_id="E2")
    broker.orders_book = [entry_order("E1", None, 3, 3.0), entry_order("E2", None, 10, 1500.0)]
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    refused, filled = store.get(cheap.id), store.get(other.id)
    assert report.stop_refused == [cheap.id] and report.failed == []
    assert (refused.status, refused.paused, refused.stop, refused.filled_quantity) == (
        Status.OPEN,
        True,
        None,
        3,
    )
    assert "stop refused: rule: a 5 pts distance" in refused.reason and "-2" in refused.reason
    assert filled.status is Status.OPEN and filled.stop == 1470.0 and other.id in calls.armed


def test_one_protection_that_fails_does_not_stop_the_others(store: ProtectionStore) -> None:
    checked: list[int] = []

    def safety_check(p: Protection) -> None:
        if not checked:
            checked.append(-p.id)
            raise RuntimeError("a bug in one protection's safety stop")
        checked.append(p.id)

    reconciler, _calls, account_id = rig(store, safety_check=safety_check)
    broker = FakeBroker()
    broker.net = 20
    first, second = open_long(store, account_id, 10), open_long(store, account_id, 10)
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.failed == [first.id] and checked == [-first.id, second.id]


def test_auto_protect_skips_a_position_whose_stop_would_be_below_zero(store: ProtectionStore) -> None:
    reconciler, _calls, account_id = rig(store)
    reconciler.auto_protect[account_id] = TrailRule.points(2000.0)  # more than INFY's 1500
    broker = FakeBroker()
    broker.net = 10
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.adopted == [] and store.live(account_id) == []


def test_a_stop_below_zero_is_refused_at_creation_with_a_clear_message(store: ProtectionStore) -> None:
    account = store.add_account("kite", "Zerodha")
    with pytest.raises(
        ValueError, match=r"rule: a 5 pts distance from the entry price 3 puts the stop at -2"
    ):
        open_long(store, account.id, 3, rule=TrailRule.points(5.0), entry_price=3.0)
    assert store.live(account.id) == []


# ----------------------------------------------------------------------------- item 6: a lost entry reply


def test_a_pending_entry_without_its_order_id_is_found_by_its_tag(store: ProtectionStore) -> None:
    reconciler, calls, account_id = rig(store)
    broker = FakeBroker()
    broker.net = 10
    p = pending_long(store, account_id, 10)
    broker.orders_book = [entry_order("E9", "OTHER", 4, 1400.0), entry_order("E1", p.entry_tag, 10, 1500.0)]
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    found = store.get(p.id)
    assert report.filled == [p.id] and calls.armed == [p.id]
    assert (found.status, found.entry_order_id, found.entry_price) == (Status.OPEN, "E1", 1500.0)


def test_an_entry_never_seen_at_the_broker_ends_after_minutes_not_seconds(store: ProtectionStore) -> None:
    reconciler, _calls, account_id = rig(store)
    broker = FakeBroker()
    p = pending_long(store, account_id, 10)
    assert reconciler.reconcile(account_id, broker).ended == []  # type: ignore[arg-type]
    assert store.get(p.id).status is Status.PENDING
    five_minutes_ago = datetime.now() - timedelta(minutes=5)
    db.ProtectionRow.update(created_at=five_minutes_ago).where(db.ProtectionRow.id == p.id).execute()
    assert reconciler.reconcile(account_id, broker).ended == [p.id]  # type: ignore[arg-type]
    assert store.get(p.id).status is Status.REJECTED
    assert store.get(p.id).reason == "entry order not found at the broker"


# ------------------------------------------------------------------------- a crossing during the reconcile


class ExitDuringRead(FakeBroker):
    """The protection's stop is crossed while its positions are being read: ``during_read`` moves it on."""

    def __init__(self, during_read: Callable[[], None]) -> None:
        super().__init__()
        self.during_read = during_read

    def positions(self) -> list[Position]:
        self.during_read()
        return super().positions()


@pytest.mark.parametrize("exit_filled", [True, False], ids=["closed", "triggered"])
def test_a_protection_an_exit_took_during_the_read_is_not_resized(
    store: ProtectionStore, exit_filled: bool
) -> None:
    """Found by the chaos run: the exit of protection 7 filled while the reconciler read positions; the
    read showed the sale, and resizing the now CLOSED protection raised (an ERROR and a failed reconcile).
    """
    reconciler, _calls, account_id = rig(store)
    p = open_long(store, account_id, 10)

    def exit_now() -> None:
        store.transition(p.id, Status.TRIGGERED)
        if exit_filled:
            store.transition(p.id, Status.EXITING, exit_order_id="X1", exit_quantity=10)
            store.transition(p.id, Status.CLOSED, exit_price=1490.0)
        broker.net = 4  # part of the sale shown, as a read racing the fill shows it

    broker = ExitDuringRead(exit_now)
    broker.net = 10
    report = reconciler.reconcile(account_id, broker)  # type: ignore[arg-type]
    assert report.failed == [] and report.resized == []
    assert store.get(p.id).filled_quantity == 10
    assert store.get(p.id).status is (Status.CLOSED if exit_filled else Status.TRIGGERED)


def test_the_rest_of_an_entry_filling_after_the_stop_fired_does_not_arm_it_again(
    store: ProtectionStore,
) -> None:
    """An entry's order update (or book read) saw it OPEN and partly filled; its stop fired on the feed
    thread before the rest of the fill was written: the fill is recorded, but the protection is exiting
    and is not armed again (it would fire a second time, and its safety stop would follow it again)."""
    reconciler, calls, account_id = rig(store)
    p = pending_long(store, account_id, 10)
    seen = store.transition(
        p.id, Status.OPEN, expected=Status.PENDING, entry_price=1500.0, filled_quantity=4, stop=1470.0
    )
    store.transition(p.id, Status.TRIGGERED, expected=Status.OPEN, reason="stop")
    reconciler.apply_entry_state(seen, OrderStatus.COMPLETE, 10, 1500.0)
    assert calls.armed == []
    assert store.get(p.id).status is Status.TRIGGERED and store.get(p.id).filled_quantity == 10
