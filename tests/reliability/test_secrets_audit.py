"""Secrets audit: a full session through the headless app, then every file in its data folder is searched.

The session: logins on both brokers, positions opened outside and adopted, exits (one through HTTP errors
and an ambiguous answer), dropped sockets, a token expiry, the login it forces, more exits. Then every
access token, public token, request token and code the simulator issued (``/_sim/sessions``), both API
secrets and the demo password are looked for, as bytes, in every file under the data folder (database,
WAL, logs, lock, anything) and in everything the app printed. None may be there; the keyring (a recording
backend standing in for the OS keyring) must have received the secrets the app kept. The database and log
files must be owner-only, and the log filter must mask token-like text wherever it appears in a record.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.chaos import AppProcess, FeedTracker, OutsideTrader
from trailstop_gui.runtime import RedactingFilter, configure_logging
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=11, auto=False, fill_delay=0.05)
    yield handle
    handle.stop()


def control(sim: SimulatorHandle, path: str, body: dict[str, Any] | None = None) -> Any:
    url = f"{sim.url}/_sim/{path}"
    response = (
        requests.post(url, json=body, headers=sim.control_headers, timeout=10)
        if body is not None
        else requests.get(url, headers=sim.control_headers, timeout=10)
    )
    response.raise_for_status()
    return response.json()


def wait(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Session:
    """The app, the trader's own scripts, and the steps of the audited session."""

    def __init__(self, sim: SimulatorHandle, folder: Path) -> None:
        self.sim = sim
        self.data = folder / "data"
        self.keyring_file = folder / "keyring.json"
        self.transcript = io.StringIO()
        self.tracker = FeedTracker()
        env = {
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "PYTHON_KEYRING_BACKEND": "tests.reliability.keyring_probe.FileKeyring",
            "TRAILSTOP_AUDIT_KEYRING": str(self.keyring_file),
            "TRAILSTOP_SIM_TOKEN": sim.control_headers["X-Sim-Token"],
        }
        self.app = AppProcess(sim.url, self.data, "percent:2", self.tracker, self.transcript, env=env)
        self.trader = OutsideTrader(sim)
        self.count = 0

    def start(self) -> None:
        self.app.start()
        wait(lambda: all(self.tracker.is_up(b) for b in ("kite", "upstox")), "both feeds live")

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.data / "trailstop.db", timeout=5)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def round_trip(self, broker: str, symbol: str, side: str, product: str, quantity: int) -> None:
        """Open a position outside the app, wait for it to be protected, cross the stop, wait for the exit."""
        self.count += 1
        inst = control(self.sim, f"quote?symbol={symbol}")
        price = float(inst["ltp"])
        self.sim.set_price(symbol, price, bid=round(price - 0.05, 2), ask=round(price + 0.05, 2))
        order = {
            "symbol": symbol,
            "upstox_key": inst["upstox_key"],
            "side": side,
            "product": product,
            "quantity": quantity,
            "tag": f"AUDIT{self.count}",
        }
        assert self.trader.place(broker, order) == "placed"
        key = str(inst["kite_token"]) if broker == "kite" else inst["upstox_key"]
        query = "SELECT id, status, stop FROM protection WHERE broker = ? AND instrument = ? ORDER BY id DESC"
        wait(lambda: any(r[1] == "OPEN" for r in self.rows(query, (broker, key))), f"{symbol} protected", 45)
        pid, _status, stop = self.rows(query, (broker, key))[0]
        through = stop * (0.99 if side == "BUY" else 1.01)
        self.sim.set_price(
            symbol, round(through, 1), bid=round(through, 1) - 0.05, ask=round(through, 1) + 0.05
        )
        wait(
            lambda: self.rows("SELECT status FROM protection WHERE id = ?", (pid,))[0][0] == "CLOSED", "exit"
        )

    def restart(self) -> None:
        assert self.app.stop(signal.SIGTERM) == 0
        self.start()


