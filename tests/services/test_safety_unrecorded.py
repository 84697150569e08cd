"""A broker-held stop placed just before the app died, never recorded, that fired while the app was away.

Found by ``make chaos-safety`` (seed 30300): an Upstox GTT placed just before a SIGKILL was found fired after
the restart, but its id was never stored, so the protection closed as "external" and the checker saw a GTT
(and an order) of unknown origin. With the positions read lagging the fill, the app could send its own exit
beside the GTT's: a second sell of a position already sold.
"""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from tests.services.conftest import control
from tests.services.test_protection_flow import enter, wait_until
from tests.services.test_safety_stop import SafetyRig, price, restart
from trailstop_gui.models.domain import Product, SafetyKind, SafetyState, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import GttRequest
from trailstop_gui.simulator.runner import SimulatorHandle

LAG = 3.0  # the positions (and the book) answer as they were this long ago


def test_a_gtt_placed_then_killed_before_its_reply_was_stored_fires_and_the_restart_sends_nothing(
    simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig = SafetyRig(simulator, store, "upstox", qtbot)
    broker = rig.session.broker
    real_place = broker.place_gtt
    placed: list[str] = []

    def place_then_die(request: GttRequest) -> str:
        # The broker takes the GTT; the app dies before the reply is stored (SIGKILL). What a dead app
        # would never do again (store the reply, place another) this one is kept from doing.
        if not placed:
            placed.append(real_place(request))
        raise RuntimeError("killed before the reply was stored")

    broker.place_gtt = place_then_die  # type: ignore[method-assign]
    live = ("active", "scheduled")
    try:
        pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
        wait_until(lambda: bool(placed), 10, "the GTT at the broker", qtbot)
    finally:
        rig.close()  # the GTT is at the broker, the database knows only "placing"
    p = store.get(pid)
    assert (p.safety_state, p.safety_order_id, p.safety_kind) == (SafetyState.PLACING, None, SafetyKind.GTT)
    assert p.stop is not None
    (gtt,) = [g for g in control(simulator, "gtts") if g["broker"] == "upstox" and g["status"] in live]
    level = float(gtt.get("trigger_price") or gtt.get("trigger"))

    control(simulator, "fault", {"fault": "book_lag", "seconds": LAG})
    wait_until(
        lambda: any(x.quantity == 3 for x in broker.positions() if x.symbol == "INFY"),
        LAG + 5,
        "the entry in the lagging positions",
    )
    price(rig, level - 5)  # through the trailed stop and the GTT: the GTT fires and fills
    wait_until(lambda: any(o["status"] == "COMPLETE" for o in rig.sells()), 10, "the GTT's order to fill")
    again = restart(rig)
    try:
        positions = again.session.broker.positions()
        held = [x for x in positions if x.symbol == "INFY" and x.product is Product.MIS]
        assert sum(x.quantity for x in held) == 3  # the positions read still shows the shares
        again.wait_status(pid, Status.CLOSED, timeout=LAG + 15)
        control(simulator, "fault", {"fault": "clear", "kind": "book_lag"})
        done = store.get(pid)
        sells = again.sells()
        assert len(sells) == 1, sells  # the GTT's order, and nothing of ours
        assert again.sim_orders(done.exit_tag) == []
        assert done.reason == "safety stop"
        assert done.safety_order_id == gtt["id"] and done.safety_kind is SafetyKind.GTT
        assert done.exit_order_id == sells[0]["order_id"]
        assert done.exit_price == pytest.approx(sells[0]["average_price"])
        assert done.exit_quantity == 3
        assert any(e.kind == "safety_adopted" and gtt["id"] in e.new for e in store.events(protection_id=pid))
        positions = again.session.broker.positions()
        assert sum(x.quantity for x in positions if x.symbol == "INFY" and x.product is Product.MIS) == 0
    finally:
        control(simulator, "fault", {"fault": "clear"})
        again.close()
