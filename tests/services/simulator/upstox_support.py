"""Helpers for the Upstox facade tests: log in through the dialog and build official SDK clients."""

from __future__ import annotations

import json
from typing import Any

import requests
import upstox_client

from trailstop_gui.simulator.runner import SimulatorHandle
from trailstop_gui.simulator.upstox_login import upstox_code

INFY_KEY = "NSE_EQ|INE009A01021"
SBIN_KEY = "NSE_EQ|INE062A01020"
ITC_KEY = "NSE_EQ|INE154A01025"
NIFTY_KEY = "NSE_INDEX|Nifty 50"


def sdk_client(handle: SimulatorHandle, access_token: str = "") -> Any:
    """An ``upstox_client.ApiClient`` pointed at the simulator.

    ``Configuration()`` hands back a copy of the first instance ever made, whatever its arguments: set
    every attribute this test relies on explicitly, on this copy only.
    """
    config = upstox_client.Configuration()
    config.sandbox = False
    config.host = handle.info["upstox"]["api_root"]
    config.order_host = handle.info["upstox"]["order_root"]
    config.access_token = access_token
    client = upstox_client.ApiClient(config)
    # Every ApiClient starts a thread pool for async_req, which these tests never use.
    client.pool.close()
    client.pool.join()
    return client


def exchange_code(handle: SimulatorHandle, code: str, **overrides: str) -> Any:
    """``LoginApi.token`` with the demo app's credentials (any of them overridden)."""
    upstox = handle.info["upstox"]
    fields = {
        "code": code,
        "client_id": upstox["client_id"],
        "client_secret": upstox["client_secret"],
        "redirect_uri": upstox["redirect_uri"],
        "grant_type": "authorization_code",
    }
    fields.update(overrides)
    return upstox_client.LoginApi(sdk_client(handle)).token("2.0", **fields)


def login(handle: SimulatorHandle) -> str:
    """A fresh access token for the demo user, through the HTML dialog and the SDK's token exchange."""
    return str(exchange_code(handle, upstox_code(handle.info)).access_token)


def error_of(exc: upstox_client.rest.ApiException) -> dict[str, Any]:
    """The first entry of an Upstox error envelope carried by an SDK exception."""
    body = json.loads(exc.body)
    assert body["status"] == "error", body
    problem: dict[str, Any] = body["errors"][0]
    return problem


def fault(handle: SimulatorHandle, **spec: Any) -> dict[str, Any]:
    response = requests.post(f"{handle.url}/_sim/fault", json=spec, headers=handle.control_headers, timeout=5)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}