def every_file(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def issued_secrets(sim: SimulatorHandle) -> dict[str, str]:
    """Everything the simulator handed out that must never be written down by the app."""
    found: dict[str, str] = {}
    for i, s in enumerate(control(sim, "sessions")):
        for field in ("access_token", "public_token", "request_token", "code"):
            if s.get(field):
                found[f"{s['broker']} session {i} {field}"] = str(s[field])
    found["kite api_secret"] = sim.info["kite"]["api_secret"]
    found["upstox client_secret"] = sim.info["upstox"]["client_secret"]
    found["demo password"] = sim.info["kite"]["password"]
    return found


def test_full_session_leaves_no_secret_in_any_file(sim: SimulatorHandle, tmp_path: Path) -> None:
    session = Session(sim, tmp_path)
    session.start()
    try:
        session.round_trip("kite", "NSE:INFY", "BUY", "MIS", 5)
        session.round_trip("upstox", "NSE:SBIN", "SELL", "MIS", 7)
        # Exits through trouble: errors and an ambiguous answer are logged, with the request's details.
        control(sim, "fault", {"fault": "http_error", "status": 503, "count": 2, "path": "/orders"})
        control(
            sim,
            "fault",
            {"fault": "http_error", "status": 502, "count": 1, "path": "/v2/order", "phase": "after"},
        )
        session.round_trip("kite", "NSE:TCS", "BUY", "CNC", 2)
        session.round_trip("upstox", "NSE:ITC", "BUY", "CNC", 10)
        control(sim, "fault", {"fault": "drop_ws", "mode": "abort"})
        # The tokens expire: both feeds are refused, the app forgets its tokens and asks for a login...
        control(sim, "fault", {"fault": "expire_tokens"})
        # Both sessions must have seen it: two lines from one broker's feed and session are not enough,
        # the other would start again with its old token.
        wait(
            lambda: all(
                any(f"{name} simulator: login needed" in line for _t, _g, line in session.app.output())
                for name in ("Zerodha", "Upstox")
            ),
            "login needed on both accounts",
        )
        # ... which the headless app does when it starts again; then more positions and exits.
        session.restart()
        session.round_trip("kite", "NSE:RELIANCE", "SELL", "MIS", 3)
        session.round_trip("upstox", "NSE:WIPRO", "BUY", "MIS", 4)
    finally:
        code = session.app.stop(signal.SIGTERM)
    assert code == 0

    secrets = issued_secrets(sim)
    logins = [s for s in control(sim, "sessions") if s["user_id"] in ("DM1234", "SIM0001")]
    assert (
        len([s for s in logins if s["redeemed_at"]]) >= 4
    )  # the app's two logins a broker, and the trader's

    files = every_file(session.data)
    names = {p.relative_to(session.data).as_posix() for p in files}
    assert {"trailstop.db", "logs/trailstop.log"} <= names, names
    leaks = [
        f"{what} in {path.relative_to(session.data)}"
        for path in files
        for what, secret in secrets.items()
        if secret.encode() in path.read_bytes()
    ]
    printed = session.transcript.getvalue()
    leaks += [f"{what} in the app's output" for what, secret in secrets.items() if secret in printed]
    assert leaks == [], leaks

    # Keyring is the only store: it received both API secrets and every access token the app used.
    kept = json.loads(session.keyring_file.read_text())
    written = {(name, value) for _service, name, value in kept["writes"]}
    assert {value for _name, value in written} >= {
        sim.info["kite"]["api_secret"],
        sim.info["upstox"]["client_secret"],
    }
    app_tokens = {value for name, value in written if name.endswith("/access_token")}
    assert len(app_tokens) >= 4  # two logins a broker
    issued_tokens = {s["access_token"] for s in logins if s["access_token"]}
    assert app_tokens <= issued_tokens
    # The expired tokens were deleted from the keyring when the broker refused them.
    assert len(kept["deletes"]) >= 2

    # The database, its WAL and shared memory, and the logs: readable by their owner only.
    loose = [
        f"{p.relative_to(session.data)} {stat.filemode(p.stat().st_mode)}"
        for p in files
        if (p.name.startswith("trailstop.db") or p.parent.name == "logs") and p.stat().st_mode & 0o077
    ]
    assert loose == [], loose


# ----------------------------------------------------------------------------------- the log filter


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("trailstop.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def formatted(rec: logging.LogRecord) -> str:
    assert RedactingFilter().filter(rec)
    return logging.Formatter("%(message)s").format(rec)


TOKEN = "Zx8kQ2mN4pR7sT1vW3yB5cD9fG6hJ0aL"  # the shape of a simulator (or Kite) access token
JWT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTSU0wMDAxIiwiaWF0IjoxNzAwMDAwMDAwfQ.c2lnbmF0dXJlX2hlcmU"
)


@pytest.mark.parametrize(
    "text",
    [
        f"access_token={TOKEN}",
        f'{{"access_token": "{TOKEN}", "user_id": "DM1234"}}',
        f"Authorization: token apikey123:{TOKEN}",
        f"Authorization: Bearer {JWT}",
        f"ws://127.0.0.1:8000/kite-ws?api_key=k&access_token={TOKEN}",
        f"the new token is {TOKEN}, keep it safe",
        f"upstox gave {JWT}",
        f"request_token={TOKEN[:20]}&action=login",
        "code=Ab3dE9&state=trailstop",
        f"api_secret: {TOKEN}",
    ],
)
def test_the_log_filter_masks_token_like_text(text: str) -> None:
    out = formatted(record("%s", text))
    assert TOKEN not in out and TOKEN[:20] not in out and JWT not in out and "Ab3dE9" not in out, out
    assert "***" in out


def test_the_log_filter_masks_tracebacks_and_stacks() -> None:
    try:
        raise ConnectionError(f"GET http://127.0.0.1/quote?access_token={TOKEN} failed: {JWT}")
    except ConnectionError as exc:
        rec = record("feed failed", exc=exc)
    rec.stack_info = f"Stack (most recent call last):\n  send(token={TOKEN})"
    out = formatted(rec)
    assert "Traceback" in out and "ConnectionError" in out
    assert TOKEN not in out and JWT not in out, out


def test_the_log_filter_keeps_what_a_trader_needs_to_read() -> None:
    text = "order 250101000000001 tag TSCNJY2I NSE_EQ|INE009A01021 NFO:NIFTY26DECFUT x75 at 1543.35"
    assert formatted(record("%s", text)) == text


def test_rotated_logs_stay_owner_only(tmp_path: Path) -> None:
    configure_logging(tmp_path, to_stdout=False)
    root = logging.getLogger()
    try:
        (handler,) = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        for i in range(3):
            logging.getLogger("trailstop.test").warning("line %d", i)
            handler.doRollover()  # type: ignore[attr-defined]
        logging.getLogger("trailstop.test").warning("after the rotations")
        logs = sorted((tmp_path / "logs").iterdir())
        assert len(logs) == 4
        assert [(p.name, oct(p.stat().st_mode & 0o777)) for p in logs if p.stat().st_mode & 0o077] == []
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        root.addHandler(logging.StreamHandler(sys.stderr))
