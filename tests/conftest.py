"""Suite-wide set-up: Qt renders offscreen (no display in CI); an in-memory keyring for every test; the
run fails if it opened a file beside the repository (a clone has nothing there)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import pytest
from pytestqt.qt_compat import qt_api

from tests.outside_reads import OutsideReads

# Before any Qt import: pytest-qt creates the QApplication lazily, so this is early enough.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Installed while conftest loads, before any test module is imported (module-level reads count too).
OUTSIDE_READS = OutsideReads.for_this_interpreter(Path(__file__).resolve().parents[1]).install()


def pytest_sessionfinish(session: pytest.Session) -> None:
    OUTSIDE_READS.fail_session(session)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    OUTSIDE_READS.write_summary(terminalreporter)


class MemoryKeyring(keyring.backend.KeyringBackend):
    """Keeps passwords in a dict: tests never touch (or need) the OS keyring."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.passwords.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def qasync_loop(qapp: qt_api.QtWidgets.QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """The app's asyncio loop (qasync's QEventLoop) over pytest-qt's QApplication.

    Made "already running": pytest-qt's waitSignal and waitUntil spin Qt's event loop, and every callback
    of a qasync loop is a Qt timer or signal, so the window's async flows run while a test waits, as they
    do under the app's own ``loop.run_forever()``. Never ``loop.stop()`` here: that calls
    ``QApplication.exit()``, which would end every later ``waitSignal`` at once.
    """
    import qasync

    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    yield loop
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    deadline = 100
    while deadline and any(not task.done() for task in pending):
        qapp.processEvents()
        deadline -= 1
    qapp.aboutToQuit.disconnect(loop._after_run_forever)
    loop._QEventLoop__is_running = False  # type: ignore[attr-defined]  # set by already_running
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(autouse=True)
def _qasync_for_qt_tests(request: pytest.FixtureRequest) -> None:
    """Every test that uses Qt (``qtbot`` or ``qapp``) runs with the app's qasync loop, as the app does."""
    if {"qtbot", "qapp"} & set(request.fixturenames):
        request.getfixturevalue("qasync_loop")
