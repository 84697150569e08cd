"""The accounts dialog: list with state, add/edit/remove with validation, secrets only in the keyring."""

from __future__ import annotations

import os

# The Log in button opens a web view: Chromium cannot use its sandbox as root, and there is no GPU here.
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtWebEngineWidgets  # noqa: F401  (before the QApplication exists)
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QMessageBox
from pytestqt.qtbot import QtBot

from tests.conftest import MemoryKeyring
from tests.factories import protection
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints, SessionState
from trailstop_gui.simulator.runner import start_simulator
from trailstop_gui.views.accounts_dialog import AccountForm, AccountsDialog, AccountsModel
from trailstop_gui.views.login_view import LoginDialog
from trailstop_gui.views.table_model import RowsTableModel

KITE_SECRET = "kitesecret0123456789abcdefghijkl"
UPSTOX_SECRET = "upxsecret9"


@pytest.fixture
def rig(tmp_path: Path, qtbot: QtBot) -> Iterator[tuple[ProtectionStore, SecretStore, ProtectionService]]:
    store = ProtectionStore(tmp_path / "accounts.db")
    service = ProtectionService(store)
    yield store, SecretStore(), service
    service.shutdown()
    store.close()


@pytest.fixture
def dialog(rig: Any, qtbot: QtBot) -> AccountsDialog:
    d = AccountsDialog(*rig)
    qtbot.addWidget(d)
    d.show()
    return d


def db_bytes(store: ProtectionStore) -> bytes:
    store.flush()
    path = Path(store.path)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def fill(form: AccountForm, **values: str) -> None:
    for field, value in values.items():
        form.edits[field].clear()
        form.edits[field].setText(value)


def press_ok(form: AccountForm) -> None:
    form.buttons.button(QDialogButtonBox.StandardButton.Ok).click()


def shown_errors(form: AccountForm) -> dict[str, str]:
    return {field: label.text() for field, label in form.errors.items() if not label.isHidden()}


def add_kite(qtbot: QtBot, dialog: AccountsDialog, **values: str) -> int:
    form = dialog.add_account("kite")
    fill(
        form,
        **{
            "label": "Zerodha",
            "api_key": "abcd1234efgh5678",
            "api_secret": KITE_SECRET,
            "redirect_url": "https://127.0.0.1:5000/callback",
            "user_id": "AB1234",
            **values,
        },
    )
    with qtbot.waitSignal(dialog.account_added) as added:
        press_ok(form)
    return int(added.args[0])


def test_add_zerodha_with_validation_naming_the_field(
    qtbot: QtBot, dialog: AccountsDialog, rig: Any, memory_keyring: MemoryKeyring
) -> None:
    store, secrets, service = rig
    assert dialog.empty_note.isVisibleTo(dialog)
    form = dialog.add_account("kite")
    assert form.isVisible() and form.windowTitle() == "Add Zerodha account"
    assert form.edits["api_secret"].echoMode() is form.edits["api_secret"].EchoMode.Password

    with qtbot.assertNotEmitted(dialog.account_added):
        press_ok(form)
        assert shown_errors(form) == {"api_key": "API key: must not be empty"}
        assert form.isVisible() and form.focusWidget() is form.edits["api_key"]
        fill(form, api_key="abcd 1234")
        press_ok(form)
        assert shown_errors(form)["api_key"].startswith("API key: letters and digits only")
        fill(form, api_key="abcd1234efgh5678")
        press_ok(form)
        assert shown_errors(form) == {"api_secret": "API secret: must not be empty"}
        fill(form, api_secret=KITE_SECRET, redirect_url="http://example.com/cb")
        press_ok(form)
        assert shown_errors(form) == {
            "redirect_url": "Redirect URL: use https:// (plain http only for 127.0.0.1)"
        }
        assert store.accounts() == []
        # Typing in a field clears its error.
        qtbot.keyClicks(form.edits["redirect_url"], "x")  # type: ignore[no-untyped-call]
        assert shown_errors(form) == {}

    fill(form, redirect_url="https://127.0.0.1:5000/callback", user_id="ab1234")
    with qtbot.waitSignal(dialog.account_added) as added:
        press_ok(form)
    assert not form.isVisible() and form.edits["api_secret"].text() == ""
    account_id = added.args[0]
    (account,) = store.accounts()
    assert (account.id, account.broker, account.label, account.user_id) == (
        account_id,
        "kite",
        "Zerodha",
        "AB1234",
    )
    assert memory_keyring.passwords[("trailstop", f"account-{account_id}/api_secret")] == KITE_SECRET
    assert KITE_SECRET.encode() not in db_bytes(store)
    assert account_id in service.sessions
    model = dialog.model
    assert [model.index(0, c).data() for c in range(4)] == ["Zerodha", "Zerodha", "AB1234", "logged out"]
    assert not dialog.empty_note.isVisibleTo(dialog)


