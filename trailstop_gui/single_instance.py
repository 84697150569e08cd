"""One running TrailStop per user and data folder: a second start focuses the first instead of starting.

Two instances watching the same protections could both fire an exit, so this guards the window and
``--headless`` alike. Who runs is decided by a lock file in the data folder (``QLockFile``: a lock left by a
crashed or killed process is noticed and taken over). The running instance listens on a local socket
(``QLocalServer``, named per user and data folder); a second start connects, asks it to show its window,
prints what it was told and exits.

A trader never passes ``--data-dir``, so for them this is one instance per user; tests and a second data
folder chosen on purpose each get their own lock. ``--self-test`` takes none: it shares nothing with a
running TrailStop (its own temporary folder, simulator and in-memory secrets), so it may run beside one.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger("trailstop.instance")

LOCK_NAME = "trailstop.lock"
MAIN_WINDOW_NAME = "mainWindow"
ACTIVATE = b"activate\n"
# Exit code of a second start that found another instance and handed over to it.
HANDED_OVER = 0
# Exit code of a second start that could not do what it was asked (a second --headless, say).
ALREADY_RUNNING = 3
# Exit code when the data folder cannot hold the lock file at all.
CANNOT_LOCK = 1


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): the uid still tells users apart
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


def server_name(data_directory: Path) -> str:
    """The local socket's name: the same for every start by one user on one data folder."""
    key = f"{_user()}\0{os.path.normcase(str(data_directory.resolve()))}"
    return "trailstop-" + hashlib.sha256(key.encode()).hexdigest()[:24]


