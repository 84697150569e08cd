"""The broker-held safety stop against the simulator, both brokers: it follows the trail with the threshold
and the rate limit, never makes a second exit, survives the app's death, and respects modification caps."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from tests.factories import quick_reconnects, sim_session
from tests.services.conftest import control
from tests.services.test_protection_flow import (
    HALF,
    RIG_POLICY,
    Rig,
    app_flat_confirm,
    book_recheck,
    enter,
    half_scale,
    protect_whole_again,
    wait_until,
)
from trailstop_gui.models.domain import Product, SafetyKind, SafetyState, Side, Status, TrailRule
from trailstop_gui.models.store import AccountRecord, ProtectionStore
from trailstop_gui.services.brokers.base import OrderRequest, OrderType
from trailstop_gui.services.exit_executor import RetryPolicy
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.safety_stop import SafetyConfig, SafetyPolicy
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.simulator.runner import SimulatorHandle

POLICY = SafetyPolicy(min_interval=0.0, retry_delay=0.1, max_retry_delay=0.5, exit_retry_delay=0.02)

# (broker, product): Kite MIS holds an SL-M, Kite CNC and Upstox a GTT.
CASES = [("kite", Product.MIS), ("kite", Product.CNC), ("upstox", Product.MIS), ("upstox", Product.CNC)]
IDS = ["kite-MIS-SLM", "kite-CNC-GTT", "upstox-MIS-GTT", "upstox-CNC-GTT"]


class SafetyRig(Rig):
    """A Rig whose new protections get a safety stop (buffer 1 % or 5 ticks), moved with ``POLICY``.

    ``account``: start again on an account of an earlier rig (the app restarted on the same database).
    """

    def __init__(
        self,
        sim: SimulatorHandle,
        store: ProtectionStore,
        broker: str,
        qtbot: QtBot,
        account: AccountRecord | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        if account is None:
            super().__init__(sim, store, broker, qtbot, policy=policy)
        else:
            self._start_on(sim, store, broker, qtbot, account)
        self.service.safety.policy = POLICY
        self.service.set_safety_defaults(SafetyConfig(enabled=True))

    def _start_on(
        self, sim: SimulatorHandle, store: ProtectionStore, broker: str, qtbot: QtBot, account: AccountRecord
    ) -> None:
        self.sim, self.store, self.broker, self.qtbot = sim, store, broker, qtbot
        self.secrets = SecretStore()
        self.session = sim_session(
            store, sim, broker, account=account, secrets=self.secrets, **quick_reconnects()
        )
        self.service = ProtectionService(
            store,
            retry_policy=RIG_POLICY,
            safety_policy=POLICY,
            book_recheck_seconds=book_recheck(RIG_POLICY),
        )
        self.alerts: list[Any] = []
        self.service.notifier.alerted.connect(self.alerts.append)
        self.service.add_session(self.session)
        self.service.start()

    def held(self, pid: int) -> list[dict[str, Any]]:
        """The broker-held stops of a protection that are live at the simulator (orders or GTTs)."""
        p = self.store.get(pid)
        if p.safety_kind is SafetyKind.SL_M or (self.broker == "kite" and p.product is Product.MIS):
            return [o for o in self.sim_orders(p.safety_tag) if o["status"] == "TRIGGER PENDING"]
        live = ("active", "scheduled")
        return [g for g in control(self.sim, "gtts") if g["broker"] == self.broker and g["status"] in live]

    def held_level(self, pid: int) -> float | None:
        held = self.held(pid)
        if not held:
            return None
        assert len(held) == 1, held
        return float(held[0].get("trigger_price") or held[0].get("trigger"))

    def wait_held_at_target(self, pid: int, timeout: float = 10.0, near: float | None = None) -> float:
        """The broker stop's level once it is held at its target; ``near``: a target the stop has moved
        to (the manager may not have taken up the stop's latest move yet, and the old target is met)."""

        def ok() -> bool:
            p = self.store.get(pid)
            return (
                p.safety_state is SafetyState.PLACED
                and p.safety_target is not None
                and p.safety_level == p.safety_target
                and self.held_level(pid) == p.safety_level
                and (near is None or abs(p.safety_target - near) <= 0.051)
            )

        wait_until(ok, timeout, f"protection {pid}'s safety stop at its target", self.qtbot)
        level = self.store.get(pid).safety_level
        assert level is not None
        return level

    def sells(self, symbol: str = "INFY") -> list[dict[str, Any]]:
        """The SELL orders of the instrument that are exits in effect (filled or working), whoever sent
        them: our exits and fired broker stops; not a stop still waiting, nor a cancelled or refused one."""
        idle = ("TRIGGER PENDING", "CANCELLED", "REJECTED")
        return [
            o
            for o in self.sim_orders()
            if o["broker"] == self.broker
            and o["tradingsymbol"] == symbol
            and o["transaction_type"] == "SELL"
            and o["status"] not in idle
        ]


def _rig(
    request: pytest.FixtureRequest,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    rig_policy: RetryPolicy | None,
) -> Iterator[tuple[SafetyRig, Product]]:
    broker, product = request.param
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    # conftest's rig_policy: a lagging-book test takes @app_flat_confirm or @half_scale.
    rig = SafetyRig(simulator, store, broker, qtbot, policy=rig_policy)
    yield rig, product
    rig.close()


@pytest.fixture(params=CASES, ids=IDS)
def case(
    request: pytest.FixtureRequest,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    rig_policy: RetryPolicy | None,
) -> Iterator[tuple[SafetyRig, Product]]:
    yield from _rig(request, simulator, store, qtbot, rig_policy)


# Intraday only: shorts (CNC cannot be sold short), and closing outside (the demo account holds INFY,
# so selling today's CNC buy would leave the holding, still protected).
@pytest.fixture(params=[c for c in CASES if c[1] is Product.MIS], ids=[i for i in IDS if "MIS" in i])
def mis_case(
    request: pytest.FixtureRequest,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    rig_policy: RetryPolicy | None,
) -> Iterator[tuple[SafetyRig, Product]]:
    yield from _rig(request, simulator, store, qtbot, rig_policy)


@pytest.fixture(params=[CASES[0]], ids=[IDS[0]])
def kite_mis_case(
    request: pytest.FixtureRequest,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    rig_policy: RetryPolicy | None,
) -> Iterator[tuple[SafetyRig, Product]]:
    yield from _rig(request, simulator, store, qtbot, rig_policy)


@pytest.fixture(params=[CASES[2]], ids=[IDS[2]])
def upstox_mis_case(
    request: pytest.FixtureRequest,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    rig_policy: RetryPolicy | None,
) -> Iterator[tuple[SafetyRig, Product]]:
    yield from _rig(request, simulator, store, qtbot, rig_policy)


def price(rig: Rig, ltp: float) -> None:
    rig.sim.set_price("NSE:INFY", ltp, bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2))


