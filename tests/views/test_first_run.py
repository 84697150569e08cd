"""The first-run question: "Add my account" leads to the broker's add-account form, not an empty window."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6 import QtWebEngineWidgets  # noqa: F401  (before the QApplication exists: the window's login)
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox
from pytestqt.qtbot import QtBot

from trailstop_gui.app import _offer_demo, open_window
from trailstop_gui.runtime import build_runtime
from trailstop_gui.settings import load_settings
from trailstop_gui.views.accounts_dialog import AccountForm, AccountsDialog


def click_when_shown(text: str, clicked: list[str]) -> None:
    def click() -> None:
        shown = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
        box = shown[0] if shown else None
        if box is None:
            QTimer.singleShot(10, click)
            return
        clicked.extend(b.text() for b in box.buttons())
        wanted = next((b for b in box.buttons() if b.text() == text), None)
        (wanted or box.buttons()[-1]).click()  # a missing button must fail the test, not hang it

    QTimer.singleShot(0, click)


@pytest.fixture
def keep_root_logging() -> Iterator[None]:
    # build_runtime replaces the root logger's handlers with the app's own; give pytest's back.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("button", "broker"), [("Add my Zerodha account…", "kite"), ("Add my Upstox account…", "upstox")]
)
def test_add_my_account_opens_the_add_account_form(
    qtbot: QtBot, tmp_path: Path, keep_root_logging: None, button: str, broker: str
) -> None:
    offered: list[str] = []
    click_when_shown(button, offered)
    choice = _offer_demo()
    assert choice == broker
    assert "Try the demo market" in offered and "Add my Upstox account…" in offered
    # What run_window does with that choice, through its own code: the window, and over it the Accounts
    # window with that broker's add-account form open.
    runtime = build_runtime(data_directory=str(tmp_path), brokers=(broker,))
    window = None
    try:
        app = QApplication.instance()
        assert isinstance(app, QApplication)
        window = open_window(app, runtime, load_settings(runtime.store), choice)
        qtbot.addWidget(window)
        assert window.isVisible()
        dialogs = window.findChildren(AccountsDialog)
        assert len(dialogs) == 1 and dialogs[0].isVisible()
        forms = dialogs[0].findChildren(AccountForm)
        assert len(forms) == 1 and isinstance(forms[0], QDialog) and forms[0].isVisible()
        assert forms[0].broker == broker
    finally:
        if window is not None:
            window.prepare_quit()
            window.stop()
        runtime.close()


def test_later_opens_the_window_with_no_form(qtbot: QtBot, tmp_path: Path, keep_root_logging: None) -> None:
    runtime = build_runtime(data_directory=str(tmp_path), brokers=("kite",))
    window = None
    try:
        app = QApplication.instance()
        assert isinstance(app, QApplication)
        window = open_window(app, runtime, load_settings(runtime.store), None)
        qtbot.addWidget(window)
        assert window.isVisible() and window.findChildren(AccountsDialog) == []
    finally:
        if window is not None:
            window.prepare_quit()
            window.stop()
        runtime.close()


def test_the_demo_and_later_choices(qtbot: QtBot) -> None:
    click_when_shown("Try the demo market", [])
    assert _offer_demo() == "demo"
    click_when_shown("Later", [])
    assert _offer_demo() is None
