"""The real headless app as a subprocess against the simulator: adopt, trail, exit once; survive SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect

from tests.services.conftest import control
from trailstop_gui.simulator.runner import SimulatorHandle

pytestmark = pytest.mark.slow


class App:
    """``trailstop-gui --headless`` in a subprocess, its stdout collected line by line."""

    def __init__(self, sim: SimulatorHandle, data_dir: Path, *extra: str) -> None:
        env = dict(
            os.environ,
            QT_QPA_PLATFORM="offscreen",
            PYTHONUNBUFFERED="1",
            TRAILSTOP_SIM_TOKEN=sim.control_headers["X-Sim-Token"],
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trailstop_gui",
                "--headless",
                "--sim",
                sim.url,
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, text: str, timeout: float = 20.0, after: int = 0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines[after:], start=after):
                if text in line:
                    return i
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"never logged {text!r}; output:\n" + "\n".join(self.lines[-40:]))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


def kite_client(sim: SimulatorHandle) -> KiteConnect:
    """The official client, logged in as the demo user through the HTML form, as a trader's script would."""
    info = sim.info["kite"]
    kite = KiteConnect(info["api_key"], root=info["api_root"])
    with requests.Session() as http:
        http.get(info["login_url"], params={"api_key": info["api_key"], "v": 3}, timeout=5)
        answer = http.post(
            info["login_url"],
            data={"api_key": info["api_key"], "user_id": info["user_id"], "password": info["password"]},
            allow_redirects=False,
            timeout=5,
        )
    token = requests.utils.urlparse(answer.headers["Location"]).query
    request_token = dict(part.split("=", 1) for part in token.split("&"))["request_token"]
    session = kite.generate_session(request_token, api_secret=info["api_secret"])
    kite.set_access_token(session["access_token"])
    return kite


def db_rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(data_dir / "trailstop.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_rows(data_dir: Path, sql: str, expected: list[tuple[object, ...]], timeout: float = 20.0) -> None:
    """Until the rows ``sql`` reads from the app's database, sorted, are ``expected``."""
    deadline = time.monotonic() + timeout
    while sorted(db_rows(data_dir, sql)) != expected:
        assert time.monotonic() < deadline, db_rows(data_dir, sql)
        time.sleep(0.05)


def exits_with_tags(sim: SimulatorHandle, tags: set[str]) -> list[dict[str, Any]]:
    return [o for o in control(sim, "orders") if o.get("tag") in tags]


def buy_outside(sim: SimulatorHandle, quantity: int = 5, product: str = "MIS") -> None:
    kite = kite_client(sim)
    kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=quantity,
        product=product,
        order_type="MARKET",
        market_protection=-1,
    )


