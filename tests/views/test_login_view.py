"""The embedded login against the simulator's real login pages, inside a real QWebEngineView.

Chromium refuses to run as root with its sandbox, and there is no GPU here: both are set before the first
web view starts. QtWebEngineWidgets must be imported before pytest-qt creates the QApplication; this module
is imported at collection time, before any test runs, which is early enough.
"""

from __future__ import annotations

import os

os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest
from PySide6 import QtWebEngineWidgets  # noqa: F401  (before the QApplication exists)
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile
from PySide6.QtWidgets import QMessageBox, QPushButton
from pytestqt.qtbot import QtBot

from tests.conftest import MemoryKeyring
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints, SessionState
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator
from trailstop_gui.views.login_view import LoginDialog, ReloginPrompter

LOAD_MS = 15_000


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=5, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


@dataclass
class Rig:
    sim: SimulatorHandle
    store: ProtectionStore
    secrets: SecretStore
    service: ProtectionService
    session: AccountSession
    broker: str

    @property
    def section(self) -> dict[str, Any]:
        return dict(self.sim.info[self.broker])

    @property
    def redirect(self) -> str:
        return str(self.section["redirect_url" if self.broker == "kite" else "redirect_uri"])


def make_rig(sim: SimulatorHandle, tmp_path: Path, broker: str) -> Rig:
    section = sim.info[broker]
    store = ProtectionStore(tmp_path / "login.db")
    secrets = SecretStore()
    account = store.add_account(
        broker,
        "Zerodha" if broker == "kite" else "Upstox",
        user_id=section["user_id"],
        api_key=section["api_key"] if broker == "kite" else section["client_id"],
        redirect_url=section["redirect_url"] if broker == "kite" else section["redirect_uri"],
        api_root=sim.url,
    )
    secrets.set(
        account.id, "api_secret", section["api_secret"] if broker == "kite" else section["client_secret"]
    )
    service = ProtectionService(store)
    session = AccountSession(account, secrets, Endpoints.for_simulator(sim.info, broker))
    service.add_session(session)
    return Rig(sim, store, secrets, service, session, broker)


@pytest.fixture(params=["kite", "upstox"])
def rig(request: pytest.FixtureRequest, sim: SimulatorHandle, tmp_path: Path, qtbot: QtBot) -> Iterator[Rig]:
    r = make_rig(sim, tmp_path, request.param)
    yield r
    r.service.shutdown()
    r.store.close()


@pytest.fixture
def kite_rig(sim: SimulatorHandle, tmp_path: Path, qtbot: QtBot) -> Iterator[Rig]:
    r = make_rig(sim, tmp_path, "kite")
    yield r
    r.service.shutdown()
    r.store.close()


def open_dialog(qtbot: QtBot, rig: Rig) -> tuple[LoginDialog, list[str]]:
    """A shown login dialog with the login page loaded; returns it and every URL the page showed."""
    dialog = LoginDialog(rig.session)
    qtbot.addWidget(dialog)
    seen: list[str] = []
    dialog.page.urlChanged.connect(lambda url: seen.append(url.toString()))
    with qtbot.waitSignal(dialog.page.loadFinished, timeout=LOAD_MS) as loaded:
        dialog.show()
    assert loaded.args == [True]
    assert run_js(qtbot, dialog.page, "document.forms.length") == 1
    return dialog, seen


def run_js(qtbot: QtBot, page: QWebEnginePage, script: str) -> Any:
    results: list[Any] = []
    page.runJavaScript(script, 0, results.append)
    qtbot.waitUntil(lambda: bool(results), timeout=LOAD_MS)
    return results[0]


def fill_and_submit(qtbot: QtBot, dialog: LoginDialog, user_id: str, password: str) -> None:
    script = (
        f"document.querySelector('input[name=user_id]').value = {json.dumps(user_id)};"
        f"document.querySelector('input[name=password]').value = {json.dumps(password)};"
        "document.querySelector('button[type=submit]').click(); true"
    )
    assert run_js(qtbot, dialog.page, script) is True


def navigate(qtbot: QtBot, dialog: LoginDialog, url: str) -> None:
    assert run_js(qtbot, dialog.page, f"window.location.href = {json.dumps(url)}; true") is True


def db_bytes(store: ProtectionStore) -> bytes:
    store.flush()
    path = Path(store.path)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def sim_sessions(sim: SimulatorHandle) -> list[dict[str, Any]]:
    request = Request(f"{sim.url}/_sim/sessions", headers=sim.control_headers)
    with urlopen(request, timeout=5) as response:
        sessions: list[dict[str, Any]] = json.loads(response.read())
    return sessions


# ----------------------------------------------------------------------------- the happy path