def test_add_upstox_uses_upstox_words(qtbot: QtBot, dialog: AccountsDialog, rig: Any) -> None:
    store, secrets, _service = rig
    form = dialog.add_account("upstox")
    assert form.windowTitle() == "Add Upstox account"
    press_ok(form)
    assert shown_errors(form) == {"api_key": "Client ID: must not be empty"}
    fill(form, api_key="1a2b3c4d-aaaa-bbbb-cccc-0123456789ab", redirect_url="https://127.0.0.1/cb")
    press_ok(form)
    assert shown_errors(form) == {"api_secret": "Client secret: must not be empty"}
    fill(form, api_secret=UPSTOX_SECRET)
    with qtbot.waitSignal(dialog.account_added):
        press_ok(form)
    (account,) = store.accounts()
    assert (account.broker, account.label) == ("upstox", "Upstox")  # the label defaults to the broker
    assert secrets.get(account.id, "api_secret") == UPSTOX_SECRET
    assert UPSTOX_SECRET.encode() not in db_bytes(store)


def test_edit_keeps_the_secret_unless_a_new_one_is_typed(
    qtbot: QtBot, dialog: AccountsDialog, rig: Any, memory_keyring: MemoryKeyring
) -> None:
    store, secrets, _service = rig
    account_id = add_kite(qtbot, dialog)
    dialog.select_account(account_id)
    form = dialog.edit_selected()
    assert form is not None and form.windowTitle() == "Edit Zerodha account"
    assert form.edits["api_key"].text() == "abcd1234efgh5678"
    assert form.edits["api_secret"].text() == ""  # the secret is never shown back
    fill(form, label="Main", redirect_url="not a url")
    press_ok(form)
    assert shown_errors(form)["redirect_url"].startswith("Redirect URL:")
    fill(form, redirect_url="https://127.0.0.1:5000/callback")
    with qtbot.waitSignal(dialog.account_changed):
        press_ok(form)
    assert store.account(account_id).label == "Main"
    assert secrets.get(account_id, "api_secret") == KITE_SECRET
    assert dialog.model.index(0, 1).data() == "Main"

    form = dialog.edit_selected()
    assert form is not None
    fill(form, api_secret="newsecret42")
    with qtbot.waitSignal(dialog.account_changed):
        press_ok(form)
    assert memory_keyring.passwords[("trailstop", f"account-{account_id}/api_secret")] == "newsecret42"
    assert b"newsecret42" not in db_bytes(store) and KITE_SECRET.encode() not in db_bytes(store)


def test_remove_refused_while_live_then_confirmed(
    qtbot: QtBot,
    dialog: AccountsDialog,
    rig: Any,
    monkeypatch: pytest.MonkeyPatch,
    memory_keyring: MemoryKeyring,
) -> None:
    store, _secrets, service = rig
    account_id = add_kite(qtbot, dialog)
    pid = protection(store, account_id, quantity=1, entry_price=100.0).id
    warnings: list[str] = []
    questions: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text, *a: warnings.append(text))

    def answer(_parent: Any, _title: str, text: str, *_args: Any) -> QMessageBox.StandardButton:
        questions.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", answer)
    dialog.select_account(account_id)
    assert dialog.remove_selected() is False
    assert questions == [] and len(warnings) == 1
    assert warnings[0].startswith("Zerodha (AB1234) has 1 live protection.")
    assert [a.id for a in store.accounts()] == [account_id]

    store.transition(pid, Status.REMOVED, reason="test")
    with qtbot.waitSignal(dialog.account_removed):
        assert dialog.remove_selected() is True
    assert questions and questions[0].startswith("Remove Zerodha (AB1234)?")
    assert "1 finished protection and its journal are deleted too" in questions[0]
    assert store.accounts() == [] and dialog.model.rowCount() == 0
    assert account_id not in service.sessions
    assert memory_keyring.passwords == {}