def test_headless_adopts_a_position_opened_outside_trails_and_exits_once(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    app = App(simulator, tmp_path, "--auto-protect", "percent:2")
    try:
        app.wait_for("kite feed: live")
        # Opened after the app started, through the official client: found without waiting 30 s.
        buy_outside(simulator)
        app.wait_for("auto-protected NSE INFY x5")
        simulator.set_price("NSE:INFY", 1550.0, bid=1549.95, ask=1550.05)
        deadline = time.monotonic() + 10
        while db_rows(tmp_path, "SELECT stop FROM protection") != [(1518.95,)]:  # 1549.95 - 2 %
            assert time.monotonic() < deadline, db_rows(tmp_path, "SELECT stop FROM protection")
            time.sleep(0.05)
        simulator.set_price("NSE:INFY", 1510.0, bid=1509.95, ask=1510.05)
        app.wait_for("Exit filled")
        tags = {row[0] for row in db_rows(tmp_path, "SELECT exit_tag FROM protection")}
        exits = exits_with_tags(simulator, tags)
        assert len(exits) == 1 and exits[0]["transaction_type"] == "SELL" and exits[0]["quantity"] == 5
        assert db_rows(tmp_path, "SELECT status FROM protection") == [("CLOSED",)]
    finally:
        assert app.stop() == 0


@pytest.mark.parametrize("crash_point", ["TRIGGERED", "EXITING"])
def test_sigkill_mid_exit_then_restart_sends_exactly_one_exit(
    simulator: SimulatorHandle, tmp_path: Path, crash_point: str
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    app = App(simulator, tmp_path, "--auto-protect", "percent:2")
    app.wait_for("kite feed: live")
    buy_outside(simulator, quantity=4, product="CNC")
    app.wait_for("auto-protected NSE INFY x4")
    if crash_point == "TRIGGERED":
        # Every exit attempt fails at once: the protection sits in TRIGGERED with no order at the broker.
        control(
            simulator,
            "fault",
            {"fault": "http_error", "status": 503, "probability": 1.0, "path": "/orders", "method": "POST"},
        )
    else:
        # The exit is accepted but fills only 4 s later: the protection sits in EXITING meanwhile.
        control(simulator, "fault", {"fault": "fill_delay", "seconds": 4})
    simulator.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
    deadline = time.monotonic() + 15
    while db_rows(tmp_path, "SELECT status FROM protection") != [(crash_point,)]:
        assert time.monotonic() < deadline, db_rows(tmp_path, "SELECT status FROM protection")
        time.sleep(0.02)
    app.stop(signal.SIGKILL)
    # With EXITING, the resting exit fills while the app is down or starting: it must be found, not resent.
    control(simulator, "fault", {"fault": "clear"})
    restarted = App(simulator, tmp_path)
    try:
        restarted.wait_for("Exit filled", timeout=30)
        tags = {row[0] for row in db_rows(tmp_path, "SELECT exit_tag FROM protection")}
        exits = exits_with_tags(simulator, tags)
        assert [e["status"] for e in exits] == ["COMPLETE"], exits
        assert exits[0]["quantity"] == 4
        assert db_rows(tmp_path, "SELECT status FROM protection") == [("CLOSED",)]
    finally:
        assert restarted.stop() == 0


def test_sigterm_is_a_clean_shutdown_that_keeps_protections_armed(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    app = App(simulator, tmp_path, "--auto-protect", "points:10")
    app.wait_for("kite feed: live")
    buy_outside(simulator, quantity=2)
    app.wait_for("auto-protected NSE INFY x2")
    assert app.stop(signal.SIGTERM) == 0
    assert db_rows(tmp_path, "SELECT status, stop FROM protection") == [
        ("OPEN", 1490.05)
    ]  # bought at the ask, 1500.05, minus 10 points
    assert any("stay armed" in line for line in app.lines)


def test_a_sale_from_holdings_is_never_adopted_and_holdings_are_protected_only_when_asked(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    simulator.set_price("NSE:ITC", 420.0, bid=419.95, ask=420.05)
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    kite = kite_client(simulator)
    # The trader sells 40 of the 100 ITC held, on the broker's own site: today's CNC row is -40.
    kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="ITC",
        transaction_type="SELL",
        quantity=40,
        product="CNC",
        order_type="MARKET",
        market_protection=-1,
    )
    app = App(simulator, tmp_path, "--auto-protect", "percent:2")
    try:
        app.wait_for("kite feed: live")
        buy_outside(simulator)
        app.wait_for("auto-protected NSE INFY x5")
        # The reconcile that found INFY saw ITC's -40 too: a sale out of holdings is not a short.
        assert db_rows(tmp_path, "SELECT symbol, side, product, quantity FROM protection") == [
            ("INFY", "BUY", "MIS", 5)
        ]
    finally:
        assert app.stop() == 0
    app = App(simulator, tmp_path, "--auto-protect", "percent:2", "--auto-protect-holdings")
    try:
        # Each adoption is logged after its commit, one stock at a time: wait for every one before reading.
        app.wait_for("auto-protected NSE INFY x10 delivery shares")
        app.wait_for("auto-protected NSE ITC x60 delivery shares")
        app.wait_for("auto-protected NSE SBIN x16 delivery shares")  # NSE 10 + BSE 6, one ISIN
        app.wait_for("auto-protected NSE TCS x5 delivery shares")
        rows = db_rows(
            tmp_path, "SELECT symbol, side, product, quantity FROM protection ORDER BY symbol, product"
        )
        assert rows == [
            ("INFY", "BUY", "CNC", 10),
            ("INFY", "BUY", "MIS", 5),
            ("ITC", "BUY", "CNC", 60),
            ("SBIN", "BUY", "CNC", 16),
            ("TCS", "BUY", "CNC", 5),
        ]
        assert [o["transaction_type"] for o in control(simulator, "orders")] == ["SELL", "BUY"]
    finally:
        assert app.stop() == 0


def test_auto_protect_holdings_needs_auto_protect(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trailstop_gui",
            "--headless",
            "--auto-protect-holdings",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--auto-protect-holdings needs --auto-protect RULE" in done.stderr


def test_sigterm_while_starting_up_ends_the_app(simulator: SimulatorHandle, tmp_path: Path) -> None:
    """A SIGTERM during the start-up login (before the event loop runs) used to be lost: the app ran on
    until it was killed (a chaos run's "unclean shutdown")."""
    control(simulator, "fault", {"fault": "slow", "seconds": 3, "path": "/session/token", "count": 1})
    app = App(simulator, tmp_path)
    try:
        app.wait_for("headless; data in")
        assert app.stop(signal.SIGTERM, timeout=20) == 0
        assert any("signal 15: shutting down" in line for line in app.lines)
    finally:
        if app.proc.poll() is None:  # the old behaviour: never leave it running
            app.proc.kill()
            app.proc.wait(10)
