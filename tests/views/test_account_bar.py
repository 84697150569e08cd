"""AccountBar: one chip per account with its broker, user and feed state, coloured, with a tooltip."""

from __future__ import annotations

from types import SimpleNamespace

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from trailstop_gui.models.store import AccountRecord
from trailstop_gui.services.session import SessionState
from trailstop_gui.views import theme
from trailstop_gui.views.account_bar import AccountBar


def session(account_id: int, broker: str, label: str, user: str, state: SessionState) -> SimpleNamespace:
    account = AccountRecord(account_id, broker, label, user, "key", "http://127.0.0.1/cb", "")
    return SimpleNamespace(account=account, account_id=account_id, state=state)


def test_chips_show_broker_user_and_state(qtbot: QtBot) -> None:
    bar = AccountBar()
    qtbot.addWidget(bar)
    bar.set_sessions(
        [
            session(1, "kite", "Zerodha", "AB1234", SessionState.LIVE),
            session(2, "upstox", "upstox", "UP9876", SessionState.LOGIN_NEEDED),
        ]
    )
    kite, upstox = bar.chip(1), bar.chip(2)
    assert kite is not None and upstox is not None
    assert kite.text() == "Zerodha · AB1234 · Live"
    assert upstox.text() == "Upstox · UP9876 · Login needed – log in"  # the label "upstox" reads as Upstox
    assert "Prices are streaming" in kite.toolTip() and "Zerodha" in kite.toolTip()
    assert "log in again" in upstox.toolTip()
    assert upstox.font().bold() and not kite.font().bold()
    assert bar.troubled() == ["Upstox UP9876: Login needed"]


def test_state_changes_recolour_and_signal(qtbot: QtBot) -> None:
    bar = AccountBar()
    qtbot.addWidget(bar)
    bar.set_sessions([session(1, "kite", "Zerodha", "AB1234", SessionState.LIVE)])
    with qtbot.waitSignal(bar.states_changed):
        bar.set_state(1, "reconnecting")
    chip = bar.chip(1)
    assert chip is not None and chip.text().endswith("Reconnecting")
    assert theme.colors().reconnecting.name() in chip.styleSheet()
    assert bar.states() == {1: "reconnecting"}


def test_click_on_an_account_needing_login_asks_for_it(qtbot: QtBot) -> None:
    bar = AccountBar()
    qtbot.addWidget(bar)
    bar.set_sessions(
        [
            session(1, "kite", "Zerodha", "AB1234", SessionState.LIVE),
            session(2, "kite", "Zerodha 2", "CD5678", SessionState.LOGIN_NEEDED),
        ]
    )
    requested: list[int] = []
    bar.login_requested.connect(requested.append)
    qtbot.mouseClick(bar.chip(1), Qt.MouseButton.LeftButton)  # type: ignore[arg-type]
    qtbot.mouseClick(bar.chip(2), Qt.MouseButton.LeftButton)  # type: ignore[arg-type]
    assert requested == [2]
    with qtbot.waitSignal(bar.accounts_requested):
        qtbot.mouseClick(bar.manage, Qt.MouseButton.LeftButton)


def test_no_account_invites_to_add_one(qtbot: QtBot) -> None:
    bar = AccountBar()
    qtbot.addWidget(bar)
    bar.set_sessions([])
    bar.show()
    assert bar.manage.text() == "&Add account…"
    assert bar._empty.isVisible()


def test_a_failing_order_route_shows_on_the_chip_and_in_the_tray_reasons(qtbot: QtBot) -> None:
    bar = AccountBar()
    qtbot.addWidget(bar)
    bar.set_sessions([session(1, "kite", "Zerodha", "AB1234", SessionState.LIVE)])
    chip = bar.chip(1)
    assert chip is not None
    with qtbot.waitSignal(bar.states_changed):
        bar.set_route(
            1, "refused", "orders from this IP are refused by Zerodha: register it or set an order route"
        )
    assert chip.text() == "Zerodha · AB1234 · Live · Orders refused: IP not registered"
    assert chip.font().bold()
    assert "register it or set an order route" in chip.toolTip()
    assert bar.troubled() == ["Zerodha AB1234: Orders refused: IP not registered"]
    # Rebuilt chips (an account added) keep the route's state.
    bar.set_sessions([session(1, "kite", "Zerodha", "AB1234", SessionState.LIVE)])
    rebuilt = bar.chip(1)
    assert rebuilt is not None and rebuilt.route_state == "refused"
    bar.set_route(1, "ok", "Zerodha accepts orders sent through SOCKS5 127.0.0.1:1080")
    assert rebuilt.text() == "Zerodha · AB1234 · Live" and not rebuilt.font().bold()
    assert "Orders go through" in rebuilt.toolTip()
    assert bar.troubled() == []


def test_an_account_without_a_user_id_is_named_once(qtbot: QtBot) -> None:
    bar = AccountBar()
    qtbot.addWidget(bar)
    bar.set_sessions([session(1, "kite", "My Zerodha", "", SessionState.LOGGED_OUT)])
    chip = bar.chip(1)
    assert chip is not None and chip.text().count("My Zerodha") == 1
    assert chip.text().startswith("My Zerodha · ")
