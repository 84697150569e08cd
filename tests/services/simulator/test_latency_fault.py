"""The latency fault: a fixed round trip on every broker request and half of it on every feed frame."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from websockets.sync.client import ClientConnection, connect

from trailstop_gui.services.brokers.kite_feed import decode_message
from trailstop_gui.simulator.runner import SimulatorHandle

LATENCY = 0.2  # large beside loopback's fraction of a millisecond, so the bounds below are not flaky
INFY = 408065


def _post(handle: SimulatorHandle, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{handle.url}/_sim/{path}", json=body, headers=handle.control_headers, timeout=5)


def _fault(handle: SimulatorHandle, **spec: Any) -> dict[str, Any]:
    response = _post(handle, "fault", spec)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _price(handle: SimulatorHandle, ltp: float) -> float:
    quote = {"symbol": "NSE:INFY", "ltp": ltp, "bid": ltp - 0.05, "ask": ltp + 0.05}
    response = _post(handle, "price", quote)
    assert response.status_code == 200, response.text
    return float(response.json()["pushed_at"])


def _ticker_url(handle: SimulatorHandle, kite: KiteConnect) -> str:
    info = handle.info["kite"]
    return f"{info['ws_url']}?api_key={info['api_key']}&access_token={kite.access_token}"


def _next_ltp(ws: ClientConnection) -> tuple[float, float]:
    """The next INFY price on the socket and the wall-clock time it arrived."""
    while True:
        frame = ws.recv(timeout=5)
        arrived = time.time()
        if isinstance(frame, bytes):
            ticks = [t for t in decode_message(frame) if t.instrument == INFY]
            if ticks:
                return ticks[-1].ltp, arrived


def test_every_request_pays_the_round_trip(simulator: SimulatorHandle, kite_client: KiteConnect) -> None:
    active = _fault(simulator, fault="latency", seconds=LATENCY)["active"]
    assert active["latency"] == LATENCY
    started = time.monotonic()
    kite_client.positions()
    assert time.monotonic() - started >= LATENCY
    # The order reaches the broker half a round trip after it was sent.
    sent = time.time()
    kite_client.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=1,
        product="MIS",
        order_type="LIMIT",
        price=500.0,
        tag="late1",
    )
    orders = requests.get(f"{simulator.url}/_sim/orders", headers=simulator.control_headers, timeout=5).json()
    (order,) = [o for o in orders if o["tag"] == "late1"]
    assert order["received_at"] - sent >= LATENCY / 2
    # The control API is the test's own line to the simulator, never delayed.
    started = time.monotonic()
    requests.get(f"{simulator.url}/_sim/info", headers=simulator.control_headers, timeout=5)
    assert time.monotonic() - started < LATENCY / 2


def test_an_injected_error_pays_the_round_trip_too(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    _fault(simulator, fault="latency", seconds=LATENCY)
    _fault(simulator, fault="http_error", status=503, path="/user/profile")
    started = time.monotonic()
    with pytest.raises(Exception, match="503|Simulated"):
        kite_client.profile()
    assert time.monotonic() - started >= LATENCY


def test_a_refusal_the_broker_raises_pays_the_round_trip_too(simulator: SimulatorHandle) -> None:
    """An answer raised by the handler (here a 404 for a path no API has) comes back the same way."""
    _fault(simulator, fault="latency", seconds=LATENCY)
    started = time.monotonic()
    response = requests.get(f"{simulator.url}/no-such-path", timeout=5)
    assert response.status_code == 404
    assert time.monotonic() - started >= LATENCY


def test_clearing_the_fault_makes_the_line_fast_again(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    _fault(simulator, fault="latency", seconds=LATENCY)
    _fault(simulator, fault="clear", kind="latency")
    started = time.monotonic()
    kite_client.positions()
    assert time.monotonic() - started < LATENCY / 2
    assert _fault(simulator, fault="latency", seconds=0)["active"]["latency"] == 0


def test_feed_frames_arrive_half_a_round_trip_late_in_order_and_not_rate_limited(
    simulator: SimulatorHandle, kite_client: KiteConnect
) -> None:
    with connect(_ticker_url(simulator, kite_client)) as ws:
        ws.send(json.dumps({"a": "subscribe", "v": [INFY]}))
        ws.send(json.dumps({"a": "mode", "v": ["ltp", [INFY]]}))
        pushed = _price(simulator, 1510.0)
        ltp, arrived = _next_ltp(ws)
        while ltp != 1510.0:  # the snapshots on subscribe and on the mode change come first
            ltp, arrived = _next_ltp(ws)
        assert arrived - pushed < LATENCY / 2  # no fault yet: loopback speed

        _fault(simulator, fault="latency", seconds=LATENCY)
        pushed = _price(simulator, 1520.0)
        ltp, arrived = _next_ltp(ws)
        assert ltp == 1520.0 and arrived - pushed >= LATENCY / 2

        # A delay, not a rate: ten frames sent at once all arrive one delay later, in the order sent.
        first = _price(simulator, 1530.0)
        for n in range(1, 10):
            _price(simulator, 1530.0 + n)
        seen = []
        last = 0.0
        while len(seen) < 10:
            ltp, last = _next_ltp(ws)
            seen.append(ltp)
        assert seen == [1530.0 + n for n in range(10)]
        assert last - first < 10 * LATENCY / 2


@pytest.mark.parametrize(
    "spec",
    [
        {"fault": "latency"},
        {"fault": "latency", "seconds": -0.1},
        {"fault": "latency", "seconds": 11},
        {"fault": "latency", "seconds": "25ms"},
    ],
)
def test_bad_latency_specs_are_refused_with_the_field_named(simulator: SimulatorHandle, spec: Any) -> None:
    response = _post(simulator, "fault", spec)
    assert response.status_code == 400
    assert "seconds" in response.text
