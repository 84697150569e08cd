"""The update_disorder fault: the ticker's order updates repeated and out of order (final first, then the
older states, then the final one again), read off the real socket as a client reads them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import requests
from kiteconnect import KiteConnect
from websockets.sync.client import ClientConnection, connect

from trailstop_gui.simulator.runner import SimulatorHandle


def _order_updates(socket: ClientConnection, order_id: str, count: int) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    while len(seen) < count:
        message = socket.recv(timeout=5)
        if isinstance(message, str):
            payload: dict[str, Any] = json.loads(message)
            data = payload.get("data") or {}
            if payload.get("type") == "order" and data.get("order_id") == order_id:
                seen.append((data["status"], data["filled_quantity"]))
    return seen


def _ticker(simulator: SimulatorHandle, kite_client: KiteConnect) -> ClientConnection:
    kite = simulator.info["kite"]
    query = urlencode({"api_key": kite["api_key"], "access_token": kite_client.access_token})
    return connect(f"{kite['ws_url']}?{query}", additional_headers={"X-Kite-Version": "3"})


def _buy(kite_client: KiteConnect) -> str:
    return str(
        kite_client.place_order(
            variety="regular",
            exchange="NSE",
            tradingsymbol="ITC",
            transaction_type="BUY",
            quantity=2,
            product="MIS",
            order_type="MARKET",
            market_protection=-1,
        )
    )


def test_final_update_first_then_the_older_ones_then_the_final_again(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    with _ticker(simulator, kite_client) as socket:
        in_order = _order_updates(socket, _buy(kite_client), 2)
        assert in_order[-1] == ("COMPLETE", 2) and in_order[0][0] != "COMPLETE"
        requests.post(f"{simulator.url}/_sim/fault", json={"fault": "update_disorder"}, timeout=5)
        order_id = _buy(kite_client)
        updates = _order_updates(socket, order_id, len(in_order) + 1)
    assert updates[0] == ("COMPLETE", 2) and updates[-1] == ("COMPLETE", 2)
    assert [u for u in updates[1:-1]] == in_order[:-1]  # OPEN (filled 0) after COMPLETE


def test_cleared_it_streams_in_order_again(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    requests.post(f"{simulator.url}/_sim/fault", json={"fault": "update_disorder"}, timeout=5)
    requests.post(
        f"{simulator.url}/_sim/fault", json={"fault": "clear", "kind": "update_disorder"}, timeout=5
    )
    with _ticker(simulator, kite_client) as socket:
        updates = _order_updates(socket, _buy(kite_client), 2)
    assert updates[-1] == ("COMPLETE", 2) and updates[0][0] != "COMPLETE"