def trail_to(rig: SafetyRig, pid: int, ltp: float) -> float:
    """Move the price in the trader's favour, wait for the stop to trail, then for the broker stop."""
    before = rig.store.get(pid).stop
    price(rig, ltp)
    wait_until(lambda: rig.store.get(pid).stop != before, what="the stop to trail", qtbot=rig.qtbot)
    stop = rig.store.get(pid).stop
    assert stop is not None
    # 1 % below the stop, on the grid (as the first level); found under load in CI: right after the stop
    # trailed, the manager still held its previous target, which the old wait took for the new one.
    return rig.wait_held_at_target(pid, near=stop - max(stop * 0.01, 5 * 0.05))


def test_safety_follows_the_trail_past_the_threshold_and_not_faster_than_the_interval(
    case: tuple[SafetyRig, Product],
) -> None:
    rig, product = case
    rig.service.safety.policy = replace(POLICY, min_interval=0.5)
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    first = rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    slm = rig.broker == "kite" and product is Product.MIS
    assert p.stop is not None and p.safety_kind is (SafetyKind.SL_M if slm else SafetyKind.GTT)
    assert first == pytest.approx(p.stop - max(p.stop * 0.01, 5 * 0.05), abs=0.051)  # 1 %, on the grid
    # A move smaller than half the buffer leaves the broker stop alone.
    price(rig, 1503.0)
    wait_until(lambda: (rig.store.get(pid).stop or 0) > p.stop, what="the stop to trail", qtbot=rig.qtbot)
    assert rig.service.safety.wait_idle()
    assert rig.store.get(pid).safety_level == first and rig.store.get(pid).safety_modifications == 0
    # Past the threshold it follows; a second move right after waits for the interval.
    second = trail_to(rig, pid, 1530.0)
    assert second > first
    third = trail_to(rig, pid, 1560.0)
    assert third > second
    moves = [e for e in rig.store.events(protection_id=pid) if e.kind == "safety_moved"]
    assert len(moves) == 2 and rig.store.get(pid).safety_modifications == 2
    assert (moves[1].ts - moves[0].ts).total_seconds() >= 0.45
    assert [e.price for e in moves] == [second, third]


