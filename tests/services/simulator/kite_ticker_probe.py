"""Drives the official KiteTicker against a running simulator and prints what it saw as one JSON line.

Run as a subprocess (Twisted's reactor cannot be restarted inside the test process):
``python kite_ticker_probe.py '<simulator info json>' <access_token>``. Exit code 0 when every step
completed; the JSON line names the step that failed otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import requests
from kiteconnect import KiteConnect, KiteTicker

INFY, NIFTY = 408065, 256265
STEP_TIMEOUT = 10.0


class Probe:
    def __init__(self, info: dict[str, Any], access_token: str) -> None:
        self.base = info["http"]
        self.control_headers = {"X-Sim-Token": info["control_token"]}
        kite = info["kite"]
        self.rest = KiteConnect(kite["api_key"], access_token=access_token, root=kite["api_root"])
        self.kws = KiteTicker(kite["api_key"], access_token, root=kite["ws_url"], reconnect_max_delay=5)
        self.cond = threading.Condition()
        self.ticks: list[dict[str, Any]] = []
        self.orders: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.connects = 0
        self.closes = 0
        self.errors: list[str] = []
        self.result: dict[str, Any] = {"step": "connect"}
        k = self.kws
        k.on_connect = self._on_connect
        k.on_ticks = self._on_ticks
        k.on_message = self._on_message
        k.on_order_update = self._on_order_update
        k.on_close = self._on_close
        k.on_error = self._on_error

    # -- callbacks (reactor thread) --------------------------------------------------------------

    def _notify(self, update: Any) -> None:
        with self.cond:
            update()
            self.cond.notify_all()

    def _on_connect(self, ws: Any, response: Any) -> None:
        self._notify(lambda: setattr(self, "connects", self.connects + 1))

    def _on_ticks(self, ws: Any, ticks: list[dict[str, Any]]) -> None:
        clean = [
            {k: v for k, v in t.items() if k not in ("last_trade_time", "exchange_timestamp")} for t in ticks
        ]
        self._notify(lambda: self.ticks.extend(clean))

    def _on_message(self, ws: Any, payload: bytes, is_binary: bool) -> None:
        if is_binary and len(payload) == 1:
            self._notify(lambda: setattr(self, "heartbeats", self.heartbeats + 1))

    def _on_order_update(self, ws: Any, data: dict[str, Any]) -> None:
        self._notify(lambda: self.orders.append(data))

    def _on_close(self, ws: Any, code: Any, reason: Any) -> None:
        self._notify(lambda: setattr(self, "closes", self.closes + 1))

    def _on_error(self, ws: Any, code: Any, reason: Any) -> None:
        self._notify(lambda: self.errors.append(f"{code} {reason}"))

    # -- helpers ---------------------------------------------------------------------------------

    def wait(self, predicate: Any, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, STEP_TIMEOUT):
                raise TimeoutError(what)

    def tick_after(self, start: int, token: int, mode: str, price: float | None = None) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for t in self.ticks[start:]:
                same = t["instrument_token"] == token and t["mode"] == mode
                if same and (price is None or abs(t["last_price"] - price) < 1e-9):
                    return t
            return None

        self.wait(lambda: find() is not None, f"{mode} tick of {token}")
        found = find()
        assert found is not None
        return found

    def control(self, path: str, body: dict[str, Any]) -> Any:
        response = requests.post(
            f"{self.base}/_sim/{path}", json=body, headers=self.control_headers, timeout=5
        )
        response.raise_for_status()
        return response.json()

    # -- the scenario ----------------------------------------------------------------------------

    def run(self) -> None:
        r = self.result
        self.kws.connect(threaded=True)
        self.wait(lambda: self.connects >= 1, "first connect")

        r["step"] = "subscribe"
        mark = len(self.ticks)
        self.kws.subscribe([INFY, NIFTY])
        r["quote_tick"] = self.tick_after(mark, INFY, "quote")
        r["index_quote_tick"] = self.tick_after(mark, NIFTY, "quote")

        r["step"] = "ltp mode"
        mark = len(self.ticks)
        self.kws.set_mode(self.kws.MODE_LTP, [INFY])
        r["ltp_tick"] = self.tick_after(mark, INFY, "ltp")

        r["step"] = "full mode"
        mark = len(self.ticks)
        self.kws.set_mode(self.kws.MODE_FULL, [INFY, NIFTY])
        self.tick_after(mark, INFY, "full")
        r["index_full_tick"] = self.tick_after(mark, NIFTY, "full")

        r["step"] = "pushed price"
        mark = len(self.ticks)
        self.control("price", {"symbol": "NSE:INFY", "ltp": 1600.0, "bid": 1599.95, "ask": 1600.05})
        r["full_tick"] = self.tick_after(mark, INFY, "full", 1600.0)

        r["step"] = "order update"
        order_id = self.rest.place_order(
            "regular", "NSE", "INFY", "BUY", 2, "MIS", "MARKET", market_protection=-1, tag="probe1"
        )
        self.wait(
            lambda: any(o["order_id"] == order_id and o["status"] == "COMPLETE" for o in self.orders),
            "order update COMPLETE",
        )
        r["order_id"] = order_id
        r["order_updates"] = [o for o in self.orders if o["order_id"] == order_id]

        r["step"] = "unsubscribe"
        self.kws.unsubscribe([INFY])
        mark = len(self.ticks)
        # A mode message on the same socket: its snapshot proves the unsubscribe was handled before it.
        self.kws.set_mode(self.kws.MODE_FULL, [NIFTY])
        self.tick_after(mark, NIFTY, "full")
        mark = len(self.ticks)
        self.control("price", {"symbol": "NSE:INFY", "ltp": 1611.0})
        self.control("price", {"symbol": "NSE:NIFTY 50", "ltp": 24400.5})
        self.tick_after(mark, NIFTY, "full", 24400.5)
        r["ticks_after_unsubscribe"] = [t["instrument_token"] for t in self.ticks[mark:]]

        r["step"] = "heartbeat"
        self.wait(lambda: self.heartbeats >= 1, "a heartbeat")
        r["heartbeats_seen"] = self.heartbeats

        r["step"] = "stall"
        self.control("fault", {"fault": "stall_ws"})
        with self.cond:
            before = (self.heartbeats, len(self.ticks))
        self.control("price", {"symbol": "NSE:NIFTY 50", "ltp": 24410.0})
        time.sleep(1.6)  # an absence cannot be awaited: give two heartbeat intervals
        with self.cond:
            r["during_stall"] = {
                "heartbeats": self.heartbeats - before[0],
                "ticks": len(self.ticks) - before[1],
            }
        self.control("fault", {"fault": "clear", "kind": "stall_ws"})
        mark = len(self.ticks)
        self.control("price", {"symbol": "NSE:NIFTY 50", "ltp": 24420.0})
        self.tick_after(mark, NIFTY, "full", 24420.0)
        r["closes_after_stall"] = self.closes

        r["step"] = "drop"
        mark = len(self.ticks)
        dropped = self.control("fault", {"fault": "drop_ws"})["dropped"]
        r["dropped"] = dropped
        self.wait(lambda: self.closes >= 1 and self.connects >= 2, "reconnect after drop")
        # KiteTicker resubscribes on reconnect; the server answers with a snapshot at once.
        self.tick_after(mark, NIFTY, "full")
        r["connects_after_drop"] = self.connects

        r["step"] = "expire tokens"
        closes = self.closes
        errors = len(self.errors)
        self.control("fault", {"fault": "expire_tokens", "broker": "kite"})
        self.wait(lambda: self.closes > closes, "close after token expiry")
        self.wait(lambda: len(self.errors) > errors, "refused reconnect after token expiry")
        r["errors_after_expiry"] = self.errors[errors:]
        r["connects_after_expiry"] = self.connects
        self.kws.stop_retry()
        r["step"] = "done"


def main() -> int:
    info = json.loads(sys.argv[1])
    probe = Probe(info, sys.argv[2])
    code = 0
    try:
        probe.run()
    except Exception as exc:  # report the step that failed to the test
        probe.result["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    sys.stdout.write(json.dumps(probe.result, default=str) + "\n")
    sys.stdout.flush()
    os._exit(code)  # the reactor thread would keep the process alive


if __name__ == "__main__":
    sys.exit(main())