def test_login_completes_in_the_web_view(qtbot: QtBot, rig: Rig, memory_keyring: MemoryKeyring) -> None:
    dialog, seen = open_dialog(qtbot, rig)
    assert rig.session.token() is None
    finished: list[int] = []
    dialog.finished.connect(finished.append)
    visible_during_exchange: list[bool] = []
    dialog.exchange_started.connect(lambda _id: visible_during_exchange.append(dialog.isVisible()))
    with qtbot.waitSignals([dialog.exchange_started, dialog.logged_in], timeout=LOAD_MS, order="strict"):
        fill_and_submit(qtbot, dialog, rig.section["user_id"], rig.section["password"])
    assert visible_during_exchange == [False]  # it closed itself at the redirect, before the exchange
    assert finished == [LoginDialog.DialogCode.Accepted]

    token = rig.session.token()
    issued = [s for s in sim_sessions(rig.sim) if s["broker"] == rig.broker and s["access_token"] == token]
    assert token and len(issued) == 1
    assert memory_keyring.passwords[("trailstop", f"account-{rig.session.account_id}/access_token")] == token
    assert rig.session.state is SessionState.CONNECTING
    assert dialog.user_id == rig.section["user_id"]
    # The redirect page itself was never loaded: the view stopped at its URL.
    assert not [u for u in seen if u.startswith(rig.redirect)]
    # Neither the token nor the secret reached the database file.
    data = db_bytes(rig.store)
    assert token.encode() not in data
    secret = rig.secrets.get(rig.session.account_id, "api_secret")
    assert secret and secret.encode() not in data


def test_each_login_has_its_own_off_the_record_profile(qtbot: QtBot, kite_rig: Rig) -> None:
    first, second = LoginDialog(kite_rig.session), LoginDialog(kite_rig.session)
    qtbot.addWidget(first)
    qtbot.addWidget(second)
    for dialog in (first, second):
        profile = dialog.page.profile()
        assert profile is dialog.profile and profile.isOffTheRecord()
        assert (
            profile.persistentCookiesPolicy() is QWebEngineProfile.PersistentCookiesPolicy.NoPersistentCookies
        )
        assert profile.httpCacheType() is QWebEngineProfile.HttpCacheType.MemoryHttpCache
    assert first.profile is not second.profile  # one account's web session never leaks into another's


# ----------------------------------------------------------------------------- refusals


def test_other_hosts_are_refused_and_reported(qtbot: QtBot, kite_rig: Rig) -> None:
    dialog, seen = open_dialog(qtbot, kite_rig)
    login_page = dialog.page.url().toString()
    port = kite_rig.sim.port
    # A link to another loopback address (the same port), clicked as a trader would.
    link = (
        "var a = document.createElement('a');"
        f"a.href = 'http://127.0.0.2:{port}/connect/login?request_token=stolen';"
        "document.body.appendChild(a); a.click(); true"
    )
    with qtbot.waitSignal(dialog.navigation_refused, timeout=LOAD_MS) as refused:
        assert run_js(qtbot, dialog.page, link) is True
    assert refused.args == [f"http://127.0.0.2:{port}"]  # the origin only: never a path or a token
    assert dialog.banner.isVisible()
    assert f"Blocked http://127.0.0.2:{port}" in dialog.banner.text()
    assert "stolen" not in dialog.banner.text()

    for url in ("http://example.invalid/", f"http://127.0.0.1:{port + 1}/", f"https://127.0.0.1:{port}/"):
        with qtbot.waitSignal(dialog.navigation_refused, timeout=LOAD_MS):
            navigate(qtbot, dialog, url)
    # A popup (a new window) goes through the same gate.
    with qtbot.waitSignal(dialog.navigation_refused, timeout=LOAD_MS) as refused:
        assert run_js(qtbot, dialog.page, "window.open('http://example.invalid/popup'); true") is True
    assert refused.args == ["http://example.invalid"]
    assert dialog.page.url().toString() == login_page
    assert not [u for u in seen if "127.0.0.2" in u or "example.invalid" in u]
    assert dialog.isVisible() and kite_rig.session.token() is None


def test_token_is_read_only_from_the_configured_redirect(qtbot: QtBot, kite_rig: Rig) -> None:
    dialog, _seen = open_dialog(qtbot, kite_rig)
    base = kite_rig.sim.url
    with qtbot.assertNotEmitted(dialog.exchange_started), qtbot.assertNotEmitted(dialog.logged_in):
        # Another path on the simulator's own host: an allowed page, but not the redirect.
        with qtbot.waitSignal(dialog.page.loadFinished, timeout=LOAD_MS):
            navigate(qtbot, dialog, f"{base}/redirect/elsewhere?request_token=abc&status=success")
        assert dialog.page.url().path() == "/redirect/elsewhere"
        # The redirect's path on another port or scheme: refused, not read.
        port = kite_rig.sim.port
        for url in (
            f"http://127.0.0.1:{port + 1}/redirect/kite?request_token=abc&status=success",
            f"https://127.0.0.1:{port}/redirect/kite?request_token=abc&status=success",
        ):
            with qtbot.waitSignal(dialog.navigation_refused, timeout=LOAD_MS):
                navigate(qtbot, dialog, url)
        qtbot.wait(100)
    assert kite_rig.session.token() is None and not dialog.exchanging and dialog.isVisible()


