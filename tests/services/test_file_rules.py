"""FileRules' timed exits against the simulator, with the square-off service's injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time

import pytest

from tests.services.test_protection_flow import Rig, enter
from tests.services.test_square_off import MONDAY, Clock
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.basket_file import RulesFile, TimedExitSpec
from trailstop_gui.services.file_rules import FileRules
from trailstop_gui.services.square_off import SquareOffService


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def square_off(rig: Rig, clock: Clock) -> Iterator[SquareOffService]:
    service = SquareOffService(rig.service, clock=clock)
    yield service
    service.shutdown()


def test_the_files_time_holds_before_its_pass_stores_it_and_the_traders_change_after(
    rig: Rig, clock: Clock, square_off: SquareOffService
) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    square_off.set_mis_default("15:00")
    rules = RulesFile(timed_exits=[TimedExitSpec(rig.broker, "NSE", "INFY", time(15, 25))])
    file_rules = FileRules(rig.service, rules, square_off=square_off, underlying=None)
    clock.set(MONDAY, 15, 10)
    # A position opened (or adopted) at 15:10: the MIS setting's 15:00 has passed, the file says 15:25.
    # The square-off check can run before the file's next pass stores 15:25: it must not exit at 15:00.
    first = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    assert square_off.check_now() == []
    assert rig.sim_orders(rig.store.get(first).exit_tag) == []
    assert file_rules.apply_now() == [("exit", first)]
    assert square_off.check_now() == []
    clock.set(MONDAY, 15, 25)
    assert square_off.check_now() == [first]
    rig.wait_status(first, Status.CLOSED)
    assert rig.store.get(first).reason == "square-off 15:25"

    # Once applied, the stored time is the protection's: the trader taking it off leaves the MIS setting,
    # and the file does not put it back.
    clock.set(MONDAY, 15, 10)
    second = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    assert file_rules.apply_now() == [("exit", second)]
    square_off.set_exit_time(second, None)
    assert file_rules.apply_now() == []
    assert square_off.check_now() == [second]
    rig.wait_status(second, Status.CLOSED)
    assert rig.store.get(second).reason == "square-off 15:00"
    assert len(rig.sim_orders(rig.store.get(second).exit_tag)) == 1
