"""The safety stop's decisions (a synthetic clock) and its exit-time paths against a scripted broker."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from tests import factories
from tests.unit.models.test_store import new_protection
from trailstop_gui.models.domain import Product, Protection, SafetyKind, SafetyState, Side, Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import (
    IST,
    KITE_CAPABILITIES,
    Gtt,
    GttNotFound,
    GttStatus,
    Order,
    OrderStatus,
    OrderType,
    Position,
)
from trailstop_gui.services.brokers.errors import BrokerInputError, RejectedError, TemporaryError
from trailstop_gui.services.safety_stop import (
    Decision,
    Move,
    SafetyHooks,
    SafetyPolicy,
    SafetyStopManager,
    decide,
    gtt_limit_price,
    threshold_for,
)

POLICY = SafetyPolicy(min_interval=3.0)


def plan(**overrides: Any) -> Decision:
    args: dict[str, Any] = dict(
        side=Side.BUY,
        wanted=990.0,
        held=985.0,
        held_quantity=10,
        quantity=10,
        modifications=0,
        cap=25,
        last_move=100.0,
        now=110.0,
        threshold=5.0,
        policy=POLICY,
    )
    args.update(overrides)
    return decide(**args)


def test_decisions() -> None:
    assert plan(held=None) == Decision(Move.PLACE, 990.0)
    assert plan(held=986.0).move is Move.NONE  # 4 < the threshold of 5
    assert plan() == Decision(Move.MODIFY, 990.0)  # 5: moves
    assert plan(now=101.0) == Decision(Move.WAIT, 990.0, 103.0)  # not within 3 s of the last move
    assert plan(now=101.0, held_quantity=12).move is Move.MODIFY  # a quantity fix goes at once
    assert plan(held=990.0, held_quantity=8).move is Move.MODIFY
    assert plan(modifications=22).move is Move.MODIFY
    assert plan(modifications=23).move is Move.REPLACE  # 25 less the 2 kept spare
    assert plan(cap=None, modifications=500).move is Move.MODIFY
    # A short's broker stop sits above: it lags when it is higher than wanted.
    assert plan(side=Side.SELL, wanted=1010.0, held=1015.0).move is Move.MODIFY
    assert plan(side=Side.SELL, wanted=1010.0, held=1012.0).move is Move.NONE
    # Never backwards, unless the trader changed the buffer; a quantity fix keeps the level held.
    assert plan(wanted=980.0).move is Move.NONE
    assert plan(wanted=980.0, loosen=True) == Decision(Move.MODIFY, 980.0)
    assert plan(wanted=980.0, held_quantity=4) == Decision(Move.MODIFY, 985.0)


def test_threshold_and_limit_price() -> None:
    assert threshold_for(1500.0, 0.05, 1.0, 5, 0.5) == pytest.approx(7.5)
    assert threshold_for(10.0, 0.05, 1.0, 5, 0.5) == pytest.approx(0.125)  # half of five ticks
    assert threshold_for(10.0, 0.05, 0.1, 0, 0.5) == 0.05  # never below one tick
    assert gtt_limit_price(Side.SELL, 1000.0, 2.0, 0.05) == 980.0
    assert gtt_limit_price(Side.BUY, 1000.03, 2.0, 0.05) == 1020.05


# ----------------------------------------------------------------------------- exit paths


def order(order_id: str, status: OrderStatus, *, order_type: OrderType = OrderType.SL_M, **kw: Any) -> Order:
    fields: dict[str, Any] = dict(
        raw_status=status.value.replace("_", " "),
        order_type=order_type,
        pending_quantity=0,
        average_price=97.0 if status is OrderStatus.COMPLETE else 0.0,
        trigger_price=96.0,
        placed_at=datetime.now(IST),
    )
    fields.update(kw)
    filled = 10 if status is OrderStatus.COMPLETE else 0
    return factories.order(order_id, status, quantity=fields.pop("quantity", 10), filled=filled, **fields)


class ScriptedBroker:
    """Answers from dicts; failures are queued per call name. Records every call."""

    capabilities = KITE_CAPABILITIES

    def __init__(self) -> None:
        self.orders_by_id: dict[str, Order] = {}
        self.gtts_by_id: dict[str, Gtt] = {}
        self.fail: dict[str, list[Exception]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.after: dict[str, Any] = {}  # call name -> a function run after the call succeeds

    def _call(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        queue = self.fail.get(name)
        if queue:
            raise queue.pop(0)

    def order(self, order_id: str) -> Order:
        self._call("order", order_id)
        return self.orders_by_id[order_id]

    def orders(self) -> list[Order]:
        self._call("orders", None)
        return list(self.orders_by_id.values())

    def modify_order(self, order_id: str, **kw: Any) -> str:
        self._call("modify_order", (order_id, kw))
        current = self.orders_by_id[order_id]
        self.orders_by_id[order_id] = replace(current, order_type=kw.get("order_type") or current.order_type)
        return order_id

    def cancel_order(self, order_id: str, *, urgent: bool = False) -> str:
        self._call("cancel_order", (order_id, urgent))
        self.orders_by_id[order_id] = replace(self.orders_by_id[order_id], status=OrderStatus.CANCELLED)
        return order_id

    def delete_gtt(self, gtt_id: str, *, urgent: bool = False) -> None:
        self._call("delete_gtt", (gtt_id, urgent))
        hook = self.after.get("delete_gtt")
        if hook:
            hook()
        self.gtts_by_id.pop(gtt_id, None)

    def gtt(self, gtt_id: str) -> Gtt:
        self._call("gtt", gtt_id)
        if gtt_id not in self.gtts_by_id:
            raise GttNotFound(f"no GTT {gtt_id}")
        return self.gtts_by_id[gtt_id]

    def gtts(self) -> list[Gtt]:
        return list(self.gtts_by_id.values())

    def ltp(self, keys: list[str]) -> dict[str, float]:
        return dict.fromkeys(keys, 100.0)

    def place_order(self, request: Any) -> str:
        self._call("place_order", request)
        order_id = f"P{len(self.orders_by_id) + 1}"
        self.orders_by_id[order_id] = order(
            order_id, OrderStatus.TRIGGER_PENDING, trigger_price=request.trigger_price, tag=request.tag
        )
        hook = self.after.get("place_order")
        if hook:
            hook()
        return order_id

    def find_order_by_tag(self, tag: str) -> Order | None:
        self._call("find_order_by_tag", tag)
        return next((o for o in self.orders_by_id.values() if o.tag == tag), None)

    def order_history(self, order_id: str) -> list[Order]:
        self._call("order_history", order_id)
        return [self.orders_by_id[order_id]]

    def live_slm(self) -> list[str]:
        return [i for i, o in self.orders_by_id.items() if o.status is OrderStatus.TRIGGER_PENDING]

    def place_gtt(self, request: Any) -> str:
        raise AssertionError("not in these tests")

    def modify_gtt(self, gtt_id: str, request: Any) -> str:
        raise AssertionError("not in these tests")


def manager(store: ProtectionStore, broker: ScriptedBroker) -> SafetyStopManager:
    return SafetyStopManager(
        store,
        SafetyHooks(broker_for=lambda _a: broker),
        SafetyPolicy(exit_retry_delay=0),
        sleep=lambda _s: None,
    )


def held(
    store: ProtectionStore, kind: SafetyKind, order_id: str, product: Product = Product.MIS
) -> Protection:
    p = new_protection(store, product=product, safety_enabled=True)
    return store.update_safety(
        p.id,
        safety_state=SafetyState.PLACED,
        safety_kind=kind,
        safety_order_id=order_id,
        safety_level=96.0,
        safety_price=94.05 if kind is SafetyKind.GTT else None,
        safety_quantity=10,
    )


def test_no_safety_stop_proceeds(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    p = new_protection(store)
    assert manager(store, broker).prepare_exit(p, broker, 10).proceed and broker.calls == []


def test_slm_becomes_the_exit(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    broker.orders_by_id["S1"] = order("S1", OrderStatus.TRIGGER_PENDING)
    p = held(store, SafetyKind.SL_M, "S1")
    exit_plan = manager(store, broker).prepare_exit(p, broker, 7)
    assert (exit_plan.order_id, exit_plan.fired) == ("S1", False)
    assert (
        "modify_order",
        ("S1", {"order_type": OrderType.MARKET, "quantity": 7, "urgent": True}),
    ) in broker.calls
    assert store.get(p.id).safety_state is SafetyState.EXIT


def test_slm_that_fired_meanwhile_is_the_exit(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    broker.orders_by_id["S1"] = order("S1", OrderStatus.TRIGGER_PENDING)
    broker.fail["modify_order"] = [RejectedError("Order cannot be modified as it is complete.")]
    p = held(store, SafetyKind.SL_M, "S1")

    real_order = broker.order

    def fired_after_modify(order_id: str) -> Order:
        if any(name == "modify_order" for name, _ in broker.calls):
            broker.orders_by_id["S1"] = order("S1", OrderStatus.COMPLETE)
        return real_order(order_id)

    broker.order = fired_after_modify  # type: ignore[method-assign]
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert (exit_plan.order_id, exit_plan.fired) == ("S1", True)
    assert store.get(p.id).safety_state is SafetyState.FIRED
    assert not any(name == "cancel_order" for name, _ in broker.calls)


def test_slm_at_its_cap_is_cancelled_then_the_usual_exit(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    broker.orders_by_id["S1"] = order("S1", OrderStatus.TRIGGER_PENDING)
    broker.fail["modify_order"] = [RejectedError("Maximum allowed order modifications exceeded.")]
    p = held(store, SafetyKind.SL_M, "S1")
    assert manager(store, broker).prepare_exit(p, broker, 10).proceed
    assert ("cancel_order", ("S1", True)) in broker.calls
    assert store.get(p.id).safety_state is SafetyState.REMOVED


def test_slm_with_the_position_already_flat_is_cancelled(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    broker.orders_by_id["S1"] = order("S1", OrderStatus.TRIGGER_PENDING)
    p = held(store, SafetyKind.SL_M, "S1")
    assert manager(store, broker).prepare_exit(p, broker, 0).proceed
    assert [name for name, _ in broker.calls] == ["order", "cancel_order"]


def test_gtt_deleted_first(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    assert manager(store, broker).prepare_exit(p, broker, 10).proceed
    assert broker.calls[0] == ("delete_gtt", ("G1", True))
    assert store.get(p.id).safety_state is SafetyState.REMOVED


def test_gtt_that_fired_just_before_the_delete_is_the_exit(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    fired = order("O9", OrderStatus.OPEN, order_type=OrderType.LIMIT, price=94.05, product=Product.CNC)

    def fire() -> None:  # it fires between our last look and the delete, which still succeeds
        broker.orders_by_id["O9"] = fired

    broker.after["delete_gtt"] = fire
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert (exit_plan.order_id, exit_plan.fired) == ("O9", True)
    # Resting unfilled, it is pushed to MARKET: the safety stop's order is turned into the exit.
    assert ("modify_order", ("O9", {"order_type": OrderType.MARKET, "urgent": True})) in broker.calls


def test_a_gtt_deleted_for_the_exit_that_had_fired_is_still_found_as_the_sale(store: ProtectionStore) -> None:
    """Found by make chaos-safety (c80044e, protection 44): the GTT fired unseen just before its delete
    (the book did not list the order yet, the price was back above the trigger); the own exit was refused
    for want of shares. The GTT, taken away and no longer recorded, is still what sold them: its order, in
    the book, is the sale, not a sale from outside (the exit's recheck and the reconciler ask this)."""
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    safety = manager(store, broker)
    assert safety.prepare_exit(p, broker, 10).proceed  # price above the trigger, nothing in the book
    removed = store.get(p.id)
    assert removed.safety_state is SafetyState.REMOVED and not removed.safety_order_id
    assert safety.fired_order(removed, broker) is None and safety.sold_by_stop(removed, broker) is None
    sale = order("O9", OrderStatus.COMPLETE, order_type=OrderType.LIMIT, price=94.05, product=Product.CNC)
    broker.orders_by_id["O9"] = sale  # the lagging book lists it now
    broker.orders_by_id["T1"] = replace(sale, order_id="T1", tag="outside")  # the trader's: tagged
    assert safety.fired_order(removed, broker) == sale
    assert safety.sold_by_stop(removed, broker) == sale
    working = replace(sale, status=OrderStatus.OPEN, raw_status="OPEN", filled_quantity=0)
    broker.orders_by_id["O9"] = working
    assert safety.fired_order(removed, broker) is None  # not filled: the reconciler does not close on it
    assert safety.sold_by_stop(removed, broker) == working  # but it is the exit in progress


def test_a_flat_position_waits_for_the_order_of_the_gtt_just_deleted(store: ProtectionStore) -> None:
    """The position reads flat when the exit starts: the GTT is the likeliest seller, whatever the price
    says (a gap through it may have come back unseen), so its order is looked for over the whole window
    (the book lags) before "closed outside"."""
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    reads = 0
    sale = order("O9", OrderStatus.COMPLETE, order_type=OrderType.LIMIT, price=94.05, product=Product.CNC)

    read_book = broker.orders

    def book_catches_up() -> list[Order]:
        nonlocal reads
        reads += 1
        if reads == 3:  # the third read of the lagging book lists the order the GTT fired into
            broker.orders_by_id["O9"] = sale
        return read_book()

    broker.orders = book_catches_up  # type: ignore[method-assign]
    exit_plan = manager(store, broker).prepare_exit(p, broker, 0)
    assert (exit_plan.order_id, exit_plan.fired) == ("O9", True)


def test_gtt_delete_refused_because_it_fired(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    broker.orders_by_id["O9"] = order("O9", OrderStatus.COMPLETE, order_type=OrderType.LIMIT, price=94.05)
    broker.gtts_by_id["G1"] = Gtt(
        "G1", GttStatus.TRIGGERED, "triggered", Side.SELL, 10, 96.0, 94.05, 408065, "INFY", "NSE", "O9"
    )
    broker.fail["delete_gtt"] = [RejectedError("Trigger cannot be deleted: triggered")]
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert (exit_plan.order_id, exit_plan.fired) == ("O9", True)


def test_gtt_that_cannot_be_deleted_blocks_the_exit(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    broker.fail["delete_gtt"] = [TemporaryError("HTTP 503")] * 10
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert exit_plan.blocked and "could not be deleted" in exit_plan.blocked
    assert store.get(p.id).safety_state is SafetyState.PLACED  # still protecting


def test_gtt_order_in_book_ignores_other_orders(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    broker.orders_by_id["A"] = order(
        "A", OrderStatus.OPEN, order_type=OrderType.LIMIT, price=90.0
    )  # not ours
    broker.orders_by_id["B"] = order("B", OrderStatus.OPEN, order_type=OrderType.LIMIT, price=94.05, tag="X")
    broker.orders_by_id["C"] = order("C", OrderStatus.CANCELLED, order_type=OrderType.LIMIT, price=94.05)
    assert manager(store, broker).prepare_exit(p, broker, 10).proceed


# ------------------------------------------------------------- a stop must not outlive its protection
# Found by the chaos run with safety stops: a position closed outside while its SL-M was on its way; the
# protection ended, the SL-M arrived, and the app stopped before taking it away. Left at the broker, it
# would have sold a position the trader no longer had.


def test_a_protection_that_ends_while_its_stop_is_placed_takes_the_stop_away(store: ProtectionStore) -> None:
    broker = ScriptedBroker()
    p = new_protection(store, safety_enabled=True)

    def closed_outside() -> None:  # the reconciler, on another thread, finds the position flat meanwhile
        store.transition(p.id, Status.CLOSED, expected=Status.OPEN, reason="external")

    broker.after["place_order"] = closed_outside
    safety = manager(store, broker)
    try:
        safety.track(p)
        assert safety.wait_idle()
    finally:
        safety.shutdown()
    assert [name for name, _ in broker.calls if name in ("place_order", "cancel_order")] == [
        "place_order",
        "cancel_order",
    ]
    assert broker.live_slm() == [] and store.get(p.id).safety_state is SafetyState.REMOVED


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "placed-not-recorded"])
def test_an_ended_protection_left_with_a_stop_has_it_taken_away(
    store: ProtectionStore, recorded: bool
) -> None:
    """After a restart: the stop is found (by its id, or its tag if the crash came first) and cancelled."""
    broker = ScriptedBroker()
    p = new_protection(store, safety_enabled=True)
    broker.orders_by_id["S1"] = order("S1", OrderStatus.TRIGGER_PENDING, tag=p.safety_tag)
    if recorded:
        store.update_safety(
            p.id,
            safety_state=SafetyState.PLACED,
            safety_kind=SafetyKind.SL_M,
            safety_order_id="S1",
            safety_level=96.0,
            safety_quantity=10,
        )
    else:
        store.update_safety(p.id, safety_state=SafetyState.PLACING, safety_kind=SafetyKind.SL_M)
    store.transition(p.id, Status.CLOSED, expected=Status.OPEN, reason="external")
    assert [x.id for x in store.safety_left_behind()] == [p.id]
    safety = manager(store, broker)
    try:
        for left in store.safety_left_behind(p.account_id):
            safety.refresh(left.id)  # what every reconcile does
        assert safety.wait_idle()
    finally:
        safety.shutdown()
    assert ("cancel_order", ("S1", False)) in broker.calls and broker.live_slm() == []
    assert store.get(p.id).safety_state is SafetyState.REMOVED and store.safety_left_behind() == []


def test_a_gtt_placed_but_not_recorded_that_fired_closes_the_protection(store: ProtectionStore) -> None:
    """Found by make chaos-safety: the app died between placing a GTT and recording it; the GTT fired
    while it was down. On restart it placed a second GTT for the flat position, and the protection was
    recorded as closed outside TrailStop. The fired GTT is now found: its order is the exit."""
    broker = ScriptedBroker()
    p = new_protection(store, product=Product.CNC, safety_enabled=True)
    p = store.update_safety(p.id, safety_state=SafetyState.PLACING, safety_kind=SafetyKind.GTT)
    limit = gtt_limit_price(Side.SELL, 96.0, SafetyPolicy().limit_percent, 0.05)
    broker.orders_by_id["O9"] = order("O9", OrderStatus.COMPLETE, order_type=OrderType.LIMIT, price=limit)
    broker.gtts_by_id["G7"] = Gtt(
        "G7", GttStatus.TRIGGERED, "triggered", Side.SELL, 10, 96.0, limit, 408065, "INFY", "NSE", "O9"
    )
    safety = manager(store, broker)
    try:
        safety.track(p)  # what a restart does for an armed protection
        assert safety.wait_idle()
    finally:
        safety.shutdown()
    done = store.get(p.id)
    assert (done.status, done.reason, done.exit_order_id) == (Status.CLOSED, "safety stop", "O9")
    assert not any(name in ("place_gtt", "place_order") for name, _ in broker.calls)


def test_a_twin_protections_fired_gtt_order_is_not_taken_for_this_ones(store: ProtectionStore) -> None:
    """Found by the chaos run with a position protected twice: both held twin GTTs (same level, price and
    quantity); the first one's fired and closed it. The second one's GTT was deleted for its own exit, and
    the untagged LIMIT order in the book (the first one's) was taken as the order its GTT fired into: it
    closed "by its safety stop" with another protection's order, and its own share would stay unsold."""
    broker = ScriptedBroker()
    first = held(store, SafetyKind.GTT, "G1", Product.CNC)
    store.transition(first.id, Status.TRIGGERED, reason="stop")
    store.transition(first.id, Status.EXITING, exit_order_id="O9", exit_quantity=10)
    store.transition(first.id, Status.CLOSED, reason="safety stop", exit_quantity=10)
    broker.orders_by_id["O9"] = order(
        "O9", OrderStatus.COMPLETE, order_type=OrderType.LIMIT, price=94.05, product=Product.CNC
    )
    twin = new_protection(store, account_id=first.account_id, product=Product.CNC, safety_enabled=True)
    twin = store.update_safety(
        twin.id,
        safety_state=SafetyState.PLACED,
        safety_kind=SafetyKind.GTT,
        safety_order_id="G2",
        safety_level=96.0,
        safety_price=94.05,
        safety_quantity=10,
    )
    exit_plan = manager(store, broker).prepare_exit(twin, broker, 10)
    assert exit_plan.proceed and exit_plan.order_id is None
    assert broker.calls[0] == ("delete_gtt", ("G2", True))


# ----------------------------------------------------------------------------- a position protected twice


class PositionBroker(ScriptedBroker):
    """A ScriptedBroker that also answers positions: one INFY MIS long of ``net``."""

    def __init__(self, net: int) -> None:
        super().__init__()
        self.net = net

    def positions(self) -> list[Position]:
        self._call("positions", None)
        return [Position("INFY", "NSE", 408065, "NSE:INFY", self.net, 100.0, Product.MIS, "MIS")]

    def holdings(self) -> list[Any]:
        return []


def placed(broker: ScriptedBroker) -> list[Any]:
    return [request for name, request in broker.calls if name == "place_order"]


def test_a_position_protected_twice_holds_one_broker_stop_for_its_quantity(store: ProtectionStore) -> None:
    """Found by the chaos run (seed 30300, run 2): a second protection of a 33-share Upstox long, written
    while the app was down, placed its own GTT for all 33 at start-up beside the first one's GTT for the
    same 33; a price gap fired both and sold 66: a naked short of 33. The stops of the protections sharing
    a position never add up to more than it: the older one holds it all, the twin holds nothing."""
    broker = PositionBroker(net=10)
    first = new_protection(store, safety_enabled=True)
    twin = new_protection(store, account_id=first.account_id, safety_enabled=True)
    safety = manager(store, broker)
    safety._step(first.id)
    safety._step(twin.id)
    assert [r.quantity for r in placed(broker)] == [10]
    assert store.get(first.id).safety_quantity == 10
    assert store.get(twin.id).safety_order_id is None
    assert store.get(twin.id).safety_state is not SafetyState.PLACED


def test_a_twin_holding_a_full_size_stop_has_it_taken_away(store: ProtectionStore) -> None:
    """A database from before the fix: both twins hold a stop for the whole position. The younger's goes."""
    broker = PositionBroker(net=10)
    first = held(store, SafetyKind.SL_M, "S1")
    twin = new_protection(store, account_id=first.account_id, safety_enabled=True)
    twin = store.update_safety(
        twin.id,
        safety_state=SafetyState.PLACED,
        safety_kind=SafetyKind.SL_M,
        safety_order_id="S2",
        safety_level=96.0,
        safety_quantity=10,
    )
    broker.orders_by_id["S1"] = order("S1", OrderStatus.TRIGGER_PENDING)
    broker.orders_by_id["S2"] = order("S2", OrderStatus.TRIGGER_PENDING)
    safety = manager(store, broker)
    safety._step(twin.id)
    assert ("cancel_order", ("S2", False)) in broker.calls
    assert store.get(twin.id).safety_state is SafetyState.REMOVED
    assert broker.orders_by_id["S1"].status is OrderStatus.TRIGGER_PENDING
    assert placed(broker) == []


def test_protections_sharing_a_larger_position_each_hold_their_part(store: ProtectionStore) -> None:
    """Two protections of 10 on a 15-share long: the older holds 10, the younger the 5 left."""
    broker = PositionBroker(net=15)
    first = new_protection(store, safety_enabled=True)
    second = new_protection(store, account_id=first.account_id, safety_enabled=True)
    safety = manager(store, broker)
    safety._step(first.id)
    safety._step(second.id)
    assert [r.quantity for r in placed(broker)] == [10, 5]
    assert store.get(second.id).safety_quantity == 5


def test_a_protection_alone_on_its_position_reads_no_positions(store: ProtectionStore) -> None:
    broker = PositionBroker(net=10)
    p = new_protection(store, safety_enabled=True)
    manager(store, broker)._step(p.id)
    assert [r.quantity for r in placed(broker)] == [10]
    assert not any(name == "positions" for name, _ in broker.calls)


# ----------------------------------------------------------------------------- the price at start-up


class QuoteBroker(ScriptedBroker):
    """A ScriptedBroker whose LTP is set by the test; every quote read is recorded."""

    def __init__(self, ltp: float) -> None:
        super().__init__()
        self.last = ltp

    def ltp(self, keys: list[str]) -> dict[str, float]:
        self._call("ltp", tuple(keys))
        return dict.fromkeys(keys, self.last)


def test_at_start_up_already_crossed_is_judged_on_a_fresh_broker_quote(store: ProtectionStore) -> None:
    """The feed still holds a price from before the restart (120) while the market is at 95, through
    the safety level (~97): a stop placed there would fire at once beside TrailStop's own exit."""
    broker = QuoteBroker(ltp=95.0)
    p = new_protection(store, safety_enabled=True)  # stop 98: its safety level is about 97
    feed = {"ltp": 120.0}
    safety = SafetyStopManager(
        store,
        SafetyHooks(broker_for=lambda _a: broker, last_price=lambda _p: feed["ltp"]),
        SafetyPolicy(exit_retry_delay=0, retry_delay=60.0),
        sleep=lambda _s: None,
    )
    try:
        safety.track(p)  # what a start does for an armed protection
        assert safety.wait_idle()
    finally:
        safety.shutdown()
    assert [name for name, _ in broker.calls if name != "find_order_by_tag"] == ["ltp"]
    assert placed(broker) == [] and store.get(p.id).safety_order_id is None
    # Once a broker quote has been read, the feed's price serves again (it is live by then).
    broker.last, feed["ltp"] = 50.0, 99.5
    broker.calls.clear()
    safety._step(p.id)
    assert [name for name, _ in broker.calls] == ["place_order", "order"]
    assert store.get(p.id).safety_state is SafetyState.PLACED


# ------------------------------------------------ a stop placed, not recorded (a crash), found fired


def unrecorded_fired_gtt(store: ProtectionStore, status: OrderStatus) -> tuple[ScriptedBroker, Protection]:
    """A CNC protection whose GTT G7 reached the broker, was never recorded, and fired into O9."""
    broker = ScriptedBroker()
    p = new_protection(store, product=Product.CNC, safety_enabled=True)
    p = store.update_safety(p.id, safety_state=SafetyState.PLACING, safety_kind=SafetyKind.GTT)
    limit = gtt_limit_price(Side.SELL, 96.0, SafetyPolicy().limit_percent, 0.05)
    broker.orders_by_id["O9"] = order("O9", status, order_type=OrderType.LIMIT, price=limit)
    broker.gtts_by_id["G7"] = Gtt(
        "G7", GttStatus.TRIGGERED, "triggered", Side.SELL, 10, 96.0, limit, 408065, "INFY", "NSE", "O9"
    )
    return broker, p


def adopted(store: ProtectionStore, pid: int) -> list[str]:
    return [e.new for e in store.events(protection_id=pid) if e.kind == "safety_adopted"]


def test_an_unrecorded_gtt_whose_order_still_works_is_recorded_while_open(store: ProtectionStore) -> None:
    """Its order is working (not filled yet): the protection stays OPEN, and now names the GTT."""
    broker, p = unrecorded_fired_gtt(store, OrderStatus.OPEN)
    safety = manager(store, broker)
    try:
        safety.track(p)
        assert safety.wait_idle()
    finally:
        safety.shutdown()
    now = store.get(p.id)
    assert (now.status, now.safety_state) == (Status.OPEN, SafetyState.FIRED)
    assert (now.safety_order_id, now.safety_kind, now.safety_level, now.safety_quantity) == (
        "G7",
        SafetyKind.GTT,
        96.0,
        10,
    )
    assert len(adopted(store, p.id)) == 1 and "G7" in adopted(store, p.id)[0]
    assert not any(name in ("place_gtt", "place_order") for name, _ in broker.calls)


def test_an_unrecorded_gtt_that_filled_is_recorded_before_the_close(store: ProtectionStore) -> None:
    broker, p = unrecorded_fired_gtt(store, OrderStatus.COMPLETE)
    safety = manager(store, broker)
    try:
        safety.track(p)
        assert safety.wait_idle()
    finally:
        safety.shutdown()
    done = store.get(p.id)
    assert (done.status, done.reason, done.safety_order_id) == (Status.CLOSED, "safety stop", "G7")
    events = [(e.kind, e.new) for e in store.events(protection_id=p.id)]
    assert events.index(next(e for e in events if e[0] == "safety_adopted")) < events.index(
        ("transition", "CLOSED")
    )


def test_own_exit_over_an_unrecorded_fired_gtt_sends_nothing(store: ProtectionStore) -> None:
    """The latent double exit: TrailStop's own stop fired at the restart (the positions read still showing
    the shares); the GTT it never recorded had sold them. Its order is the exit; nothing is sent."""
    broker, p = unrecorded_fired_gtt(store, OrderStatus.COMPLETE)
    p = store.transition(p.id, Status.TRIGGERED, reason="stop")
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert (exit_plan.order_id, exit_plan.fired) == ("O9", True)
    assert store.get(p.id).safety_order_id == "G7"


def test_the_reconciler_finds_an_unrecorded_fired_gtt(store: ProtectionStore) -> None:
    """A flat position, its GTT never recorded: the order it fired into closed it (not "external")."""
    broker, p = unrecorded_fired_gtt(store, OrderStatus.COMPLETE)
    fired = manager(store, broker).fired_order(p, broker)
    assert fired is not None and fired.order_id == "O9"
    now = store.get(p.id)
    assert (now.status, now.safety_order_id) == (Status.OPEN, "G7")  # the reconciler closes it


def test_a_product_the_broker_holds_no_stop_for_switches_the_safety_stop_off(store: ProtectionStore) -> None:
    """It used to write a journal event with no field changed, which the store refuses (ValueError): the
    step failed, was retried every minute, and the stop stayed "placing" for ever."""
    broker = ScriptedBroker()
    broker.capabilities = replace(KITE_CAPABILITIES, safety_orders=())  # type: ignore[misc]
    p = new_protection(store, safety_enabled=True)
    manager(store, broker)._step(p.id)
    assert store.get(p.id).safety_state is SafetyState.OFF
    assert any(e.kind == "safety_unsupported" for e in store.events(protection_id=p.id))
    assert broker.calls == []


def test_an_slm_that_fired_then_was_switched_off_is_still_the_exit(store: ProtectionStore) -> None:
    """Switched off after it fired, the stop keeps its order id; TrailStop's own exit adopts its order."""
    broker = ScriptedBroker()
    broker.orders_by_id["S1"] = order("S1", OrderStatus.COMPLETE)
    p = held(store, SafetyKind.SL_M, "S1")
    store.update_safety(p.id, safety_state=SafetyState.FIRED)
    store.update_safety(p.id, safety_state=SafetyState.OFF, safety_enabled=False)
    p = store.transition(p.id, Status.TRIGGERED, reason="stop")
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert (exit_plan.order_id, exit_plan.fired) == ("S1", True)
    assert store.get(p.id).safety_state is SafetyState.FIRED


def test_a_stop_recorded_fired_without_its_id_is_found_before_the_own_exit(store: ProtectionStore) -> None:
    """A database written before the fix: the GTT was found fired with its order still working, and the
    state FIRED was written without the GTT's id. TrailStop's own exit then sent a second sell; now the
    GTT is found again, recorded, and its order is the exit."""
    broker, p = unrecorded_fired_gtt(store, OrderStatus.COMPLETE)
    store.update_safety(p.id, safety_state=SafetyState.FIRED)
    p = store.transition(p.id, Status.TRIGGERED, reason="stop")
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert (exit_plan.order_id, exit_plan.fired) == ("O9", True)
    assert store.get(p.id).safety_order_id == "G7"


def test_a_twin_does_not_take_the_first_ones_fired_gtt_for_its_unrecorded_stop(
    store: ProtectionStore,
) -> None:
    """Found by the chaos run (after the unrecorded-stop fix): two protections on one MARUTI long, the older
    holding the GTT, the twin none (state still "placing"). Both stops fired; the first one's exit was its
    fired GTT's order and it closed. The twin's exit then looked for an unrecorded stop of its own, found the
    first one's GTT (ended, so not "live"), and closed with the first one's order as its exit."""
    broker, first = unrecorded_fired_gtt(store, OrderStatus.COMPLETE)
    store.update_safety(first.id, safety_order_id="G7", safety_state=SafetyState.FIRED)
    store.transition(first.id, Status.TRIGGERED, reason="stop")
    store.transition(first.id, Status.EXITING, exit_order_id="O9", exit_quantity=10, reason="safety stop")
    store.transition(first.id, Status.CLOSED, reason="safety stop", exit_quantity=10)
    twin = new_protection(store, account_id=first.account_id, product=Product.CNC, safety_enabled=True)
    twin = store.update_safety(twin.id, safety_state=SafetyState.PLACING, safety_kind=SafetyKind.GTT)
    twin = store.transition(twin.id, Status.TRIGGERED, reason="stop")
    exit_plan = manager(store, broker).prepare_exit(twin, broker, 10)
    assert exit_plan.proceed and exit_plan.order_id is None
    assert store.get(twin.id).safety_order_id is None
    # Also when only the exit names it (the first one's row no longer holds the GTT's id).
    store.update_safety(first.id, safety_order_id=None)
    assert manager(store, broker).prepare_exit(twin, broker, 10).proceed
    assert store.get(twin.id).safety_order_id is None


class LaggingBookBroker(ScriptedBroker):
    """The order book does not list ``hidden`` yet, and reading it fails ``misses`` times (Kite's lag)."""

    def __init__(self, hidden: str, misses: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.misses = misses

    def orders(self) -> list[Order]:
        return [o for o in super().orders() if o.order_id != self.hidden]

    def order(self, order_id: str) -> Order:
        if order_id == self.hidden and self.misses > 0:
            self.misses -= 1
            self._call("order", order_id)
            raise BrokerInputError("Couldn't find that `order_id`.")
        return super().order(order_id)


def test_a_gtt_seen_fired_before_its_order_is_in_the_book_is_the_exit(store: ProtectionStore) -> None:
    """Found by the chaos-safety run (seed 30297): the safety worker read the Kite GTT as triggered, its
    order not in the lagging book yet, and recorded nothing; TrailStop's own exit then deleted the GTT (Kite
    forgets a deleted GTT, and with it the order it placed), found nothing, and sent a second sell (refused
    there for lack of holdings; on an NRML position it would have gone). The GTT is now recorded FIRED at
    once, so the exit keeps it and waits for its order."""
    broker = LaggingBookBroker(hidden="O9", misses=1)
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    broker.orders_by_id["O9"] = order("O9", OrderStatus.COMPLETE, order_type=OrderType.LIMIT, price=94.05)
    broker.gtts_by_id["G1"] = Gtt(
        "G1", GttStatus.TRIGGERED, "triggered", Side.SELL, 10, 96.0, 94.05, 408065, "INFY", "NSE", "O9"
    )
    safety = manager(store, broker)
    try:
        safety.verify(p)  # a reconcile asks for the broker stop to be read back
        assert safety.wait_idle()
    finally:
        safety.shutdown()
    now = store.get(p.id)
    assert (now.status, now.safety_state, now.safety_order_id) == (Status.OPEN, SafetyState.FIRED, "G1")
    p = store.transition(p.id, Status.TRIGGERED, reason="stop")
    exit_plan = manager(store, broker).prepare_exit(p, broker, 10)
    assert (exit_plan.order_id, exit_plan.fired) == ("O9", True)
    assert not any(name == "delete_gtt" for name, _ in broker.calls)


def test_a_gtt_known_to_have_fired_is_never_taken_for_deleted(store: ProtectionStore) -> None:
    """Found by make chaos-safety: the GTT was read as triggered (FIRED); at the exit Kite no longer listed
    it and the lagging book did not show its order, the price had come back above the trigger, and the exit
    concluded "deleted, not fired": its own exit (or, the position flat, "closed outside") followed. A GTT
    known to have fired is the exit; until its order shows, the exit waits (a temporary error: TRIGGERED,
    tried again), and nothing is deleted or sent."""
    broker = ScriptedBroker()
    p = held(store, SafetyKind.GTT, "G1", Product.CNC)
    store.update_safety(p.id, safety_state=SafetyState.FIRED)
    p = store.transition(p.id, Status.TRIGGERED, reason="stop")
    with pytest.raises(TemporaryError, match="not listed yet"):
        manager(store, broker).prepare_exit(p, broker, 10)
    assert "delete_gtt" not in [name for name, _ in broker.calls]
    now = store.get(p.id)
    assert (now.safety_state, now.safety_order_id) == (SafetyState.FIRED, "G1")


@pytest.mark.parametrize("net", [10, 0], ids=["read-lags-the-fill", "read-shows-it"])
def test_a_twin_left_after_the_others_exit_sold_the_position_holds_no_stop_for_it(
    store: ProtectionStore, net: int
) -> None:
    """Two protections of 10 on a 10-share long: the older one's exit sold the 10 a moment ago. The
    younger, still OPEN, was "alone" again, and its stop was refreshed for its whole 10 on a flat position
    (a stop that fires there opens a short nobody asked for): on a read that still shows the 10 (positions
    lag the exit's fill) as on one that shows the position flat."""
    broker = PositionBroker(net=net)
    first = new_protection(store, safety_enabled=True)
    twin = new_protection(store, account_id=first.account_id, safety_enabled=True)
    store.transition(first.id, Status.TRIGGERED, reason="stop")
    store.transition(first.id, Status.EXITING, exit_order_id="X1", exit_quantity=10)
    store.transition(first.id, Status.CLOSED, reason="stop", exit_quantity=10, exit_price=97.0)
    manager(store, broker)._step(twin.id)
    assert placed(broker) == []
    assert store.get(twin.id).safety_order_id is None


def test_the_stops_own_exit_calls_back_off_on_temporary_errors(store: ProtectionStore) -> None:
    """Turning an SL-M into the exit, or deleting a GTT for it, waits longer after each temporary error
    (the exit path's backoff, services/retry.py), not a fixed 0.2 s every time."""
    for kind, call, product in (
        (SafetyKind.SL_M, "modify_order", Product.MIS),
        (SafetyKind.GTT, "delete_gtt", Product.CNC),
    ):
        broker = ScriptedBroker()
        broker.orders_by_id["S1"] = order("S1", OrderStatus.TRIGGER_PENDING)
        broker.fail[call] = [TemporaryError("HTTP 503")] * 3
        pauses: list[float] = []
        stops = SafetyStopManager(
            store, SafetyHooks(broker_for=lambda _a, b=broker: b), SafetyPolicy(), sleep=pauses.append
        )
        p = held(store, kind, "S1" if kind is SafetyKind.SL_M else "G1", product)
        exit_plan = stops.prepare_exit(p, broker, 10)
        if kind is SafetyKind.SL_M:
            assert exit_plan.order_id == "S1"  # modified to MARKET at the fourth try
        else:
            assert exit_plan.proceed  # deleted at the fourth try: TrailStop's own exit goes
        assert pauses == pytest.approx([0.2, 0.4, 0.8]), kind