def test_upstox_answer_with_another_state_is_not_used(
    qtbot: QtBot, sim: SimulatorHandle, tmp_path: Path
) -> None:
    rig = make_rig(sim, tmp_path, "upstox")
    try:
        dialog, _seen = open_dialog(qtbot, rig)
        with (
            qtbot.assertNotEmitted(dialog.exchange_started),
            qtbot.waitSignal(dialog.login_failed, timeout=LOAD_MS) as failed,
        ):
            navigate(qtbot, dialog, f"{rig.redirect}?code=abc123&state=forged")
        assert failed.args[0] == rig.session.account_id
        assert "state" in failed.args[1]
        assert dialog.isVisible() and dialog.banner.isVisible() and "state" in dialog.banner.text()
        assert rig.session.token() is None
        # Start over: a fresh page and a fresh state, and the real login still works.
        dialog.start_over.click()
        assert not dialog.banner.isVisible()
        qtbot.waitUntil(lambda: dialog.status.text().startswith("Log in with"), timeout=LOAD_MS)
        with qtbot.waitSignal(dialog.logged_in, timeout=LOAD_MS):
            fill_and_submit(qtbot, dialog, rig.section["user_id"], rig.section["password"])
        assert rig.session.token()
    finally:
        rig.service.shutdown()
        rig.store.close()


def test_a_failed_exchange_shows_the_error(qtbot: QtBot, kite_rig: Rig) -> None:
    kite_rig.secrets.set(kite_rig.session.account_id, "api_secret", "wrongsecret")
    dialog, _seen = open_dialog(qtbot, kite_rig)
    with qtbot.waitSignal(dialog.login_failed, timeout=LOAD_MS) as failed:
        fill_and_submit(qtbot, dialog, kite_rig.section["user_id"], kite_rig.section["password"])
    assert "The login did not complete" in failed.args[1]
    assert "wrongsecret" not in failed.args[1]
    assert dialog.isVisible() and dialog.banner.isVisible()
    assert kite_rig.session.token() is None


def test_the_exchange_is_awaited_off_the_gui_thread(qtbot: QtBot, kite_rig: Rig) -> None:
    import threading

    session = kite_rig.session
    real_complete_login = session.complete_login
    exchanged_on: list[threading.Thread] = []
    broker_answers = threading.Event()

    def slow_complete_login(params: dict[str, str]) -> Any:
        exchanged_on.append(threading.current_thread())
        broker_answers.wait(10)  # a slow broker: the window must not wait with it
        return real_complete_login(params)

    session.complete_login = slow_complete_login  # type: ignore[method-assign]
    dialog, _seen = open_dialog(qtbot, kite_rig)
    with qtbot.waitSignal(dialog.exchange_started, timeout=LOAD_MS):
        fill_and_submit(qtbot, dialog, kite_rig.section["user_id"], kite_rig.section["password"])
    qtbot.waitUntil(lambda: bool(exchanged_on), timeout=LOAD_MS)
    assert exchanged_on[0] is not threading.main_thread()
    assert dialog.exchanging and dialog.status.text() == "Completing the login…"
    with qtbot.waitSignal(dialog.logged_in, timeout=LOAD_MS):
        broker_answers.set()
    assert not dialog.exchanging and dialog.user_id == kite_rig.section["user_id"]
    assert session.token()


# ----------------------------------------------------------------------------- re-login prompt


def test_relogin_prompt_once_per_expiry(qtbot: QtBot, kite_rig: Rig) -> None:
    prompter = ReloginPrompter(kite_rig.service)
    service, account_id = kite_rig.service, kite_rig.session.account_id
    kite_rig.session.mark_login_needed("token expired")
    box = prompter.prompts[account_id]
    qtbot.waitUntil(box.isVisible)
    assert box.text() == "Zerodha (DM1234): login needed"
    assert not box.isModal()
    # The same expiry reported again (the feed, an exit, a reconcile): no second prompt.
    service.session_state_changed.emit(account_id, SessionState.LOGIN_NEEDED.value)
    service.session_state_changed.emit(account_id, SessionState.LOGIN_NEEDED.value)
    assert list(prompter.prompts) == [account_id] and prompter.prompts[account_id] is box
    log_in = next(b for b in box.buttons() if box.buttonRole(b) is QMessageBox.ButtonRole.AcceptRole)
    assert isinstance(log_in, QPushButton) and log_in.text() == "Log in"
    with qtbot.waitSignal(prompter.login_dialog_opened) as opened:
        log_in.click()
    dialog = opened.args[0]
    qtbot.addWidget(dialog)
    assert isinstance(dialog, LoginDialog) and dialog.account_id == account_id and dialog.isVisible()
    assert LoginDialog.open_for(kite_rig.session) is dialog  # one login dialog per account
    dialog.reject()
    # Logged in again, then a new expiry: a new prompt.
    service.session_state_changed.emit(account_id, SessionState.CONNECTING.value)
    service.session_state_changed.emit(account_id, SessionState.LOGIN_NEEDED.value)
    assert prompter.prompts[account_id] is not box
    prompter.prompts[account_id].close()