def test_own_exit_with_a_safety_stop_sends_exactly_one_exit(case: tuple[SafetyRig, Product]) -> None:
    rig, product = case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.stop is not None and p.safety_level is not None
    price(rig, p.stop - 1)  # through the trailed stop, not the safety level
    rig.wait_status(pid, Status.CLOSED)
    done = rig.store.get(pid)
    assert done.reason == "stop"
    sells = rig.sells()
    assert len(sells) == 1 and sells[0]["status"] == "COMPLETE" and sells[0]["quantity"] == 3, sells
    assert rig.held(pid) == []
    if done.safety_kind is SafetyKind.SL_M:
        # The SL-M became the exit: one order, modified to MARKET.
        assert sells[0]["tag"] == p.safety_tag and done.exit_order_id == p.safety_order_id
        assert done.safety_state is SafetyState.EXIT
    else:
        assert sells[0]["tag"] == p.exit_tag and done.safety_state is SafetyState.REMOVED
        gtt = next(g for g in control(rig.sim, "gtts") if g["id"] == p.safety_order_id)
        assert gtt["status"] in ("deleted", "cancelled")


def test_price_gap_through_both_stops_while_running_exits_once(case: tuple[SafetyRig, Product]) -> None:
    rig, product = case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    rig.wait_held_at_target(pid)
    control(rig.sim, "fault", {"fault": "price_gap", "symbol": "NSE:INFY", "percent": -6})
    wait_until(
        lambda: rig.status(pid) is Status.CLOSED and all(o["status"] == "COMPLETE" for o in rig.sells()),
        15,
        "the position to be closed",
        rig.qtbot,
    )
    assert len(rig.sells()) == 1, rig.sells()
    positions = rig.session.broker.positions()
    assert sum(x.quantity for x in positions if x.symbol == "INFY") == 0


def restart(rig: SafetyRig) -> SafetyRig:
    """The same database, account and simulator, a new service and session: the app started again."""
    return SafetyRig(rig.sim, rig.store, rig.broker, rig.qtbot, account=rig.session.account)


def test_app_gone_price_through_the_safety_level_broker_fills_it_and_restart_sends_nothing(
    case: tuple[SafetyRig, Product],
) -> None:
    rig, product = case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    level = rig.wait_held_at_target(pid)
    rig.close()  # the app is gone (SIGKILL: tests/e2e/test_safety_headless.py); the broker stop stays
    price(rig, level - 5)
    wait_until(lambda: any(o["status"] == "COMPLETE" for o in rig.sells()), 10, "the broker to fill it")
    again = restart(rig)
    try:
        again.wait_status(pid, Status.CLOSED)
        done = again.store.get(pid)
        assert done.reason == "safety stop" and done.safety_state is SafetyState.FIRED
        sells = again.sells()
        assert len(sells) == 1 and done.exit_order_id == sells[0]["order_id"], sells
        assert again.sim_orders(done.exit_tag) == []  # no exit of ours
        assert done.exit_price == pytest.approx(sells[0]["average_price"])
    finally:
        again.close()


def test_app_gone_price_between_stop_and_safety_restart_exits_once(case: tuple[SafetyRig, Product]) -> None:
    rig, product = case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    level = rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.stop is not None
    rig.close()
    price(rig, round((p.stop + level) / 2, 1))  # below the trailed stop, above the broker's
    assert rig.sells() == []
    again = restart(rig)
    try:
        again.wait_status(pid, Status.CLOSED)
        done = again.store.get(pid)
        assert done.reason == "stop"
        sells = again.sells()
        assert len(sells) == 1 and sells[0]["status"] == "COMPLETE", sells
        assert again.held(pid) == []  # cancelled, or turned into the exit
    finally:
        again.close()


