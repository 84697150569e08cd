"""The main window: its parts and menus, Exit all and Quit asking first, the tray on close, the status bar,
the remembered geometry and splitters, and the colour scheme followed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QLabel, QWidget
from pytestqt.qtbot import QtBot

from tests import factories
from trailstop_gui.models.domain import Product, Protection, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.feed_worker import Quote
from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.session import SessionState
from trailstop_gui.settings import Settings, save_settings
from trailstop_gui.views import theme
from trailstop_gui.views.main_window import CLOSE_HINT_KEY, MainWindow
from trailstop_gui.views.positions_model import Column, RowState
from trailstop_gui.views.tray import TrayController


def protect(store: ProtectionStore, symbol: str = "INFY", instrument: int = 408065) -> Protection:
    account = (store.accounts() or [store.add_account("kite", "Zerodha", user_id="AB1234")])[0]
    return factories.protection(
        store,
        account.id,
        quantity=5,
        side=Side.SELL,
        product=Product.CNC,
        rule=TrailRule.points(5),
        symbol=symbol,
        instrument=instrument,
    )


class Rig:
    def __init__(
        self, qtbot: QtBot, store: ProtectionStore, tmp_path: Path, tray_available: bool = False
    ) -> None:
        self.qtbot = qtbot
        self.store = store
        self.notifier = Notifier()
        self.service = ProtectionService(store, self.notifier)
        self.settings_path = str(tmp_path / "ui.ini")
        self.tray_available = tray_available
        self.questions: list[tuple[str, str, str]] = []
        self.answer = True
        self.window = self.open()

    def open(self) -> MainWindow:
        settings = QSettings(self.settings_path, QSettings.Format.IniFormat)
        tray = TrayController(self.notifier, available=False)
        tray.available = self.tray_available  # no real tray offscreen: the window's logic is what we test
        window = MainWindow(
            self.service, self.store, self.notifier, "/data/here", settings=settings, tray=tray
        )
        window.confirm = self.confirm
        self.qtbot.addWidget(window)
        window.show()
        self.qtbot.waitExposed(window)
        return window

    def confirm(self, title: str, text: str, accept: str) -> bool:
        self.questions.append((title, text, accept))
        return self.answer

    def close(self) -> None:
        self.window.stop()


@pytest.fixture
def rig(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(qtbot, store, tmp_path)
    yield r
    r.close()


def test_window_shows_protections_menus_and_toolbar(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path
) -> None:
    p = protect(store)
    r = Rig(qtbot, store, tmp_path)
    w = r.window
    assert w.windowTitle() == "TrailStop"
    assert w.positions.proxy.rowCount() == 1 and w.model.row_for(p.id) is not None
    menus = [a.text() for a in w.menuBar().actions()]
    assert menus == ["&File", "&Positions", "&View", "&Help"]
    toolbar = [a.text() for a in w.toolbar.actions() if not a.isSeparator()]
    assert toolbar == ["E&xit all…", "&Journal", "&Accounts…", "&Settings…"]
    assert w.act_exit_all.shortcut().toString() == "Ctrl+Shift+X"
    assert w.act_journal.shortcut().toString() == "Ctrl+J"
    assert not w.act_quit.shortcut().isEmpty()
    # Its account has no session this run (no account is loaded): nothing watches it, and the window says so.
    assert w.counts_label.text() == "1 NOT WATCHED"
    assert w.tick_label.text() == "Zerodha: account not loaded this run"  # not "No prices yet"
    assert not w.order_area.isVisible()  # no empty column before the order panel arrives
    r.close()


def test_exit_all_names_how_many_and_asks(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    protect(rig.store, "INFY")
    protect(rig.store, "TCS", 2953217)
    calls: list[str] = []
    monkeypatch.setattr(rig.service, "exit_all", lambda: calls.append("exit_all") or [1, 2])
    rig.answer = False
    assert rig.window.exit_all() == []
    title, text, accept = rig.questions[-1]
    assert "Exit all 2 protected positions" in text and "INFY, TCS" in text and accept == "Exit all 2"
    assert calls == []
    rig.answer = True
    rig.window.act_exit_all.trigger()
    assert calls == ["exit_all"]


def test_exit_all_keeps_a_long_list_short(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(12):
        protect(rig.store, f"SYM{n:02d}", 1000 + n)
    monkeypatch.setattr(rig.service, "exit_all", lambda: [])
    rig.answer = False
    rig.window.exit_all()
    text = rig.questions[-1][1]
    assert "Exit all 12 protected positions" in text and "SYM07 and 4 more" in text and "SYM08" not in text


def test_exit_all_with_nothing_armed_sends_nothing(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rig.service, "exit_all", lambda: pytest.fail("nothing to exit"))
    assert rig.window.exit_all() == []
    assert rig.questions == []


def test_quit_with_active_protections_asks_first(rig: Rig, qtbot: QtBot) -> None:
    protect(rig.store)
    quits: list[bool] = []
    rig.window.quit_requested.connect(lambda: quits.append(True))
    rig.answer = False
    assert not rig.window.request_quit()
    assert "1 protection is active" in rig.questions[-1][1] and quits == []
    rig.answer = True
    assert rig.window.request_quit()
    assert quits == [True]


def test_quit_with_nothing_active_does_not_ask(rig: Rig) -> None:
    with_signal: list[bool] = []
    rig.window.quit_requested.connect(lambda: with_signal.append(True))
    assert rig.window.request_quit()
    assert rig.questions == [] and with_signal == [True]


def test_closing_keeps_protecting_from_the_tray_and_says_so_once(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path
) -> None:
    protect(store)
    r = Rig(qtbot, store, tmp_path, tray_available=True)
    quits: list[bool] = []
    r.window.quit_requested.connect(lambda: quits.append(True))
    r.window.close()
    assert not r.window.isVisible() and quits == [] and r.questions == []
    assert r.window.tray.last_message is not None
    assert "still protecting" in r.window.tray.last_message[0]
    assert r.window.qsettings.value(CLOSE_HINT_KEY) in (True, "true")
    r.window.tray.last_message = None
    r.window.show_and_raise()
    r.window.close()
    assert r.window.tray.last_message is None  # only the first time
    r.close()


def test_closing_without_a_tray_is_quitting(rig: Rig) -> None:
    protect(rig.store)
    rig.answer = False
    rig.window.close()
    assert rig.window.isVisible()  # the trader said no
    rig.answer = True
    rig.window.close()
    assert not rig.window.isVisible()


def test_close_to_tray_can_be_turned_off(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> None:
    save_settings(store, Settings(close_to_tray=False))
    r = Rig(qtbot, store, tmp_path, tray_available=True)
    quits: list[bool] = []
    r.window.quit_requested.connect(lambda: quits.append(True))
    r.window.close()
    assert quits == [True]
    r.close()


def test_geometry_and_splitters_are_remembered(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> None:
    r = Rig(qtbot, store, tmp_path)
    w = r.window
    w.resize(790, 720)  # within the offscreen screen (800 x 800), or restoring clamps it
    w.right_splitter.setSizes([500, 200])
    w.positions.act_show_closed.setChecked(True)
    qtbot.wait(10)
    before = w.right_splitter.sizes()
    w.save_state()
    r.close()
    w.hide()
    again = r.open()
    assert (again.width(), again.height()) == (790, 720)
    assert again.right_splitter.sizes() == before
    assert again.positions.act_show_closed.isChecked()
    again.stop()


def test_status_bar_shows_the_last_tick_and_counts(rig: Rig, qtbot: QtBot) -> None:
    p = protect(rig.store)
    offline_capable_session(rig, SessionState.LIVE)
    rig.window.positions.reload_all()
    at = time.time()
    rig.service.snapshot_ready.emit(
        {"account_id": p.account_id, "quotes": {408065: Quote(408065, 1490.0, None, None, at)}, "stops": {}}
    )
    expected = f"Last tick {time.strftime('%H:%M:%S', time.localtime(at))}"
    qtbot.waitUntil(lambda: rig.window.tick_label.text() == expected, timeout=2000)
    rig.store.transition(p.id, Status.TRIGGERED, reason="stop")
    rig.service.protection_changed.emit(p.id)
    assert rig.window.counts_label.text() == "1 exiting"


def test_order_entry_goes_in_the_left_area(rig: Rig) -> None:
    panel = QLabel("order form")
    rig.window.set_order_entry(panel)
    assert panel.parent() is rig.window.order_area
    assert rig.window.order_area.isVisible()
    assert rig.window.splitter.sizes()[0] >= 260
    replacement = QWidget()
    rig.window.set_order_entry(replacement)
    assert panel.parent() is None and rig.window.order_entry is replacement


def test_signals_for_the_other_dialogs(rig: Rig, qtbot: QtBot) -> None:
    with qtbot.waitSignal(rig.window.accounts_requested):
        rig.window.act_accounts.trigger()
    with qtbot.waitSignal(rig.window.settings_requested):
        rig.window.act_settings.trigger()
    with qtbot.waitSignal(rig.window.accounts_requested):
        rig.window.account_bar.manage.click()


def test_account_bar_follows_sessions_and_asks_for_login(rig: Rig, qtbot: QtBot) -> None:
    account = rig.store.add_account("kite", "Zerodha", user_id="AB1234")
    fake: Any = SimpleNamespace(account=account, account_id=account.id, state=SessionState.LIVE)
    rig.service.sessions[account.id] = fake
    rig.service.session_state_changed.emit(account.id, "live")
    chip = rig.window.account_bar.chip(account.id)
    assert chip is not None and chip.text().endswith("Live")
    assert not rig.window.tray.attention
    rig.service.session_state_changed.emit(account.id, "login needed")
    assert rig.window.tray.attention and "Login needed" in rig.window.tray.tooltip
    with qtbot.waitSignal(rig.window.login_requested) as blocker:
        qtbot.mouseClick(chip, Qt.MouseButton.LeftButton)
    assert blocker.args == [account.id]


def test_urgent_alerts_show_a_banner_with_login(rig: Rig, qtbot: QtBot) -> None:
    rig.notifier.notify(Alert(AlertKind.INFO, "Logged in", "Zerodha"))
    assert not rig.window.banner.isVisible()
    rig.notifier.notify(Alert(AlertKind.LOGIN_NEEDED, "Login needed", "Zerodha: log in again", None, 7))
    assert rig.window.banner.isVisible() and "Login needed" in rig.window.banner_text.text()
    with qtbot.waitSignal(rig.window.login_requested) as blocker:
        rig.window.banner_login.click()
    assert blocker.args == [7]
    rig.window.banner_dismiss.click()
    assert not rig.window.banner.isVisible()


def test_failed_exit_needs_attention(rig: Rig) -> None:
    p = protect(rig.store)
    rig.window.positions.reload_all()
    for status in (Status.TRIGGERED, Status.EXITING, Status.EXIT_FAILED):
        rig.store.transition(p.id, status)
    rig.service.protection_changed.emit(p.id)
    assert rig.window.tray.attention and "1 exit failed" in rig.window.tray.tooltip
    assert rig.window.counts_label.text() == "1 exit failed"


def test_journal_window_opens(rig: Rig) -> None:
    protect(rig.store)
    journal = rig.window.open_journal()
    assert journal.isVisible() and journal.model.rowCount() == 1
    assert rig.window.open_journal() is journal


def test_follows_a_dark_palette(rig: Rig, qtbot: QtBot) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    original = app.palette()
    try:
        app.setPalette(theme.dark_palette())
        qtbot.waitUntil(lambda: rig.window.model._colors is theme.DARK, timeout=2000)
        app.setPalette(theme.light_palette())
        qtbot.waitUntil(lambda: rig.window.model._colors is theme.LIGHT, timeout=2000)
    finally:
        app.setPalette(original)


def test_follows_the_system_colour_scheme(rig: Rig, qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    original, style = app.palette(), app.style().name()
    hints = app.styleHints()
    try:
        monkeypatch.setattr(theme, "system_prefers_dark", lambda: True)
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)
        qtbot.waitUntil(lambda: rig.window.model._colors is theme.DARK, timeout=2000)
        assert theme.palette_is_dark(app.palette())
        monkeypatch.setattr(theme, "system_prefers_dark", lambda: False)
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
        qtbot.waitUntil(lambda: rig.window.model._colors is theme.LIGHT, timeout=2000)
    finally:
        app.setStyle(style)
        app.setPalette(original)


def offline_capable_session(rig: Rig, state: SessionState) -> Any:
    """An account session as the service sees it; ``broker_if_ready`` is None unless live."""
    account = rig.store.accounts()[0]
    session: Any = SimpleNamespace(
        account=account,
        account_id=account.id,
        label="Zerodha (AB1234)",
        state=state,
        feed=None,
        broker_if_ready=lambda: None,
        mark_login_needed=lambda why="": None,
    )
    rig.service.sessions[account.id] = session
    return session


def test_a_protection_nobody_watches_is_red_everywhere_and_exit_is_not_claimed(
    rig: Rig, qtbot: QtBot
) -> None:
    p = protect(rig.store)
    offline_capable_session(rig, SessionState.LIVE)
    rig.service.session_state_changed.emit(p.account_id, "live")
    window, positions = rig.window, rig.window.positions
    positions.confirm = rig.confirm
    positions.reload_all()
    assert positions.select_pid(p.id)
    row = window.model.row_for(p.id)
    assert row is not None and row.status_text == "Armed"
    rig.service.session_state_changed.emit(p.account_id, "login needed")  # the token expired
    assert row.status_text == "Not watched: login needed"
    status_cell = positions.proxy.index(0, 9)
    assert status_cell.data() == "Not watched: login needed"
    assert status_cell.data(Qt.ItemDataRole.ForegroundRole).color() == theme.colors(window.palette()).failed
    assert "NOT WATCHED" in window.counts_label.text()
    assert window.tray.attention and "NOT watched" in window.tray.tooltip
    window.detail.refresh_now()
    assert "Not watched" in window.detail.status_pill.text()

    messages: list[str] = []
    positions.message_posted.connect(messages.append)
    positions.act_exit.trigger()  # the trader asks for an exit while nothing can send it
    assert rig.questions[-1][0] == "Exit now"
    assert rig.service.executor.wait_idle(5.0)
    qtbot.waitUntil(lambda: bool(messages), timeout=5000)  # the job's signals cross to the GUI thread
    assert not any(m.endswith("exit sent") for m in messages)
    assert "exit NOT sent yet (login needed)" in messages[0]
    assert rig.store.get(p.id).status is Status.TRIGGERED
    row = window.model.row_for(p.id)
    assert row is not None and row.status_text == "Exit not sent: login needed"
    # Stuck, but not frozen: Retry and Remove stay.
    assert positions.act_retry.isEnabled() and positions.act_remove.isEnabled()
    positions.act_retry.trigger()
    assert rig.service.executor.wait_idle(5.0)
    assert rig.store.get(p.id).status is Status.TRIGGERED and rig.store.get(p.id).exit_order_id is None
    positions.act_remove.trigger()
    assert "has not gone out" in rig.questions[-1][1]
    assert rig.store.get(p.id).status is Status.REMOVED
    rig.service.executor.submit(p.id, recover=True)  # a reconnect later finds nothing to send
    assert rig.service.executor.wait_idle(5.0) and rig.store.get(p.id).exit_order_id is None


def test_without_a_tray_an_alert_brings_the_window_forward_and_stays(rig: Rig, qtbot: QtBot) -> None:
    assert not rig.window.tray.available
    rig.window.showMinimized()
    rig.notifier.notify(Alert(AlertKind.STOP_TRIGGERED, "Stop triggered", "INFY: LTP 1469 crossed 1470"))
    assert rig.window.isVisible() and not rig.window.isMinimized()
    assert rig.window.banner.isVisible() and "Stop triggered" in rig.window.banner_text.text()


def test_closing_without_a_tray_says_plainly_that_it_stops_protection(rig: Rig) -> None:
    protect(rig.store)
    rig.answer = False
    rig.window.close()
    title, text, accept = rig.questions[-1]
    assert title == "Close TrailStop" and accept == "Close and stop protecting"
    assert "no system tray" in text and "closing the window quits TrailStop" in text
    assert "from the tray" not in text  # no promise a tray-less desktop cannot keep
    assert rig.window.isVisible()


def test_the_feed_label_tells_the_feeds_state_not_a_guess_from_the_last_tick(rig: Rig, qtbot: QtBot) -> None:
    p = protect(rig.store)
    offline_capable_session(rig, SessionState.LIVE)
    rig.service.session_state_changed.emit(p.account_id, "live")
    assert rig.window.tick_label.text() == "Feed live"  # live, nothing protected ticked yet: no alarm
    old = time.time() - 45  # a quiet instrument on a live feed
    rig.service.snapshot_ready.emit(
        {"account_id": p.account_id, "quotes": {408065: Quote(408065, 1490.0, None, None, old)}, "stops": {}}
    )
    rig.window._update_tick_label()  # the once-a-second refresh
    assert rig.window.tick_label.text() == f"Last tick {time.strftime('%H:%M:%S', time.localtime(old))}"
    assert rig.window.tick_label.styleSheet() == ""  # not orange: the feed is live
    rig.service.sessions[p.account_id].state = SessionState.RECONNECTING
    rig.service.session_state_changed.emit(p.account_id, "reconnecting")
    assert rig.window.tick_label.text() == "Zerodha (AB1234): feed down"
    assert theme.colors(rig.window.palette()).failed.name() in rig.window.tick_label.styleSheet()


def test_help_has_getting_started_linking_to_readme(rig: Rig, qtbot: QtBot) -> None:
    help_menu = next(a.menu() for a in rig.window.menuBar().actions() if a.text() == "&Help")
    assert [a.text() for a in help_menu.actions() if not a.isSeparator()] == [
        "&Getting started",
        "&About TrailStop",
    ]
    rig.window.act_getting_started.trigger()
    box = rig.window.getting_started_box
    assert box is not None and box.isVisible()
    text = box.text()
    assert "developers.kite.trade" in text and "account.upstox.com/developer/apps" in text
    assert "https://127.0.0.1:5000/callback" in text and "demo" in text
    assert "README.md#getting-started" in text
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for heading in ("## Getting started", "## How a stop trails", "## Broker-held safety stop"):
        assert heading in readme
    box.close()


def test_a_protection_of_an_account_not_loaded_this_run_is_not_watched_everywhere(
    rig: Rig, qtbot: QtBot
) -> None:
    # A --demo run loads only the simulator's account: the real account's protection (from an earlier run)
    # has no session, no feed and no route. It must not read green "Armed".
    real = protect(rig.store)
    demo_account = rig.store.add_account("kite", "Zerodha simulator", user_id="DEMO1")
    demo = factories.protection(rig.store, demo_account.id, quantity=1, symbol="SBIN", instrument=779521)
    rig.service.sessions[demo_account.id] = SimpleNamespace(
        account=demo_account,
        account_id=demo_account.id,
        label="Zerodha simulator",
        state=SessionState.LIVE,
        feed=None,
        broker_if_ready=lambda: None,
    )
    rig.window.stop()  # the window of this run opens with the sessions the run loaded
    rig.window = window = rig.open()
    failed = theme.colors(window.palette()).failed
    row = window.model.row_for(real.id)
    assert row is not None and row.state is RowState.NOT_WATCHED
    assert row.status_text == "Not watched: account not loaded this run"
    assert window.positions.select_pid(real.id)
    source = window.model.index(window.model.row_number(real.id) or 0, Column.STATUS)
    status_cell = window.positions.proxy.mapFromSource(source)
    assert status_cell.data() == "Not watched: account not loaded this run"
    assert status_cell.data(Qt.ItemDataRole.ForegroundRole).color() == failed
    window.detail.refresh_now()
    assert "Not watched" in window.detail.status_pill.text()
    assert window.counts_label.text() == "1 NOT WATCHED · 1 armed"
    assert window.tick_label.text() == "Zerodha: account not loaded this run"
    assert failed.name() in window.tick_label.styleSheet()
    assert window.tray.attention and "1 protection is NOT watched" in window.tray.tooltip
    assert "All protections are being watched" not in window.tray.tooltip
    demo_row = window.model.row_for(demo.id)
    assert demo_row is not None and demo_row.status_text == "Armed"  # the loaded account's row is watched

    # Its account is loaded later (added in Accounts): the row is watched again, everywhere.
    rig.service.sessions[real.account_id] = SimpleNamespace(
        account=rig.store.account(real.account_id),
        account_id=real.account_id,
        label="Zerodha (AB1234)",
        state=SessionState.LIVE,
        feed=None,
        broker_if_ready=lambda: None,
    )
    window.refresh_accounts()
    assert window.model.row_for(real.id).status_text == "Armed"  # type: ignore[union-attr]
    assert window.counts_label.text() == "2 armed"
    assert window.tick_label.text() == "Feed live"
    assert not window.tray.attention and "All protections are being watched" in window.tray.tooltip


def test_exit_all_on_an_offline_account_says_requested_and_which_account_is_not_watched(
    rig: Rig, qtbot: QtBot
) -> None:
    p = protect(rig.store)
    offline_capable_session(rig, SessionState.LOGIN_NEEDED)
    rig.service.session_state_changed.emit(p.account_id, "login needed")
    messages: list[str] = []
    rig.window.positions.message_posted.connect(messages.append)
    assert rig.window.exit_all() == [p.id]
    said = rig.window.statusBar().currentMessage()
    assert "Exit sent" not in said and "exit sent" not in said
    assert said.startswith("Exit requested for 1 of 1 position")
    assert "NOT sent yet for 1" in said and "Zerodha: login needed (1)" in said
    assert rig.service.executor.wait_idle(5.0)
    qtbot.wait(50)  # let any queued change reach the window: still nothing was sent
    assert rig.store.get(p.id).status is Status.TRIGGERED and rig.store.get(p.id).exit_order_id is None
    assert not any("exit sent" in m for m in messages)
    row = rig.window.model.row_for(p.id)
    assert row is not None and row.status_text == "Exit not sent: login needed"
