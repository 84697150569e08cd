"""Safety stop order types per segment: no SL-M where the exchange has none (options, BSE), a fall back to
an SL order when the broker refuses an SL-M for its type, and no blind retries of a refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from tests.services.conftest import control
from tests.services.test_protection_flow import enter, wait_until
from tests.services.test_safety_stop import SafetyRig
from trailstop_gui.models.domain import Product, SafetyKind, SafetyState, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.notifier import AlertKind
from trailstop_gui.services.protection_service import EntryRequest
from trailstop_gui.services.safety_stop import SafetyConfig
from trailstop_gui.simulator.runner import SimulatorHandle

FUNCTION_NOT_AVAILABLE = "16052: Function not available"


@pytest.fixture
def rig(simulator: SimulatorHandle, store: ProtectionStore, qtbot: QtBot) -> Iterator[SafetyRig]:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    r = SafetyRig(simulator, store, "kite", qtbot)
    yield r
    r.close()


def an_option(rig: SafetyRig) -> dict[str, Any]:
    option = next(
        i
        for i in control(rig.sim, "instruments")
        if i["symbol"].startswith("NFO:") and i["symbol"].endswith("CE")
    )
    rig.sim.set_price(option["symbol"], 200.0, bid=199.95, ask=200.05)
    return option  # type: ignore[no-any-return]


def enter_option(rig: SafetyRig, option: dict[str, Any]) -> int:
    p = rig.service.place_entry(
        EntryRequest(
            account_id=rig.account_id,
            instrument=option["kite_token"],
            symbol=option["tradingsymbol"],
            exchange="NFO",
            side=Side.BUY,
            quantity=option["lot_size"],
            product=Product.MIS,
            tick_size=option["tick_size"],
            rule=TrailRule.percent(2.0),
        )
    )
    rig.wait_status(p.id, Status.OPEN)
    return p.id


def safety_orders(rig: SafetyRig, pid: int) -> list[dict[str, Any]]:
    return rig.sim_orders(rig.store.get(pid).safety_tag)


def test_an_option_gets_an_sl_order_never_an_sl_m(rig: SafetyRig) -> None:
    option = an_option(rig)
    pid = enter_option(rig, option)
    level = rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.safety_kind is SafetyKind.SL
    [held] = safety_orders(rig, pid)
    assert held["order_type"] == "SL" and held["status"] == "TRIGGER PENDING"
    # The limit sits 2 % through the trigger, on the grid: inside the band, so it fills like a market order.
    assert held["price"] == pytest.approx(level * 0.98, abs=0.051) and held["price"] == p.safety_price
    assert not [o for o in rig.sim_orders() if o["order_type"] == "SL-M"]

    # TrailStop's own exit turns the SL into the exit: one order, no second SELL.
    assert p.stop is not None
    rig.sim.set_price(option["symbol"], p.stop - 0.5, bid=p.stop - 0.55, ask=p.stop - 0.45)
    rig.wait_status(pid, Status.CLOSED)
    sells = [
        o
        for o in rig.sim_orders()
        if o["tradingsymbol"] == option["tradingsymbol"]
        and o["transaction_type"] == "SELL"
        and o["status"] not in ("CANCELLED", "REJECTED", "TRIGGER PENDING")
    ]
    assert len(sells) == 1 and sells[0]["status"] == "COMPLETE", sells


def test_an_sl_m_refused_for_its_type_falls_back_to_an_sl_at_once(rig: SafetyRig) -> None:
    rig.service.set_safety_defaults(SafetyConfig(enabled=False))
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    control(rig.sim, "fault", {"fault": "reject_orders", "count": 1, "reason": FUNCTION_NOT_AVAILABLE})
    rig.service.set_safety(pid, True)
    rig.wait_held_at_target(pid)
    p = rig.store.get(pid)
    assert p.safety_kind is SafetyKind.SL
    orders = safety_orders(rig, pid)
    assert [(o["order_type"], o["status"]) for o in orders] == [
        ("SL-M", "REJECTED"),
        ("SL", "TRIGGER PENDING"),
    ]
    assert any(e.kind == "safety_fallback" for e in rig.store.events(protection_id=pid))


def test_refusals_are_not_retried_forever(rig: SafetyRig) -> None:
    rig.service.set_safety_defaults(SafetyConfig(enabled=False))
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    control(rig.sim, "fault", {"fault": "reject_orders", "count": 50})  # the margin refusal, again and again
    rig.service.set_safety(pid, True)
    wait_until(lambda: any(a.kind is AlertKind.SAFETY_FAILED for a in rig.alerts), 10, "the alert", rig.qtbot)
    assert rig.service.safety.wait_idle()
    p = rig.store.get(pid)
    assert p.safety_state is SafetyState.OFF and not p.safety_enabled and p.status is Status.OPEN
    refused = safety_orders(rig, pid)
    assert len(refused) == rig.service.safety.policy.max_refusals
    assert all(o["status"] == "REJECTED" for o in refused)
    control(rig.sim, "fault", {"fault": "clear"})


def test_an_sl_refused_for_its_type_is_given_up_at_once(rig: SafetyRig) -> None:
    rig.service.set_safety_defaults(SafetyConfig(enabled=False))
    option = an_option(rig)
    pid = enter_option(rig, option)
    control(rig.sim, "fault", {"fault": "reject_orders", "count": 5, "reason": FUNCTION_NOT_AVAILABLE})
    rig.service.set_safety(pid, True)
    wait_until(lambda: any(a.kind is AlertKind.SAFETY_FAILED for a in rig.alerts), 10, "the alert", rig.qtbot)
    assert rig.service.safety.wait_idle()
    assert [o["order_type"] for o in safety_orders(rig, pid)] == ["SL"]
    assert rig.store.get(pid).safety_state is SafetyState.OFF
    control(rig.sim, "fault", {"fault": "clear"})
