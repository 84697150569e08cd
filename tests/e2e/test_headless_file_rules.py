"""`trailstop-gui --headless --baskets FILE` with timed exits and stops on the underlying, against the
simulator: both reach the positions auto-protect adopts, and the option exits once on the index's fall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_headless import App, control, db_rows, exits_with_tags, kite_client, wait_rows
from trailstop_gui.simulator.runner import SimulatorHandle

pytestmark = pytest.mark.slow

UNDERLYING_JOIN = "FROM underlying_rule u JOIN protection p ON p.id = u.protection_id"


def test_timed_exits_and_a_stop_on_the_underlying_from_the_file(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    call = next(
        i for i in control(simulator, "instruments") if i["name"] == "NIFTY" and i["instrument_type"] == "CE"
    )
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            {
                "timed_exits": [{"account": "kite", "exchange": "NSE", "symbol": "INFY", "at": "15:10"}],
                "underlying_rules": [
                    {
                        "account": "kite",
                        "exchange": "NFO",
                        "symbol": call["tradingsymbol"],
                        "underlying": "NSE:NIFTY 50",
                        "view": "long",
                        "rule": "points:40",
                    }
                ],
            }
        )
    )
    app = App(simulator, tmp_path, "--auto-protect", "percent:20", "--baskets", str(path))
    try:
        app.wait_for("kite feed: live")
        kite = kite_client(simulator)
        for exchange, symbol, quantity, product in (
            ("NSE", "INFY", 5, "MIS"),
            ("NFO", call["tradingsymbol"], call["lot_size"], "NRML"),
        ):
            kite.place_order(
                variety="regular",
                exchange=exchange,
                tradingsymbol=symbol,
                transaction_type="BUY",
                quantity=quantity,
                product=product,
                order_type="MARKET",
                market_protection=-1,
            )
        app.wait_for("auto-protected NSE INFY x5")
        app.wait_for(f"auto-protected NFO {call['tradingsymbol']}")
        wait_rows(
            tmp_path,
            "SELECT p.symbol, t.at FROM timed_exit t JOIN protection p ON p.id = t.protection_id",
            [("INFY", "15:10")],
        )
        wait_rows(
            tmp_path,
            f"SELECT p.symbol, u.symbol, u.view {UNDERLYING_JOIN}",
            [(call["tradingsymbol"], "NIFTY 50", "BUY")],
        )
        ((reference, stop, rule),) = db_rows(
            tmp_path,
            f"SELECT u.reference, p.stop, p.rule {UNDERLYING_JOIN}",
        )
        assert json.loads(rule)["kind"] == "points" and stop == pytest.approx(reference - 40)
        control(simulator, "price", {"symbol": "NSE:NIFTY 50", "ltp": reference - 45})
        wait_rows(
            tmp_path, f"SELECT status FROM protection WHERE symbol = '{call['tradingsymbol']}'", [("CLOSED",)]
        )
        ((tag,),) = db_rows(
            tmp_path, f"SELECT exit_tag FROM protection WHERE symbol = '{call['tradingsymbol']}'"
        )
        (exit_order,) = exits_with_tags(simulator, {tag})
        assert exit_order["transaction_type"] == "SELL" and exit_order["quantity"] == call["lot_size"]
        assert db_rows(tmp_path, "SELECT status FROM protection WHERE symbol = 'INFY'") == [("OPEN",)]
    finally:
        assert app.stop() == 0


def test_a_file_naming_an_account_not_loaded_stops_the_start(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            {"timed_exits": [{"account": "upstox", "exchange": "NSE", "symbol": "INFY", "at": "15:10"}]}
        )
    )
    app = App(simulator, tmp_path, "--baskets", str(path))
    app.wait_for("timed exit NSE:INFY: account 'upstox' matches no loaded account")
    assert app.proc.wait(timeout=20) == 2