def test_remove_asks_first(
    qtbot: QtBot, dialog: AccountsDialog, rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _secrets, _service = rig
    account_id = add_kite(qtbot, dialog)
    monkeypatch.setattr(QMessageBox, "question", lambda *_a: QMessageBox.StandardButton.No)
    dialog.select_account(account_id)
    with qtbot.assertNotEmitted(dialog.account_removed):
        assert dialog.remove_selected() is False
    assert [a.id for a in store.accounts()] == [account_id]


def test_model_and_state_colours(qtbot: QtBot, dialog: AccountsDialog, rig: Any, qtmodeltester: Any) -> None:
    _store, _secrets, service = rig
    first = add_kite(qtbot, dialog)
    add_kite(qtbot, dialog, label="Second", user_id="")
    model = dialog.model
    qtmodeltester.check(model, force_py=True)
    assert model.rowCount() == 2 and model.index(1, 2).data() == "—"
    with qtbot.waitSignal(model.dataChanged):
        service.session_state_changed.emit(first, SessionState.LOGIN_NEEDED.value)
    state = model.index(0, 3)
    assert state.data() == "login needed"
    assert state.data(Qt.ItemDataRole.ForegroundRole).name() == "#c62828"
    assert "log in again" in state.data(Qt.ItemDataRole.ToolTipRole)
    assert model.headerData(3, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) == "State"
    assert dialog.login_button(first) is not None and dialog.login_button(first).isEnabled()  # type: ignore[union-attr]
    qtmodeltester.check(model, force_py=True)
    assert isinstance(model, AccountsModel) and isinstance(model, RowsTableModel)
    assert model.headerData(3, Qt.Orientation.Horizontal, Qt.ItemDataRole.TextAlignmentRole) is None
    assert model.index(5, 0).data() is None and model.index(0, 0).data(Qt.ItemDataRole.EditRole) is None


def test_log_in_button_opens_the_login_dialog(qtbot: QtBot, tmp_path: Path) -> None:
    sim = start_simulator(seed=9, auto=False)
    store = ProtectionStore(tmp_path / "login.db")
    service = ProtectionService(store)
    secrets = SecretStore()
    try:
        kite = sim.info["kite"]
        account = store.add_account(
            "kite", "Zerodha", api_key=kite["api_key"], redirect_url=kite["redirect_url"], api_root=sim.url
        )
        secrets.set(account.id, "api_secret", kite["api_secret"])
        service.add_session(AccountSession(account, secrets, Endpoints.for_simulator(sim.info, "kite")))
        dialog = AccountsDialog(store, secrets, service)
        qtbot.addWidget(dialog)
        dialog.show()
        assert [dialog.model.index(0, c).data() for c in range(2)] == ["Zerodha simulator", "Zerodha"]
        button = dialog.login_button(account.id)
        assert button is not None and button.text() == "Log in"
        with qtbot.waitSignal(dialog.login_dialog_opened) as opened:
            button.click()
        login = opened.args[0]
        assert isinstance(login, LoginDialog) and login.account_id == account.id and login.isVisible()
        qtbot.waitUntil(lambda: login.status.text().startswith("Log in with"), timeout=15_000)
        with qtbot.waitSignal(dialog.logged_in, timeout=15_000):
            script = (
                f"document.querySelector('input[name=user_id]').value = '{kite['user_id']}';"
                f"document.querySelector('input[name=password]').value = '{kite['password']}';"
                "document.forms[0].submit();"
            )
            login.page.runJavaScript(script)
        # The user id learnt from the login is shown; the token is in the keyring, not in the file.
        assert store.account(account.id).user_id == kite["user_id"]
        assert dialog.model.index(0, 2).data() == kite["user_id"]
        token = secrets.get(account.id, "access_token")
        assert token and token.encode() not in db_bytes(store)
    finally:
        service.shutdown()
        store.close()
        sim.stop()


# ----------------------------------------------------------------------------- order route


def test_before_you_start_names_the_developer_console_steps(dialog: AccountsDialog) -> None:
    text = dialog.before_you_start.text()
    for words in ("API key", "redirect URL", "static IP", "order route", "Check order route"):
        assert words in text


def test_the_order_route_form_validates_names_the_field_and_stores_without_the_password(
    rig: Any, qtbot: QtBot, memory_keyring: MemoryKeyring
) -> None:
    from trailstop_gui.services.notifier import Notifier
    from trailstop_gui.services.route_monitor import RouteMonitor, load_route
    from trailstop_gui.views.accounts_dialog import RouteForm

    store, secrets, service = rig
    routes = RouteMonitor(store, secrets, Notifier())
    account = store.add_account(
        "kite", "Zerodha", user_id="AB1234", api_key="abcd1234", redirect_url="https://127.0.0.1/cb"
    )
    service.add_session(AccountSession(account, secrets, Endpoints()))
    routes.attach(service.sessions[account.id])
    d = AccountsDialog(store, secrets, service, routes=routes)
    qtbot.addWidget(d)
    d.show()
    d.select_account(account.id)
    assert d.route_button.isEnabled() and d.check_button.isEnabled()
    assert "Order route: <b>direct</b>" in d.route_status.text()
    form = d.edit_route()
    assert isinstance(form, RouteForm)
    form.kind.setCurrentIndex(1)  # SOCKS5
    form.edits["host"].setText("127.0.0.1")
    form.edits["port"].setText("99999")
    form.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert form.isVisible() and not form.errors["port"].isHidden()
    assert form.errors["port"].text() == "Proxy port: a number from 1 to 65535"
    form.edits["port"].setText("1080")
    form.edits["username"].setText("trader")
    form.edits["password"].setText("proxy-pass-123")
    form.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert not form.isVisible()
    stored = load_route(store, account.id)
    assert stored.describe() == "SOCKS5 trader@127.0.0.1:1080"
    assert service.sessions[account.id].order_route == stored
    assert "proxy-pass-123" not in db_bytes(store).decode("latin-1")
    assert "proxy-pass-123" in memory_keyring.passwords.values()
    assert "SOCKS5 trader@127.0.0.1:1080" in d.route_status.text()
    routes.shutdown()


def test_check_order_route_awaits_the_probe_off_the_gui_thread_and_shows_its_answer(
    rig: Any, qtbot: QtBot
) -> None:
    import threading

    from trailstop_gui.services.brokers.order_route import RouteCheck, RouteState
    from trailstop_gui.services.notifier import Notifier
    from trailstop_gui.services.route_monitor import RouteMonitor

    store, secrets, service = rig
    routes = RouteMonitor(store, secrets, Notifier())
    account = store.add_account(
        "kite", "Zerodha", user_id="AB1234", api_key="abcd1234", redirect_url="https://127.0.0.1/cb"
    )
    session = AccountSession(account, secrets, Endpoints())
    service.add_session(session)
    routes.attach(session)
    probed_on: list[threading.Thread] = []
    answer = threading.Event()

    def probe() -> RouteCheck:
        probed_on.append(threading.current_thread())
        answer.wait(10)  # the broker takes its time: the window must not
        return RouteCheck(RouteState.REFUSED, "IP not allowed (your IP 203.0.113.9)")

    session.check_order_route = probe  # type: ignore[method-assign]
    d = AccountsDialog(store, secrets, service, routes=routes)
    qtbot.addWidget(d)
    d.show()
    d.select_account(account.id)
    assert "not checked yet" in d.route_status.text()
    qtbot.mouseClick(d.check_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "checking…" in d.route_status.text(), timeout=5000)
    qtbot.waitUntil(lambda: bool(probed_on), timeout=5000)
    assert probed_on[0] is not threading.main_thread()
    assert "checking…" in d.route_status.text()  # the GUI thread went on while the probe waited
    answer.set()
    qtbot.waitUntil(lambda: "IP not allowed" in d.route_status.text(), timeout=5000)
    assert routes.checks[account.id].state is RouteState.REFUSED
    assert routes.wait(5000)
    routes.shutdown()


def test_without_a_keyring_both_windows_say_the_same(rig: Any, qtbot: QtBot) -> None:
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())  # a headless Linux box: no keyring (the fixture restores it)
    d = AccountsDialog(*rig)
    qtbot.addWidget(d)
    d.show()
    assert d.keyring_note.isVisible() and "No system keyring" in d.keyring_note.text()
    form = d.add_account("kite")
    assert "keyring" not in form.edits["api_secret"].placeholderText()
    assert "kept in memory only (this system has no keyring)" in form.note.text()
    form.reject()


def test_with_a_keyring_the_form_promises_it(dialog: AccountsDialog) -> None:
    assert not dialog.keyring_note.isVisible()
    form = dialog.add_account("upstox")
    assert "kept in the system keyring" in form.note.text()
    form.reject()