def test_modification_cap_cancels_and_replaces_without_a_gap(case: tuple[SafetyRig, Product]) -> None:
    rig, product = case
    rig.service.safety.policy = replace(POLICY, max_modifications=4)  # re-placed after 4 - 2 moves
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    first_id = (rig.wait_held_at_target(pid), rig.store.get(pid).safety_order_id)[1]
    feed = rig.session.feed
    assert feed is not None
    for ltp in (1530.0, 1560.0, 1590.0):
        trail_to(rig, pid, ltp)
        assert feed.engine.is_armed(str(pid))  # TrailStop's own stop covers the re-place's round trip
    p = rig.store.get(pid)
    # Re-placed once the count reached the cap less the reserve (two): never more moves than that.
    assert p.safety_order_id != first_id and p.safety_modifications <= 2
    kinds = [e.kind for e in rig.store.events(protection_id=pid) if e.kind.startswith("safety_")]
    assert (
        kinds.index("safety_replacing") > kinds.index("safety_moved") and kinds.count("safety_replacing") == 1
    )
    replaced, placed = (
        next(e for e in rig.store.events(protection_id=pid) if e.kind == k)
        for k in ("safety_replacing", "safety_placed")
    )
    last_placed = [e for e in rig.store.events(protection_id=pid) if e.kind == "safety_placed"][-1]
    assert last_placed.id > replaced.id and (last_placed.ts - replaced.ts).total_seconds() < 1.0
    assert placed.id < replaced.id
    assert len(rig.held(pid)) == 1  # the old one is gone, the new one holds the level
    # And the exit still makes exactly one.
    stop = rig.store.get(pid).stop
    assert stop is not None
    price(rig, stop - 1)
    rig.wait_status(pid, Status.CLOSED)
    assert len(rig.sells()) == 1


def test_kite_refusing_a_modification_at_its_cap_is_met_by_a_replace(
    simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot
) -> None:
    """The broker's own cap (25 per order), hit with our count not knowing it: refused, then re-placed."""
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig = SafetyRig(simulator, store, "kite", qtbot)
    try:
        pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
        rig.wait_held_at_target(pid)
        old = rig.store.get(pid).safety_order_id
        assert old is not None
        simulator.call(lambda: setattr(simulator.exchange.order("kite", "DM1234", old), "modify_count", 25))
        trail_to(rig, pid, 1540.0)
        assert rig.store.get(pid).safety_order_id != old
        statuses = {o["order_id"]: o["status"] for o in rig.sim_orders(rig.store.get(pid).safety_tag)}
        assert statuses[old] == "CANCELLED" and list(statuses.values()).count("TRIGGER PENDING") == 1
    finally:
        rig.close()


def test_missing_safety_stop_is_recreated(case: tuple[SafetyRig, Product]) -> None:
    rig, product = case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.safety_order_id is not None
    # Someone cancels it on the broker's own site.
    if p.safety_kind is SafetyKind.SL_M:
        rig.session.broker.cancel_order(p.safety_order_id)
    else:
        rig.session.broker.delete_gtt(p.safety_order_id)
    rig.service.reconcile(rig.account_id)
    wait_until(
        lambda: rig.store.get(pid).safety_order_id not in (None, p.safety_order_id),
        10,
        "a new safety stop",
        rig.qtbot,
    )
    rig.wait_held_at_target(pid)
    assert any(e.kind == "safety_missing" for e in rig.store.events(protection_id=pid))


def test_position_closed_outside_takes_the_safety_stop_away(mis_case: tuple[SafetyRig, Product]) -> None:
    rig, product = mis_case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    rig.session.broker.place_order(
        OrderRequest(
            symbol=p.symbol,
            exchange="NSE",
            instrument=p.engine_instrument,
            side=Side.SELL,
            quantity=3,
            product=product,
            order_type=OrderType.MARKET,
        )
    )
    rig.service.reconcile(rig.account_id)
    rig.wait_status(pid, Status.CLOSED)
    assert rig.store.get(pid).reason == "external"
    wait_until(lambda: rig.held(pid) == [], 10, "the safety stop to go", rig.qtbot)
    wait_until(lambda: rig.store.get(pid).safety_state is SafetyState.REMOVED, 10, "state removed", rig.qtbot)


