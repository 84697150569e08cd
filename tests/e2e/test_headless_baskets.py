"""`trailstop-gui --headless --baskets FILE` against the simulator: one exit per member, across a kill too."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.e2e.test_headless import App, control, db_rows, exits_with_tags, kite_client, wait_rows
from trailstop_gui.simulator.runner import SimulatorHandle

pytestmark = pytest.mark.slow


def basket_file(tmp_path: Path, max_loss: float | None, **lock: float) -> Path:
    rules = {"max_loss": max_loss} if max_loss is not None else {}
    path = tmp_path / "baskets.json"
    path.write_text(
        json.dumps(
            {
                "baskets": [
                    {
                        "name": "pair",
                        "account": "kite",
                        "positions": [
                            {"exchange": "NSE", "symbol": "INFY"},
                            {"exchange": "NSE", "symbol": "TCS"},
                        ],
                        "rules": {**rules, **lock},
                    }
                ]
            }
        )
    )
    return path


def open_pair(sim: SimulatorHandle) -> None:
    """A long INFY and a short TCS, 5 each, MIS, through the official client (outside the app)."""
    kite = kite_client(sim)
    for symbol, side in (("INFY", "BUY"), ("TCS", "SELL")):
        kite.place_order(
            variety="regular",
            exchange="NSE",
            tradingsymbol=symbol,
            transaction_type=side,
            quantity=5,
            product="MIS",
            order_type="MARKET",
            market_protection=-1,
        )


def member_exits(sim: SimulatorHandle, data_dir: Path) -> dict[str, list[dict[str, object]]]:
    rows = db_rows(data_dir, "SELECT symbol, exit_tag FROM protection")
    return {symbol: exits_with_tags(sim, {tag}) for symbol, tag in rows}


def test_a_basket_from_a_file_exits_both_members_once(simulator: SimulatorHandle, tmp_path: Path) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    simulator.set_price("NSE:TCS", 3000.0, bid=2999.95, ask=3000.05)
    path = basket_file(tmp_path, 400)
    app = App(simulator, tmp_path, "--auto-protect", "percent:20", "--baskets", str(path))
    try:
        app.wait_for("kite feed: live")
        open_pair(simulator)
        app.wait_for("auto-protected NSE TCS x5")
        app.wait_for("auto-protected NSE INFY x5")
        simulator.set_price("NSE:INFY", 1450.0, bid=1449.95, ask=1450.05)  # about -250
        simulator.set_price("NSE:TCS", 3040.0, bid=3039.95, ask=3040.05)  # about -200 more
        app.wait_for("breached: max loss")
        wait_rows(tmp_path, "SELECT status FROM basket", [("EXITED",)])
        exits = member_exits(simulator, tmp_path)
        assert [len(exits["INFY"]), len(exits["TCS"])] == [1, 1]
        assert exits["INFY"][0]["transaction_type"] == "SELL" and exits["INFY"][0]["quantity"] == 5
        assert exits["TCS"][0]["transaction_type"] == "BUY" and exits["TCS"][0]["quantity"] == 5
    finally:
        assert app.stop() == 0


def test_a_kill_mid_basket_exit_is_finished_after_the_restart(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    simulator.set_price("NSE:TCS", 3000.0, bid=2999.95, ask=3000.05)
    path = basket_file(tmp_path, 400)
    app = App(simulator, tmp_path, "--auto-protect", "percent:20", "--baskets", str(path))
    app.wait_for("kite feed: live")
    open_pair(simulator)
    app.wait_for("auto-protected NSE TCS x5")
    app.wait_for("auto-protected NSE INFY x5")
    # Every order fails: the short's exit sits TRIGGERED, and the long waits for it, still OPEN.
    control(
        simulator,
        "fault",
        {"fault": "http_error", "status": 503, "probability": 1.0, "path": "/orders", "method": "POST"},
    )
    simulator.set_price("NSE:TCS", 3100.0, bid=3099.95, ask=3100.05)  # about -500 on the short
    app.wait_for("breached: max loss")
    wait_rows(tmp_path, "SELECT status FROM basket", [("TRIGGERED",)])
    # The basket's TRIGGERED is committed first, then each member's own trigger: wait for the short's.
    wait_rows(
        tmp_path, "SELECT symbol, status FROM protection", [("INFY", "OPEN"), ("TCS", "TRIGGERED")], timeout=5
    )
    app.stop(signal.SIGKILL)
    control(simulator, "fault", {"fault": "clear"})
    restarted = App(simulator, tmp_path, "--auto-protect", "percent:20", "--baskets", str(path))
    try:
        wait_rows(tmp_path, "SELECT status FROM basket", [("EXITED",)], timeout=30)
        exits = member_exits(simulator, tmp_path)
        assert [len(exits["INFY"]), len(exits["TCS"])] == [1, 1]
        assert sorted(db_rows(tmp_path, "SELECT symbol, status FROM protection")) == [
            ("INFY", "CLOSED"),
            ("TCS", "CLOSED"),
        ]
        assert db_rows(tmp_path, "SELECT count(*) FROM basket") == [(1,)]  # the file did not add a second
    finally:
        assert restarted.stop() == 0


def test_lock_and_trail_from_a_file_exits_each_member_once_on_the_way_back(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    """MTM reaches 300: 100 locked; every 100 more raises the lock by 50; the fall through it exits both."""
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    simulator.set_price("NSE:TCS", 3000.0, bid=2999.95, ask=3000.05)
    path = basket_file(tmp_path, None, lock_at=300, lock_profit=100, trail_every=100, trail_by=50)
    app = App(simulator, tmp_path, "--auto-protect", "percent:20", "--baskets", str(path))
    try:
        app.wait_for("kite feed: live")
        open_pair(simulator)
        app.wait_for("auto-protected NSE TCS x5")
        app.wait_for("auto-protected NSE INFY x5")
        entries = dict(db_rows(tmp_path, "SELECT symbol, entry_price FROM protection"))

        def mtm(infy: float) -> float:  # TCS stays at 3000
            return (infy - entries["INFY"]) * 5 + (entries["TCS"] - 3000.0) * 5

        simulator.set_price("NSE:INFY", 1570.0, bid=1569.95, ask=1570.05)  # MTM ~ 350: lock 100
        wait_rows(tmp_path, "SELECT status, lock FROM basket", [("ACTIVE", 100.0)])
        simulator.set_price("NSE:INFY", 1630.0, bid=1629.95, ask=1630.05)  # ~ 650: 100 + 3 x 50
        wait_rows(tmp_path, "SELECT status, lock FROM basket", [("ACTIVE", 250.0)])
        simulator.set_price("NSE:INFY", 1590.0, bid=1589.95, ask=1590.05)  # ~ 450: above the lock
        simulator.set_price("NSE:INFY", 1545.0, bid=1544.95, ask=1545.05)  # ~ 225: through it
        app.wait_for("breached: lock")
        wait_rows(tmp_path, "SELECT status FROM basket", [("EXITED",)])
        ((lock, breach_mtm, reason),) = db_rows(tmp_path, "SELECT lock, breach_mtm, reason FROM basket")
        assert lock == 250.0  # it never went down on the way back
        assert breach_mtm == pytest.approx(mtm(1545.0), abs=1.0) and "250.00" in reason
        exits = member_exits(simulator, tmp_path)
        assert [len(exits["INFY"]), len(exits["TCS"])] == [1, 1]
        assert exits["INFY"][0]["transaction_type"] == "SELL" and exits["INFY"][0]["quantity"] == 5
        assert exits["TCS"][0]["transaction_type"] == "BUY" and exits["TCS"][0]["quantity"] == 5
        locks = db_rows(tmp_path, "SELECT new FROM journal_event WHERE kind = 'basket_lock' ORDER BY id")
        assert [float(new) for (new,) in locks] == [100.0, 250.0]
    finally:
        assert app.stop() == 0


def test_a_bad_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"baskets": [{"name": "x", "account": "kite", "positions": "all", "rules": {}}]})
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trailstop_gui",
            "--headless",
            "--data-dir",
            str(tmp_path),
            "--baskets",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "baskets[0].rules: a basket needs a max loss or a lock" in result.stderr
