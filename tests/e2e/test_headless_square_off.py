"""`trailstop-gui --headless` against the simulator: a timed square-off FIRES, once, and only when due.

The headless app has no injectable clock, and a square-off time is between 09:15 and 15:30 IST. The time is
made to come the way a real run meets it on a special session: the simulator's Upstox market timings
(POST /_sim/calendar) give today an evening session that does not contain the time, so the exit goes 15
minutes before that session's end, or at its open if that is later (models/square_off.exit_moment, as for
a Muhurat session). NSE's session began two minutes ago: its square-offs are due at once. NFO's session
ends a little later: the option's square-off comes some seconds into the test, and not before.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.test_headless import App, control, db_rows, exits_with_tags, kite_client, wait_rows
from trailstop_gui.models.square_off import IST, LEAD_BEFORE_CLOSE
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.settings import Settings, save_settings
from trailstop_gui.simulator.runner import SimulatorHandle

pytestmark = pytest.mark.slow


def sessions_for_today(simulator: SimulatorHandle, nfo_delay: timedelta) -> datetime:
    """NSE (and BSE): a session that began two minutes ago and ends in ten, whose square-off moment is its
    open, already past; NFO (and BFO): the same open, ending so that its moment is ``nfo_delay`` from now.
    Returns NFO's moment."""
    now = datetime.now(IST).replace(microsecond=0)
    start = now - timedelta(minutes=2)
    nfo_close = now + LEAD_BEFORE_CLOSE + nfo_delay
    if start.date() != now.date() or nfo_close.date() != now.date():
        pytest.skip("the sessions of this test would cross midnight IST")
    for exchanges, close in ((["NSE", "BSE"], now + timedelta(minutes=10)), (["NFO", "BFO"], nfo_close)):
        control(
            simulator,
            "calendar",
            {
                "date": now.date().isoformat(),
                "open": f"{start:%H:%M:%S}",
                "close": f"{close:%H:%M:%S}",
                "exchanges": exchanges,
            },
        )
    return nfo_close - LEAD_BEFORE_CLOSE


def transitions(data_dir: Path, pid: int) -> list[tuple[str, str, str, str]]:
    """The protection's journalled transitions: (time, from, to, reason)."""
    return db_rows(
        data_dir,
        "SELECT ts, old, new, message FROM journal_event"
        f" WHERE protection_id = {pid} AND kind = 'transition' ORDER BY id",
    )


def test_a_timed_square_off_exits_once_and_leaves_a_protection_whose_time_has_not_come(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    call = next(
        i for i in control(simulator, "instruments") if i["name"] == "NIFTY" and i["instrument_type"] == "CE"
    )
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    simulator.set_price("NSE:SBIN", 800.0, bid=799.95, ask=800.05)
    option_moment = sessions_for_today(simulator, nfo_delay=timedelta(seconds=10))
    # The MIS setting, as the settings dialog stores it: every MIS protection without its own time.
    store = ProtectionStore(tmp_path / "trailstop.db")
    save_settings(store, Settings(mis_square_off="15:15"))
    store.close()
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            {
                "timed_exits": [
                    {"account": "kite", "exchange": "NSE", "symbol": "INFY", "at": "15:10"},
                    {"account": "kite", "exchange": "NFO", "symbol": call["tradingsymbol"], "at": "15:10"},
                ]
            }
        )
    )
    # Upstox publishes the sessions (Kite Connect has none): its login supplies them for the Kite account.
    app = App(simulator, tmp_path, "--broker", "both", "--auto-protect", "percent:20", "--baskets", str(path))
    try:
        app.wait_for("kite feed: live")
        app.wait_for("upstox feed: live")
        kite = kite_client(simulator)
        for exchange, symbol, quantity in (
            ("NSE", "INFY", 5),  # its own time, from the file
            ("NSE", "SBIN", 10),  # no time of its own: the MIS setting
            ("NFO", call["tradingsymbol"], call["lot_size"]),  # its own time, not yet come on NFO
        ):
            kite.place_order(
                variety="regular",
                exchange=exchange,
                tradingsymbol=symbol,
                transaction_type="BUY",
                quantity=quantity,
                product="MIS",
                order_type="MARKET",
                market_protection=-1,
            )
        wait_rows(
            tmp_path,
            "SELECT symbol, status, reason FROM protection WHERE symbol IN ('INFY', 'SBIN')",
            [("INFY", "CLOSED", "square-off 15:10"), ("SBIN", "CLOSED", "square-off 15:15")],
        )
        # The option's moment comes later in the test: it is squared off then, by a later check.
        wait_rows(
            tmp_path,
            f"SELECT status, reason FROM protection WHERE symbol = '{call['tradingsymbol']}'",
            [("CLOSED", "square-off 15:10")],
        )
    finally:
        assert app.stop() == 0  # a clean stop waits for the square-off thread: every order is counted below
    rows = db_rows(tmp_path, "SELECT id, symbol, exit_tag FROM protection ORDER BY symbol")
    assert len(rows) == 3
    exits = exits_with_tags(simulator, {tag for _, _, tag in rows})
    assert sorted(
        (o["tradingsymbol"], o["transaction_type"], o["quantity"], o["status"]) for o in exits
    ) == sorted(
        [
            ("INFY", "SELL", 5, "COMPLETE"),
            ("SBIN", "SELL", 10, "COMPLETE"),
            (call["tradingsymbol"], "SELL", call["lot_size"], "COMPLETE"),
        ]
    )
    for pid, symbol, _ in rows:
        journal = transitions(tmp_path, pid)
        fired = [event for event in journal if event[2] == "TRIGGERED"]
        assert len(fired) == 1 and fired[0][1] == "OPEN" and fired[0][3].startswith("square-off"), journal
        assert journal[-1][2] == "CLOSED", journal
        if symbol == call["tradingsymbol"]:
            # Left alone until its time: the journal's clock is the machine's local time.
            triggered_at = datetime.fromisoformat(fired[0][0])
            assert triggered_at >= option_moment.astimezone().replace(tzinfo=None), (journal, option_moment)