def test_switching_the_safety_stop_off_and_on(case: tuple[SafetyRig, Product]) -> None:
    rig, product = case
    rig.service.set_safety_defaults(SafetyConfig(enabled=False))
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    assert rig.store.get(pid).safety_state is SafetyState.OFF
    assert rig.service.safety.wait_idle() and rig.held(pid) == []
    rig.service.set_safety(pid, True, buffer_percent=2.0)
    level = rig.wait_held_at_target(pid)
    stop = rig.store.get(pid).stop
    assert stop is not None and level == pytest.approx(stop * 0.98, abs=0.051)
    rig.service.set_safety(pid, False)
    wait_until(lambda: rig.held(pid) == [], 10, "the safety stop to go", rig.qtbot)
    wait_until(lambda: rig.store.get(pid).safety_state is SafetyState.OFF, 10, "state off", rig.qtbot)


def test_short_position_safety_sits_above_the_stop(mis_case: tuple[SafetyRig, Product]) -> None:
    rig, product = mis_case
    pid = enter(rig, Side.SELL, product, TrailRule.percent(2.0))
    level = rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.stop is not None and level > p.stop
    price(rig, p.stop + 1)
    rig.wait_status(pid, Status.CLOSED)
    buys = [o for o in rig.sim_orders() if o["broker"] == rig.broker and o["transaction_type"] == "BUY"]
    assert len(buys) == 1 and len(rig.sells()) == 1  # the entry, and exactly one exit


@half_scale
def test_a_gap_through_both_stops_with_a_lagging_book_exits_once(case: tuple[SafetyRig, Product]) -> None:
    """Found by the chaos run with book_lag. Kite GTT: fired by the gap and deleted (Kite then forgets it)
    before the lagging book listed its order, so TrailStop sent its own exit as well (two sells). SL-M: the
    refusal to modify a filled SL-M was read back from a book that still said TRIGGER PENDING (EXIT_FAILED).
    Upstox GTT: the order the GTT named was not in the book yet (the exit job crashed)."""
    rig, product = case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    rig.wait_held_at_target(pid)
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": 1.5 * HALF})
    wait_until(
        lambda: any(x.quantity == 3 for x in rig.session.broker.positions() if x.symbol == "INFY"),
        what="the entry in the lagging positions",
    )
    control(rig.sim, "fault", {"fault": "price_gap", "symbol": "NSE:INFY", "percent": -6})
    wait_until(
        lambda: rig.status(pid) is Status.CLOSED and all(o["status"] == "COMPLETE" for o in rig.sells()),
        15,
        "the position to be closed",
        rig.qtbot,
    )
    assert len(rig.sells()) == 1, rig.sells()
    control(rig.sim, "fault", {"fault": "clear", "kind": "book_lag"})
    positions = rig.session.broker.positions()
    assert sum(x.quantity for x in positions if x.symbol == "INFY" and x.product is product) == 0


@pytest.fixture(params=[CASES[1]], ids=[IDS[1]])
def kite_gtt_case(
    request: pytest.FixtureRequest,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    rig_policy: RetryPolicy | None,
) -> Iterator[tuple[SafetyRig, Product]]:
    yield from _rig(request, simulator, store, qtbot, rig_policy)


@half_scale
def test_a_gtt_fired_by_a_gap_the_feed_has_not_shown_is_the_exit(
    kite_gtt_case: tuple[SafetyRig, Product],
) -> None:
    """Found by the chaos run with safety stops: the stop crossed; while the GTT's delete was on its way the
    price gapped through the GTT, which fired. Kite then forgot the deleted GTT, the lagging book did not
    list its order yet, and the feed had not delivered the gap: judged by the feed's last price the GTT
    could not have fired, so a second exit went out (two sells, 75 each, the long became a short).
    Whether the GTT may have fired is now judged on a fresh quote from the broker as well."""
    rig, product = kite_gtt_case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    level = rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.stop is not None and level < p.stop
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": 1.5 * HALF})
    control(
        rig.sim,
        "fault",
        {
            "fault": "slow",
            "seconds": 0.6 * HALF,
            "path": "/gtt/triggers",
            "method": "DELETE",
            "phase": "before",
        },
    )
    price(rig, round((p.stop + level) / 2, 1))  # through the stop, above the GTT: the exit starts
    rig.wait_status(pid, Status.TRIGGERED, 5.0)
    # The feed does not show what follows.
    control(rig.sim, "fault", {"fault": "stall_ws", "seconds": 3 * HALF})
    price(rig, round(level * 0.97, 1))  # the gap: the GTT fires while its delete is on its way
    wait_until(
        lambda: rig.status(pid) is Status.CLOSED and all(o["status"] == "COMPLETE" for o in rig.sells()),
        15,
        "the position to be closed",
        rig.qtbot,
    )
    assert len(rig.sells()) == 1, rig.sells()
    control(rig.sim, "fault", {"fault": "clear"})
    positions = rig.session.broker.positions()
    assert sum(x.quantity for x in positions if x.symbol == "INFY" and x.product is product) == 0


