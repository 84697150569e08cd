"""Timed square-off against the simulator: one exit at the time, through the stop's own exit path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time

import pytest

from tests.services.conftest import control
from tests.services.test_protection_flow import Rig, enter
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.square_off import IST
from trailstop_gui.services.square_off import SquareOffService

MONDAY = date(2026, 12, 7)
TUESDAY = date(2026, 12, 8)
SATURDAY = date(2026, 12, 12)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.combine(MONDAY, time(10, 0), IST)

    def set(self, day: date, hh: int, mm: int) -> None:
        self.now = datetime.combine(day, time(hh, mm), IST)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def square_off(rig: Rig, clock: Clock) -> Iterator[SquareOffService]:
    service = SquareOffService(rig.service, clock=clock)
    yield service
    service.shutdown()


def exits(rig: Rig, pid: int) -> list[dict[str, object]]:
    return rig.sim_orders(rig.store.get(pid).exit_tag)


def test_exits_once_at_its_time_through_the_stops_path(
    rig: Rig, clock: Clock, square_off: SquareOffService
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.SELL, Product.MIS, TrailRule.percent(2.0))
    square_off.set_exit_time(pid, "15:15")
    clock.set(MONDAY, 15, 14)
    assert square_off.check_now() == []
    assert exits(rig, pid) == []
    clock.set(MONDAY, 15, 15)
    assert square_off.check_now() == [pid]
    rig.wait_status(pid, Status.CLOSED)
    assert square_off.check_now() == []  # closed: never a second exit
    orders = exits(rig, pid)
    assert len(orders) == 1
    assert orders[0]["transaction_type"] == "BUY" and orders[0]["quantity"] == 3  # a short bought back
    triggered = [e for e in rig.store.events(protection_id=pid, kinds=["transition"]) if e.new == "TRIGGERED"]
    assert len(triggered) == 1 and "square-off 15:15" in triggered[0].message
    assert [e.new for e in rig.store.events(protection_id=pid, kinds=["square_off_time"])] == ["15:15"]


def test_a_protection_already_exiting_gets_nothing_more(
    rig: Rig, clock: Clock, square_off: SquareOffService
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    square_off.set_exit_time(pid, "15:15")
    rig.service.exit_now(pid)  # the trader (or a fired stop) got there first
    clock.set(MONDAY, 15, 16)
    assert square_off.check_now() == []
    rig.wait_status(pid, Status.CLOSED)
    assert len(exits(rig, pid)) == 1


def test_the_mis_setting_squares_off_mis_only(rig: Rig, clock: Clock, square_off: SquareOffService) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    mis = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    cnc = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    clock.set(MONDAY, 15, 20)
    assert square_off.check_now() == []  # off by default
    square_off.set_mis_default("15:15")
    assert square_off.check_now() == [mis]
    rig.wait_status(mis, Status.CLOSED)
    assert rig.status(cnc) is Status.OPEN and exits(rig, cnc) == []


def test_weekends_and_after_the_close_send_nothing(
    rig: Rig, clock: Clock, square_off: SquareOffService
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    square_off.set_exit_time(pid, "15:15")
    clock.set(SATURDAY, 15, 20)
    assert square_off.check_now() == []
    clock.set(MONDAY, 15, 31)
    assert square_off.check_now() == []
    assert rig.status(pid) is Status.OPEN and exits(rig, pid) == []


@pytest.mark.parametrize("rig", ["upstox"], indirect=True)
def test_upstox_publishes_holidays_and_half_days(
    rig: Rig, clock: Clock, square_off: SquareOffService
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    square_off.set_exit_time(pid, "15:15")
    control(rig.sim, "calendar", {"date": MONDAY.isoformat(), "closed": True})
    control(rig.sim, "calendar", {"date": TUESDAY.isoformat(), "open": "09:15", "close": "13:00"})
    clock.set(MONDAY, 15, 20)
    assert square_off.check_now() == []  # a holiday, as Upstox publishes it
    clock.set(TUESDAY, 12, 44)
    assert square_off.check_now() == []
    clock.set(TUESDAY, 12, 45)  # a half day ending at 13:00: 15 minutes before its end
    assert square_off.check_now() == [pid]
    rig.wait_status(pid, Status.CLOSED)
    assert len(exits(rig, pid)) == 1


def test_exit_times_only_for_live_protections(rig: Rig, square_off: SquareOffService) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    rig.service.exit_now(pid)
    rig.wait_status(pid, Status.CLOSED)
    with pytest.raises(ValueError, match="exit time"):
        square_off.set_exit_time(pid, "15:15")