class SingleInstance(QObject):
    """Claim the data folder, or hand over to the instance that holds it.

    ``claim()`` needs no QCoreApplication; ``listen()`` must run after the application exists.
    """

    activation_requested = Signal()  # a second start asked this instance to show itself

    def __init__(self, data_directory: Path, *, headless: bool = False) -> None:
        super().__init__()
        self.directory = data_directory
        self.headless = headless
        self.name = server_name(data_directory)
        self._lock = QLockFile(str(data_directory / LOCK_NAME))
        self._lock.setStaleLockTime(0)  # stale only when its process is gone, however old it is
        self._server: QLocalServer | None = None
        self.primary = False
        self.answer = ""  # what the running instance said, after a hand-over
        self.problem = ""  # why the data folder could not be claimed, when no other instance holds it

    # ----------------------------------------------------------------- deciding who runs

    def claim(self, patience: float = 5.0) -> bool:
        """True: this process is the one instance. False: another runs and was asked to show itself.

        While the other instance starts up or shuts down it may hold the lock without answering; both
        are retried for ``patience`` seconds.
        """
        deadline = time.monotonic() + patience
        while True:
            if self._lock.tryLock(0):
                self.primary = True
                return True
            if self._lock.error() is not QLockFile.LockError.LockFailedError:
                # Not another instance: the data folder does not take files (read-only, full, ...).
                self.problem = f"cannot create {self._lock.fileName()} ({self._lock.error().name})"
                return False
            answer = self._ask_running_instance()
            if answer is not None:
                self.answer = answer
                return False
            if time.monotonic() >= deadline:
                owner = self._lock.getLockInfo()  # (pid, host name, app name) in PySide6
                pid = owner[0] if isinstance(owner, tuple) and owner else "?"
                self.answer = f"unresponsive (pid {pid})"
                return False
            time.sleep(0.1)

    def _ask_running_instance(self) -> str | None:
        if sys.platform == "win32":
            _allow_focus_stealing_by_the_running_instance()
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(500):
            return None
        try:
            socket.write(ACTIVATE)
            socket.waitForBytesWritten(1000)
            # The running instance answers from its event loop: give a busy one a few seconds.
            reply = b""
            deadline = time.monotonic() + 5.0
            while not reply.endswith(b"\n") and time.monotonic() < deadline:
                socket.waitForReadyRead(200)
                reply += socket.readAll().data()
                if socket.state() is not QLocalSocket.LocalSocketState.ConnectedState:
                    break
            return reply.decode(errors="replace").strip() or "busy"
        finally:
            socket.disconnectFromServer()

    def hand_over_message(self) -> str:
        """What a second start tells the trader, by what the running instance answered."""
        where = f"data folder {self.directory}"
        if self.problem:
            return f"TrailStop cannot start: {self.problem}."
        if self.answer == "window":
            return f"TrailStop is already running ({where}): its window was brought to the front."
        if self.answer == "headless":
            return (
                f"TrailStop is already running in the background (--headless, {where}); not starting another."
            )
        return f"TrailStop is already running ({where}, {self.answer}); not starting another."

    def exit_code(self) -> int:
        """0 when the running instance showed its window as asked, ALREADY_RUNNING or CANNOT_LOCK else."""
        if self.problem:
            return CANNOT_LOCK
        return HANDED_OVER if self.answer == "window" and not self.headless else ALREADY_RUNNING

    # ----------------------------------------------------------------- the running instance

    def listen(self) -> None:
        """Answer later starts. Call once the (Core)Application exists."""
        if not self.primary:
            raise RuntimeError("listen() is for the instance that claimed the data folder")
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        # We hold the lock, so a socket by this name is a leftover from a process that died.
        QLocalServer.removeServer(self.name)
        if not server.listen(self.name):
            log.warning(
                "cannot listen for a second start (%s): it will not focus this one", server.errorString()
            )
            return
        server.newConnection.connect(self._on_new_connection)
        self._server = server

    def _on_new_connection(self) -> None:
        assert self._server is not None
        while (socket := self._server.nextPendingConnection()) is not None:
            # A bound slot, not a lambda holding ``self``: such a lambda, kept by the connection of this
            # object's own grandchild, kept this object alive until the socket was deleted, and then its
            # last reference went inside the socket's destructor, deleting its ancestors mid-destructor (a
            # segfault in processEvents, seen once in the test suite).
            socket.readyRead.connect(self._on_ready_read)
            socket.disconnected.connect(socket.deleteLater)
            if socket.bytesAvailable():
                self._on_request(socket)

    def _on_ready_read(self) -> None:
        socket = self.sender()
        if isinstance(socket, QLocalSocket):
            self._on_request(socket)

    def _on_request(self, socket: QLocalSocket) -> None:
        if not socket.canReadLine():
            return
        request = socket.readLine().data()
        if request != ACTIVATE:
            socket.disconnectFromServer()
            return
        log.info("a second start of TrailStop was turned away; showing this instance instead")
        socket.write(b"headless\n" if self.headless else b"window\n")
        socket.flush()
        if not self.headless:
            self.activation_requested.emit()
            show_main_window()

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.primary:
            self._lock.unlock()
            self.primary = False


def show_main_window() -> None:
    """Bring the application's main window to the front, from the tray or behind other windows."""
    from PySide6.QtWidgets import QApplication, QMainWindow

    app = QCoreApplication.instance()
    if not isinstance(app, QApplication):
        return
    windows = [w for w in app.topLevelWidgets() if isinstance(w, QMainWindow)]
    # The app's own (views/main_window.py names it) before any other main window.
    windows.sort(key=lambda w: w.objectName() != MAIN_WINDOW_NAME)
    if not windows:
        return  # still starting up: the window shows itself when it is built
    window = windows[0]
    if window.isMinimized():
        window.showNormal()
    else:
        window.show()  # also brings it back from the tray
    window.raise_()
    window.activateWindow()


def _allow_focus_stealing_by_the_running_instance() -> None:
    # Windows lets only the foreground process (this one, just started by the trader) hand the focus on.
    try:
        import ctypes

        ctypes.windll.user32.AllowSetForegroundWindow(-1)  # type: ignore[attr-defined]  # ASFW_ANY
    except Exception:
        pass