def test_a_gtt_that_fired_unseen_is_the_exit_not_something_to_delete(
    kite_gtt_case: tuple[SafetyRig, Product],
) -> None:
    """Found by make chaos-safety: a Kite GTT fired while nobody watched (the app was down; here the feed
    is stalled) and the app then took it away (the twin's share, or the trader switching it off). Kite lets
    a triggered GTT be deleted and forgets it; the sale it made was recorded as "closed outside". A GTT is
    read before it is taken away: one that fired is the exit (reason "safety stop")."""
    rig, product = kite_gtt_case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    level = rig.wait_held_at_target(pid)
    control(rig.sim, "fault", {"fault": "stall_ws", "seconds": 4})
    # Through the stop and the GTT (above its LIMIT price, so that it fills), unseen by the feed.
    price(rig, round(level * 0.99, 1))
    wait_until(
        lambda: [o["status"] for o in rig.sells()] == ["COMPLETE"], 5, "the GTT to fire and fill", rig.qtbot
    )
    assert rig.status(pid) is Status.OPEN  # nobody saw it
    rig.service.set_safety(pid, False)
    wait_until(lambda: rig.status(pid) is Status.CLOSED, 15, "the protection to close", rig.qtbot)
    closed = rig.store.get(pid)
    assert closed.reason == "safety stop" and closed.exit_order_id == rig.sells()[0]["order_id"]
    assert len(rig.sells()) == 1


def test_an_unreadable_order_history_does_not_hold_the_sl_m_exit(
    kite_mis_case: tuple[SafetyRig, Product],
) -> None:
    """Found by make chaos-safety: with the broker's order replies unreadable for a while (a malformed
    fault), the exit waited on reading its own SL-M before turning it into the exit, retrying for
    seconds; the position stayed open past the 10 s budget. The SL-M is now modified to MARKET at once
    (the broker answers the modify whatever its reads say); the order is read after a refusal only."""
    rig, product = kite_mis_case
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.stop is not None and p.safety_kind is SafetyKind.SL_M
    spoilt = {
        "fault": "malformed",
        "path": "/orders/",
        "method": "GET",
        "mode": "missing_field",
        "count": 1000,
    }
    control(rig.sim, "fault", spoilt)
    price(rig, p.stop - 1)
    # Flat at the broker while the replies are still spoilt (it used to wait on them for seconds).
    wait_until(lambda: [o["status"] for o in rig.sells()] == ["COMPLETE"], 8, "the exit to fill", rig.qtbot)
    assert [o["order_id"] for o in rig.sells()] == [p.safety_order_id]
    control(rig.sim, "fault", {"fault": "clear"})
    rig.wait_status(pid, Status.CLOSED)  # and the app knows it once the book can be read
    closed = rig.store.get(pid)
    assert closed.exit_order_id == p.safety_order_id  # the SL-M became the exit
    assert len(rig.sells()) == 1, rig.sells()


