"""The real headless app with ``--safety-stop``: SIGKILLed, the broker-held stop still closes the position,
and the restarted app records it (reason "safety stop") without sending a second exit."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_headless import App, buy_outside, control, db_rows, exits_with_tags
from trailstop_gui.simulator.runner import SimulatorHandle

pytestmark = pytest.mark.slow


def wait_rows(data_dir: Path, sql: str, expected: list[tuple[object, ...]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (rows := db_rows(data_dir, sql)) != expected:
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


@pytest.mark.parametrize("product", ["MIS", "CNC"])
def test_sigkill_then_the_broker_held_stop_fills_and_restart_sends_nothing(
    simulator: SimulatorHandle,
    tmp_path: Path,
    product: str,
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    app = App(simulator, tmp_path, "--auto-protect", "percent:2", "--safety-stop")
    app.wait_for("kite feed: live")
    buy_outside(simulator, quantity=4, product=product)
    app.wait_for("auto-protected NSE INFY x4")
    app.wait_for("placed at")
    wait_rows(tmp_path, "SELECT status, safety_state FROM protection", [("OPEN", "placed")])
    ((level,),) = db_rows(tmp_path, "SELECT safety_level FROM protection")
    app.stop(signal.SIGKILL)
    # TrailStop is gone; the price falls through both stops and the broker fills its safety stop.
    below = round(level - 10, 1)
    simulator.set_price("NSE:INFY", below, bid=below - 0.05, ask=below + 0.05)
    deadline = time.monotonic() + 10
    while not any(
        o["status"] == "COMPLETE" and o["transaction_type"] == "SELL" for o in control(simulator, "orders")
    ):
        assert time.monotonic() < deadline, control(simulator, "orders")
        time.sleep(0.05)
    restarted = App(simulator, tmp_path)
    try:
        wait_rows(tmp_path, "SELECT status, reason FROM protection", [("CLOSED", "safety stop")], timeout=30)
        tags = {row[0] for row in db_rows(tmp_path, "SELECT exit_tag FROM protection")}
        assert exits_with_tags(simulator, tags) == []  # no exit of ours
        sells = [o for o in control(simulator, "orders") if o["transaction_type"] == "SELL"]
        assert len(sells) == 1 and sells[0]["status"] == "COMPLETE" and sells[0]["quantity"] == 4
        assert db_rows(tmp_path, "SELECT exit_order_id FROM protection") == [(sells[0]["order_id"],)]
    finally:
        assert restarted.stop() == 0
