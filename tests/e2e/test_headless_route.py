"""The real headless app reads the order route the window stored, and its exits take it: a real proxy on
127.0.0.2, the only IP the simulator accepts orders from. Direct, the refusal is named and warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_headless import App, buy_outside, control, db_rows, exits_with_tags
from tests.proxies import ROUTE_ADDRESS, HttpProxy, loopback_alias_works
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.runtime import _sim_account
from trailstop_gui.services.brokers.order_route import OrderRoute, parse_route
from trailstop_gui.simulator.runner import SimulatorHandle

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not loopback_alias_works(), reason="needs 127.0.0.2 (Linux loopback)"),
]


def store_route(data_dir: Path, sim: SimulatorHandle, route: OrderRoute) -> None:
    """What the window's Order route dialog leaves in the data folder, before --headless starts."""
    store = ProtectionStore(data_dir / "trailstop.db")
    try:
        account = _sim_account(store, sim.info, "kite", "live")
        store.set_setting(f"order_route.{account.id}", route.as_setting())
    finally:
        store.close()


def position_then_register(sim: SimulatorHandle) -> None:
    sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    buy_outside(sim)  # the trader's own order, before the IP rule is switched on
    control(sim, "ips", {"ips": [ROUTE_ADDRESS]})


def test_headless_exits_through_the_stored_route(simulator: SimulatorHandle, tmp_path: Path) -> None:
    position_then_register(simulator)
    with HttpProxy() as proxy:
        store_route(tmp_path, simulator, parse_route(proxy.url))
        app = App(simulator, tmp_path, "--auto-protect", "percent:2")
        try:
            app.wait_for(f"order route HTTP {ROUTE_ADDRESS}:{proxy.port}")
            app.wait_for("order route check: ok")
            app.wait_for("auto-protected NSE INFY x5")
            simulator.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
            app.wait_for("Exit filled")
            tags = {row[0] for row in db_rows(tmp_path, "SELECT exit_tag FROM protection")}
            assert len(exits_with_tags(simulator, tags)) == 1
            assert proxy.tunnels >= 1
            assert db_rows(tmp_path, "SELECT status FROM protection") == [("CLOSED",)]
        finally:
            assert app.stop() == 0


def test_headless_direct_from_an_unregistered_ip_names_the_refusal(
    simulator: SimulatorHandle,
    tmp_path: Path,
) -> None:
    position_then_register(simulator)
    app = App(simulator, tmp_path, "--auto-protect", "percent:2")
    try:
        app.wait_for("order route check: refused")
        app.wait_for("auto-protected NSE INFY x5")
        line = app.wait_for("Order route failed")
        alert = "orders from this IP are refused by Zerodha: register it or set an order route"
        assert alert in app.lines[line]
        simulator.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
        # The exit attempt itself, refused with the named error (logged by the executor).
        app.wait_for("orders from this IP are refused by Zerodha", after=line + 1)
        tags = {row[0] for row in db_rows(tmp_path, "SELECT exit_tag FROM protection")}
        assert exits_with_tags(simulator, tags) == []  # refused: nothing reached the exchange
        assert db_rows(tmp_path, "SELECT status FROM protection") != [("CLOSED",)]
    finally:
        app.stop()


def test_headless_exit_refused_after_the_ip_moved_is_named_shown_and_fills_once_it_is_back(
    simulator: SimulatorHandle,
    tmp_path: Path,
) -> None:
    # The check passes at start (this machine's IP is registered); later in the day the registered IP
    # moves elsewhere, and the stop fires: the exit's own alert names the refusal at once, the route is
    # marked refused, and the exit keeps being retried until the IP is registered again: then it fills, once.
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    buy_outside(simulator)
    control(simulator, "ips", {"ips": ["127.0.0.1"]})
    app = App(simulator, tmp_path, "--auto-protect", "percent:2")
    try:
        app.wait_for("order route check: ok")
        start = app.wait_for("auto-protected NSE INFY x5")
        control(simulator, "ips", {"ips": [ROUTE_ADDRESS]})  # the IP changed since the check
        simulator.set_price("NSE:INFY", 1400.0, bid=1399.95, ask=1400.05)
        refused = "orders from this IP are refused by Zerodha: register it or set an order route"
        named = app.wait_for(f"Exit delayed: INFY: the exit was not sent: {refused}", after=start)
        marked = app.wait_for("order route refused mid-session", after=start)
        assert refused in app.lines[marked]
        warned = app.wait_for("Order route failed", after=start)
        assert refused in app.lines[warned] and "(INFY)" in app.lines[warned]
        tags = {row[0] for row in db_rows(tmp_path, "SELECT exit_tag FROM protection")}
        assert exits_with_tags(simulator, tags) == []  # refused: nothing reached the exchange
        assert db_rows(tmp_path, "SELECT status FROM protection") == [("TRIGGERED",)]
        app.wait_for("exit attempt 3 failed", after=named)  # still retried, with no alert per attempt
        control(simulator, "ips", {"ips": ["127.0.0.1"]})  # registered again
        filled = app.wait_for("Exit filled", timeout=45.0, after=named)
        app.wait_for("order route works again", after=named)
        assert len(exits_with_tags(simulator, tags)) == 1
        assert db_rows(tmp_path, "SELECT status FROM protection") == [("CLOSED",)]
        assert sum(refused in line for line in app.lines[start:filled] if "Exit delayed" in line) == 1
    finally:
        assert app.stop() == 0
