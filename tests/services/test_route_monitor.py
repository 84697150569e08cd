"""The route monitor: stored routes reach the sessions, a check runs at login, a failing route with live
protections raises an urgent alert. Against the simulator (which registers 127.0.0.2) and a real proxy."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from tests.conftest import MemoryKeyring
from tests.factories import protection, sim_account, sim_session
from tests.proxies import ROUTE_ADDRESS, HttpProxy, Socks5Proxy, loopback_alias_works
from tests.services.brokers.test_kite_adapter_sim import order_request
from tests.services.brokers.test_order_route_sim import upstox_buy
from tests.services.conftest import control
from trailstop_gui.models.store import AccountRecord, ProtectionStore
from trailstop_gui.services.brokers.base import OrderRequest
from trailstop_gui.services.brokers.errors import UnregisteredIPError
from trailstop_gui.services.brokers.order_route import OrderRoute, RouteCheck, RouteState, parse_route
from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.services.route_monitor import RECHECK_GAP, RouteMonitor, load_route, save_route
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator

pytestmark = pytest.mark.skipif(not loopback_alias_works(), reason="needs 127.0.0.2 (Linux loopback)")


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=2, auto=False, fill_delay=0.0, registered_ips=(ROUTE_ADDRESS,))
    yield handle
    handle.stop()


@pytest.fixture
def rig(tmp_path: Path, simulator: SimulatorHandle) -> Iterator[Any]:
    store = ProtectionStore(tmp_path / "t.db")
    secrets = SecretStore()
    notifier = Notifier()
    routes = RouteMonitor(store, secrets, notifier)
    yield store, secrets, notifier, routes
    routes.shutdown()
    store.close()


def session_for(rig: Any, sim: SimulatorHandle, broker: str) -> tuple[AccountSession, AccountRecord]:
    store, secrets, _notifier, routes = rig
    session = sim_session(store, sim, broker, label=f"{broker} sim", login=False, secrets=secrets)
    routes.attach(session)
    return session, session.account


def login(qtbot: QtBot, routes: RouteMonitor, session: AccountSession, sim: SimulatorHandle) -> Any:
    section = sim.info[session.account.broker]
    with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
        session.login_with_password(section["user_id"], section["password"])
    account_id, check = blocker.args
    assert account_id == session.account_id
    return check


def buy(broker: str) -> OrderRequest:
    return order_request(tag="entry1") if broker == "kite" else upstox_buy()


def live_protection(store: ProtectionStore, account_id: int, symbol: str = "INFY") -> int:
    return protection(store, account_id, quantity=1, entry_price=100.0, symbol=symbol).id


@pytest.mark.parametrize("broker", ["kite", "upstox"])
def test_a_direct_route_is_refused_at_login_and_warns_for_live_protections(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle, broker: str
) -> None:
    store, _secrets, notifier, routes = rig
    session, account = session_for(rig, simulator, broker)
    live_protection(store, account.id)
    alerts: list[Alert] = []
    notifier.alerted.connect(alerts.append)
    check = login(qtbot, routes, session, simulator)
    assert check.state is RouteState.REFUSED
    name = "Zerodha" if broker == "kite" else "Upstox"
    assert f"orders from this IP are refused by {name}: register it or set an order route" in check.message
    route_alerts = [a for a in alerts if a.kind is AlertKind.ROUTE_FAILED]
    assert len(route_alerts) == 1 and route_alerts[0].urgent
    assert "INFY" in route_alerts[0].message and route_alerts[0].account_id == account.id


def test_a_stored_route_is_applied_and_checked_ok(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle, memory_keyring: MemoryKeyring
) -> None:
    store, secrets, notifier, routes = rig
    with HttpProxy(credentials=("trader", "pa55-word-long")) as proxy:
        account = sim_account(store, simulator, "kite", "kite sim")
        route = parse_route(f"http://trader@{ROUTE_ADDRESS}:{proxy.port}")
        save_route(store, secrets, account.id, route, "pa55-word-long")
        # Stored as a setting without the password; the password is in the keyring only.
        assert store.get_setting(f"order_route.{account.id}") == route.as_setting()
        assert "pa55-word-long" not in str(store.get_setting(f"order_route.{account.id}"))
        assert "pa55-word-long" in memory_keyring.passwords.values()
        secrets.set(account.id, "api_secret", simulator.info["kite"]["api_secret"])
        session = AccountSession(account, secrets, Endpoints.for_simulator(simulator.info, "kite"))
        routes.attach(session)
        assert session.order_route == route
        alerts: list[Alert] = []
        notifier.alerted.connect(alerts.append)
        live_protection(store, account.id)
        check = login(qtbot, routes, session, simulator)
        assert check.state is RouteState.OK, check
        assert proxy.tunnels >= 1
        assert not [a for a in alerts if a.kind is AlertKind.ROUTE_FAILED]


def test_changing_the_route_rechecks_and_a_new_live_protection_is_warned_about(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle
) -> None:
    store, _secrets, notifier, routes = rig
    session, account = session_for(rig, simulator, "upstox")
    assert login(qtbot, routes, session, simulator).state is RouteState.REFUSED  # nothing live: no alert
    alerts: list[Alert] = []
    notifier.alerted.connect(alerts.append)
    from PySide6.QtCore import QObject, Signal

    class Changes(QObject):
        changed = Signal(int)

    changes = Changes()
    routes.watch(changes.changed)
    pid = live_protection(store, account.id, "TCS")
    changes.changed.emit(pid)
    changes.changed.emit(pid)  # warned once per protection
    assert [a.kind for a in alerts] == [AlertKind.ROUTE_FAILED] and "TCS" in alerts[0].message
    with Socks5Proxy() as proxy:
        with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
            routes.set_route(account.id, parse_route(proxy.url))
        assert blocker.args[1].state is RouteState.OK
        assert blocker.args[1].registered_ips == (ROUTE_ADDRESS,)
    assert load_route(store, account.id) == parse_route(proxy.url)
    with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
        routes.check(account.id)  # the proxy is gone now
    assert blocker.args[1].state is RouteState.UNREACHABLE
    routes.set_route(account.id, OrderRoute())
    assert session.order_route.is_direct


def test_a_login_still_valid_at_start_is_checked_at_once(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle
) -> None:
    store, secrets, _notifier, routes = rig
    session, account = session_for(rig, simulator, "kite")
    login(qtbot, routes, session, simulator)
    # The next start of the app: a new session reads the token from the keyring; no login happens.
    restarted = AccountSession(account, secrets, Endpoints.for_simulator(simulator.info, "kite"))
    assert restarted.has_token()
    with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
        routes.attach(restarted)
    assert blocker.args[0] == account.id and blocker.args[1].state is RouteState.REFUSED


@pytest.mark.parametrize("broker", ["kite", "upstox"])
def test_a_refused_order_call_marks_the_route_refused_rechecks_it_and_an_accepted_one_clears_it(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle, broker: str
) -> None:
    # The check passed at login; the registered IP moved later in the day: the next order call (an exit,
    # a safety stop) is the first to know, and the account bar, the rows and the tray must show it.
    store, _secrets, notifier, routes = rig
    session, account = session_for(rig, simulator, broker)
    control(simulator, "ips", {"broker": broker, "ips": ["127.0.0.1"]})
    assert login(qtbot, routes, session, simulator).state is RouteState.OK
    live_protection(store, account.id)
    alerts: list[Alert] = []
    notifier.alerted.connect(alerts.append)
    control(simulator, "ips", {"broker": broker, "ips": [ROUTE_ADDRESS]})
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    name = "Zerodha" if broker == "kite" else "Upstox"
    refused = f"orders from this IP are refused by {name}: register it or set an order route"
    answers: list[tuple[int, Any]] = []
    routes.route_checked.connect(lambda aid, check: answers.append((aid, check)))
    restored: list[int] = []
    routes.route_restored.connect(restored.append)
    with ThreadPoolExecutor(1) as pool:  # order calls come from the exit and safety threads
        for _attempt in range(3):
            with pytest.raises(UnregisteredIPError):
                pool.submit(session.broker.place_order, buy(broker)).result()
        # Marked at once, then the re-check (one, however many refusals) says the same.
        qtbot.waitUntil(lambda: len(answers) == 2, timeout=10_000)
        assert [(aid, check.state) for aid, check in answers] == [(account.id, RouteState.REFUSED)] * 2
        assert refused in answers[0][1].message and "an order was refused" in answers[0][1].message
        assert routes.checks[account.id].state is RouteState.REFUSED
        assert restored == []
        route_alerts = [a for a in alerts if a.kind is AlertKind.ROUTE_FAILED]
        assert len(route_alerts) == 1 and "INFY" in route_alerts[0].message
        assert refused in route_alerts[0].message
        control(simulator, "ips", {"broker": broker, "ips": ["127.0.0.1"]})  # registered again
        with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
            pool.submit(session.broker.place_order, buy(broker)).result()
    assert blocker.args[0] == account.id and blocker.args[1].state is RouteState.OK
    assert f"{name} accepted an order sent from this machine" == blocker.args[1].message
    assert routes.checks[account.id].state is RouteState.OK
    assert len(answers) == 3  # a working route is not reported again on every accepted order
    assert restored == [account.id]  # the runtime reconciles it: held-back exits go out at once


def test_a_proxy_route_that_dies_later_is_found_by_the_periodic_check_while_protections_are_live(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle
) -> None:
    store, _secrets, notifier, routes = rig
    assert routes.periodic.isActive() and routes.periodic.interval() == 5 * 60_000
    session, account = session_for(rig, simulator, "kite")
    with Socks5Proxy() as proxy:
        routes.set_route(account.id, parse_route(proxy.url))
        assert login(qtbot, routes, session, simulator).state is RouteState.OK
        proxy.pause()  # the SSH tunnel died an hour after the check
        assert routes.wait(5000)
        routes.check_due()
        assert not routes.calls.busy  # nothing live on the account: nothing to check for
        live_protection(store, account.id)
        alerts: list[Alert] = []
        notifier.alerted.connect(alerts.append)
        with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
            routes.check_due()
        assert blocker.args[1].state is RouteState.UNREACHABLE
        assert [a.kind for a in alerts] == [AlertKind.ROUTE_FAILED]
        proxy.resume()  # the trader restarted the tunnel: the next periodic check turns it green
        with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
            routes.check_due()
        assert blocker.args[1].state is RouteState.OK


def test_a_direct_route_is_checked_again_periodically_only_while_it_fails(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle
) -> None:
    store, _secrets, _notifier, routes = rig
    session, account = session_for(rig, simulator, "upstox")
    control(simulator, "ips", {"broker": "upstox", "ips": ["127.0.0.1"]})
    assert login(qtbot, routes, session, simulator).state is RouteState.OK
    live_protection(store, account.id)
    assert routes.wait(5000)
    routes.check_due()
    assert not routes.calls.busy  # a direct route that works needs no periodic probe
    control(simulator, "ips", {"broker": "upstox", "ips": [ROUTE_ADDRESS]})
    with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
        routes.check(account.id)
    assert blocker.args[1].state is RouteState.REFUSED
    control(simulator, "ips", {"broker": "upstox", "ips": ["127.0.0.1"]})  # the trader registered it
    with qtbot.waitSignal(routes.route_checked, timeout=10_000) as blocker:
        routes.check_due()
    assert blocker.args[1].state is RouteState.OK


def test_refused_order_calls_recheck_the_route_at_most_once_per_gap(
    qtbot: QtBot, rig: Any, simulator: SimulatorHandle
) -> None:
    store, secrets, notifier, _routes = rig
    now = [1000.0]
    routes = RouteMonitor(store, secrets, notifier, clock=lambda: now[0])
    try:
        session = sim_session(store, simulator, "kite", label="kite sim", login=False, secrets=secrets)
        routes.attach(session)
        assert login(qtbot, routes, session, simulator).state is RouteState.REFUSED
        assert routes.wait(5000)
        checked: list[float] = []

        def probe() -> RouteCheck:
            checked.append(now[0])
            return RouteCheck(RouteState.REFUSED, "refused (probe)")

        session.check_order_route = probe  # type: ignore[method-assign]
        refusal = RouteCheck(RouteState.REFUSED, "refused (an order was refused)")
        for _attempt in range(4):  # an exit's attempts, seconds apart
            session.order_route_answered.emit(session.account_id, refusal)
            now[0] += 5.0
        assert routes.wait(5000) and len(checked) == 1
        now[0] += RECHECK_GAP
        session.order_route_answered.emit(session.account_id, refusal)  # the next reconcile's exit job
        assert routes.wait(5000) and len(checked) == 2
    finally:
        routes.shutdown()
