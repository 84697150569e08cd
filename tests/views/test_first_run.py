"""The first-run question: "Add my account" leads to the broker's add-account form, not an empty window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox
from pytestqt.qtbot import QtBot

from trailstop_gui.app import _offer_demo
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.secrets import SecretStore
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


def test_add_my_account_opens_the_add_account_form(qtbot: QtBot, tmp_path: Path) -> None:
    offered: list[str] = []
    click_when_shown("Add my Zerodha account…", offered)
    choice = _offer_demo()
    assert choice == "kite"
    assert "Try the demo market" in offered and "Add my Upstox account…" in offered
    # What run_window does with that choice: the Accounts window, with the Zerodha form open in it.
    store = ProtectionStore(tmp_path / "first.db")
    try:
        dialog = AccountsDialog(store, SecretStore(), ProtectionService(store))
        qtbot.addWidget(dialog)
        dialog.open()
        form = dialog.add_account(choice)
        assert isinstance(form, AccountForm) and isinstance(form, QDialog) and form.isVisible()
    finally:
        store.close()


def test_the_demo_and_later_choices(qtbot: QtBot) -> None:
    click_when_shown("Try the demo market", [])
    assert _offer_demo() == "demo"
    click_when_shown("Later", [])
    assert _offer_demo() is None