@app_flat_confirm
def test_an_sl_m_placed_on_a_lagging_book_is_read_back_without_failing(
    kite_mis_case: tuple[SafetyRig, Product], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the chaos run with book_lag: the SL-M just placed was read back from a book that did not
    list it yet ("Couldn't find that order_id"): the safety step failed with a traceback each time. It is
    our own order id, so it is read again later; the stop is recorded once, and exactly one is held."""
    rig, product = kite_mis_case
    rig.service.set_safety_defaults(SafetyConfig(enabled=False))
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0))
    assert rig.service.safety.wait_idle() and rig.held(pid) == []
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": 1.5})
    caplog.set_level(logging.INFO, logger="trailstop.safety")
    rig.service.set_safety(pid, True, buffer_percent=2.0)
    wait_until(lambda: len(rig.held(pid)) == 1, 10, "the SL-M at the broker", rig.qtbot)
    wait_until(
        lambda: any("not in the order book yet" in r.getMessage() for r in caplog.records),
        10,
        "the lagging read-back",
        rig.qtbot,
    )
    control(rig.sim, "fault", {"fault": "clear", "kind": "book_lag"})
    rig.wait_held_at_target(pid)
    assert not [r for r in caplog.records if "step failed" in r.getMessage()]
    assert rig.store.get(pid).safety_state is SafetyState.PLACED and len(rig.held(pid)) == 1


def test_a_twin_protection_waiting_for_the_first_exit_ends_with_its_gtt_gone(
    upstox_mis_case: tuple[SafetyRig, Product],
) -> None:
    """Found by the chaos run with a position protected twice: both stops fired on one tick, the first
    exit took the whole short, the second waited ("exits on their way take the position") and stayed
    TRIGGERED until the next reconcile, up to 30 s, its GTT still live on a flat position (a GTT that
    fires then opens a position nobody asked for). It goes on as soon as the first exit has filled."""
    rig, product = upstox_mis_case
    first = enter(rig, Side.SELL, product, TrailRule.percent(2.0))
    rig.wait_held_at_target(first)
    position = next(x for x in rig.session.broker.positions() if x.symbol == "INFY" and x.product is product)
    assert position.quantity == -3
    second = protect_whole_again(rig, position, TrailRule.percent(2.0))
    wait_until(lambda: rig.store.get(second).stop is not None, 10, "the twin's stop", rig.qtbot)
    assert rig.service.safety.wait_idle()
    # The first one's GTT holds the whole short: the twin holds none (two would buy back 6 of a 3 short).
    live = ("active", "scheduled")
    assert rig.store.get(second).safety_order_id is None
    held = [g for g in control(rig.sim, "gtts") if g["broker"] == rig.broker and g["status"] in live]
    assert len(held) == 1, held
    stops = [rig.store.get(pid).stop for pid in (first, second)]
    assert all(stop is not None for stop in stops)
    # The first exit is still filling when the second one looks at the position: the second waits.
    control(rig.sim, "fault", {"fault": "fill_delay", "seconds": 2.0})
    price(rig, max(s for s in stops if s is not None) + 1)
    wait_until(
        lambda: any(e.kind == "exit_placed" for e in rig.store.events(protection_id=first)),
        10,
        "the first exit",
        rig.qtbot,
    )
    control(rig.sim, "fault", {"fault": "clear", "kind": "fill_delay"})
    for pid in (first, second):
        rig.wait_status(pid, Status.CLOSED, timeout=12.0)
    assert [g for g in control(rig.sim, "gtts") if g["broker"] == rig.broker and g["status"] in live] == []
    buys = [
        o
        for o in rig.sim_orders()
        if o["broker"] == rig.broker
        and o["transaction_type"] == "BUY"
        and o["status"] not in ("CANCELLED", "REJECTED")
    ]
    assert len(buys) == 1 and buys[0]["quantity"] == 3, buys  # one exit for the whole short


@half_scale
def test_a_position_read_flat_after_its_gtt_fired_unseen_is_closed_by_that_gtt(
    kite_gtt_case: tuple[SafetyRig, Product],
) -> None:
    """The position reads flat when the stop crosses (here the read lags even the day's buy; the order
    stream may also have shown the sale), and the GTT, gapped through unseen by the feed, fired: TrailStop
    deletes it for its own exit, Kite forgets it, the lagging book does not list its order yet, and the
    prices say it could not have fired: the GTT's sale used to be recorded as "closed outside". A flat
    position now waits for the GTT's order over the look-up window: it is the exit ("safety stop")."""
    rig, product = kite_gtt_case
    symbol = "NSE:RELIANCE"  # not among the demo account's holdings: the GTT sells the whole day's buy

    def quote(ltp: float) -> None:
        rig.sim.set_price(symbol, ltp, bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2))

    quote(1300.0)
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0), symbol=symbol)
    level = rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.stop is not None and level < p.stop and p.safety_kind is SafetyKind.GTT
    control(rig.sim, "fault", {"fault": "stall_ws"})
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": 3.0 * HALF})
    quote(round(level * 0.99, 1))  # the gap: the GTT fires and fills (above its LIMIT price)
    quote(round((p.stop + level) / 2, 1))  # back between the GTT and the stop
    control(rig.sim, "fault", {"fault": "clear", "kind": "stall_ws"})
    quote(round((p.stop + level) / 2 - 0.1, 1))  # the feed shows only this: the stop crossed
    wait_until(lambda: rig.status(pid) is Status.CLOSED, 20, "the protection to close", rig.qtbot)
    control(rig.sim, "fault", {"fault": "clear"})
    sells = [
        o for o in rig.sim_orders() if o["tradingsymbol"] == "RELIANCE" and o["transaction_type"] == "SELL"
    ]
    filled = [o for o in sells if o["status"] == "COMPLETE"]
    assert len(filled) == 1 and not filled[0].get("tag"), sells  # the GTT's order, and nothing else sold
    closed = rig.store.get(pid)
    assert (closed.reason, closed.exit_order_id) == ("safety stop", filled[0]["order_id"]), closed
    assert closed.exit_quantity == 3 and closed.exit_price == pytest.approx(filled[0]["average_price"])


