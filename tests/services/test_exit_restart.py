"""A restart after a crash just after a crossing, against the simulator with a lagging order book.

The previous process left the "exit_sending" marker (committed with TRIGGERED) and its exit send log
(services/exit_send_log.py) as a kill leaves them; the restart must never send a second exit, and must not
wait the whole lost-order window when the log shows no request was in the air.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.services.conftest import control
from tests.services.test_exit_bad_day import BOOK_LAG, POLICY, net_position
from tests.services.test_protection_flow import Rig, enter, wait_until
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.services.brokers.base import OrderRequest
from trailstop_gui.services.exit_jobs import RetryPolicy
from trailstop_gui.services.exit_send_log import ExitSendLog

LAG = BOOK_LAG  # the book's lag (1.5 s at POLICY's half scale); POLICY's look-up window is 4 s at that scale


@pytest.fixture
def rig_policy() -> RetryPolicy:
    """The shared ``rig`` (tests/services/conftest.py) with this module's retry policy."""
    return POLICY


def crossed_and_marked(rig: Rig) -> int:
    """An MIS long of 3 whose stop the previous process fired: TRIGGERED and the marker, in one commit."""
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    control(rig.sim, "fault", {"fault": "book_lag", "seconds": LAG})
    wait_until(lambda: any(p.quantity == 3 for p in rig.session.broker.positions()), what="lagged entry")
    assert rig.session.feed is not None
    rig.session.feed.disarm(pid)
    rig.store.transition(pid, Status.TRIGGERED, expected=Status.OPEN, reason="stop")
    rig.store.journal(
        "exit_sending", protection_id=pid, message="attempt 1, marked with the trigger's commit"
    )
    return pid


def restarted(rig: Rig, path: Path, later: float) -> ExitSendLog:
    """This process as the restart, ``later`` seconds after the previous one's record."""
    send_log = ExitSendLog(
        path,
        run=2,
        first_event_id=rig.store.last_event_id(),
        wall=lambda: time.time() + later,
        mono=lambda: time.monotonic() + later,
    )
    rig.service.executor.send_log = send_log
    return send_log


def test_a_crash_before_the_request_left_sends_at_once(rig: Rig, tmp_path: Path) -> None:
    path = tmp_path / "exit-sends"
    ExitSendLog(path, run=1, first_event_id=0).close()  # the previous process: started, sent nothing, killed
    pid = crossed_and_marked(rig)
    send_log = restarted(rig, path, later=3.0)
    started = time.monotonic()
    assert rig.service.executor.submit(pid, recover=True)
    wait_until(lambda: rig.store.get(pid).status is not Status.TRIGGERED, timeout=10, what="the exit sent")
    took = time.monotonic() - started
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    send_log.close()
    assert took < POLICY.lookup_window / 2  # the old code looked for the whole window first
    assert len(rig.sim_orders(rig.store.get(pid).exit_tag)) == 1
    wait_until(lambda: net_position(rig) == 0, what="flat")


def test_a_crash_with_the_request_in_the_air_finds_it_behind_the_lag(rig: Rig, tmp_path: Path) -> None:
    path = tmp_path / "exit-sends"
    previous = ExitSendLog(path, run=1, first_event_id=0)
    pid = crossed_and_marked(rig)
    p = rig.store.get(pid)
    previous.sending()  # written before the request; the kill comes before the answer
    rig.session.broker.place_order(
        OrderRequest(
            symbol=p.symbol,
            exchange="NSE",
            instrument=p.engine_instrument,
            side=Side.SELL,
            quantity=3,
            product=Product.MIS,
            tag=p.exit_tag,
        )
    )
    send_log = restarted(rig, path, later=30.0)  # however late: that request's end is not known
    assert rig.service.executor.submit(pid, recover=True)
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    send_log.close()
    assert len(rig.sim_orders(p.exit_tag)) == 1  # the lagging book showed it: adopted, never sent again
    assert net_position(rig) == 0