@half_scale
def test_a_delivery_exit_refused_because_its_gtt_sold_first_is_closed_by_that_gtt(
    kite_gtt_case: tuple[SafetyRig, Product],
) -> None:
    """Found by make chaos-safety (c80044e, protection 44, Kite CNC with a GTT), reproduced step by step:
    the price gaps through the GTT and comes back, unseen by the feed (stalled); the GTT fires and fills.
    The stop crosses: TrailStop deletes the GTT (Kite forgets it; the lagging book does not list its order;
    the prices say it could not have fired) and sends its own exit, sized on a positions read that trails
    the GTT's fill. The broker refuses it ("Insufficient holdings ...: available 0"); the refusal's fresh
    read finds no shares left, and the protection used to be recorded "closed outside" though its own GTT
    had sold them. Now the GTT's order is the exit: its price and quantity, reason "safety stop"."""
    rig, product = kite_gtt_case
    symbol = "NSE:RELIANCE"  # not among the demo account's holdings: the GTT sells the whole day's buy
    lag = 1.5 * HALF

    def quote(ltp: float) -> None:
        rig.sim.set_price(symbol, ltp, bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2))

    quote(1300.0)
    pid = enter(rig, Side.BUY, product, TrailRule.percent(2.0), symbol=symbol)
    level = rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.stop is not None and level < p.stop and p.safety_kind is SafetyKind.GTT
    # The day's buy older than the lag: the lagging read shows it, only the GTT's fill is missing.
    entry = p.entry_order_id
    assert entry is not None
    placed = next(o["received_at"] for o in rig.sim_orders() if o["order_id"] == entry)
    wait_until(lambda: time.time() > placed + lag + 0.3 * HALF, 5, "the entry to age past the lag", rig.qtbot)
    control(rig.sim, "fault", {"fault": "stall_ws"})
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": lag})
    quote(round(level * 0.99, 1))  # the gap: the GTT fires and fills (above its LIMIT price)
    quote(round((p.stop + level) / 2, 1))  # back between the GTT and the stop
    control(rig.sim, "fault", {"fault": "clear", "kind": "stall_ws"})
    quote(round((p.stop + level) / 2 - 0.1, 1))  # the feed shows only this: the stop crossed
    wait_until(lambda: rig.status(pid) is Status.CLOSED, 20, "the protection to close", rig.qtbot)
    control(rig.sim, "fault", {"fault": "clear"})
    sells = [
        o for o in rig.sim_orders() if o["tradingsymbol"] == "RELIANCE" and o["transaction_type"] == "SELL"
    ]
    filled = [o for o in sells if o["status"] == "COMPLETE"]
    assert len(filled) == 1 and not filled[0].get("tag"), sells  # the GTT's order, and nothing else sold
    ours = rig.sim_orders(p.exit_tag)
    assert [(o["status"], o["status_message"]) for o in ours] in (
        [("REJECTED", "Insufficient holdings for RELIANCE: available 0.")],
        [],  # a slow machine: the book listed the GTT's order before the exit was sent
    ), ours
    closed = rig.store.get(pid)
    assert (closed.reason, closed.exit_order_id) == ("safety stop", filled[0]["order_id"]), closed
    assert closed.exit_quantity == 3 and closed.exit_price == pytest.approx(filled[0]["average_price"])
