"""One TrailStop per data folder: a second start hands over to the running one, whatever its mode.

The second start is always a separate process, as it is for a trader; this process plays the running
instance and keeps its event loop turning (qtbot.waitUntil) so it can answer.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QMainWindow
from pytestqt.qtbot import QtBot

from trailstop_gui.single_instance import (
    ALREADY_RUNNING,
    CANNOT_LOCK,
    HANDED_OVER,
    LOCK_NAME,
    MAIN_WINDOW_NAME,
    SingleInstance,
    server_name,
)

ROOT = Path(__file__).resolve().parents[2]

# A second start: claim the folder, print what happened, exit as main() would.
SECOND_START = """
import sys
from pathlib import Path
from trailstop_gui.single_instance import SingleInstance
instance = SingleInstance(Path(sys.argv[1]), headless=sys.argv[2] == "headless")
if instance.claim(patience=float(sys.argv[3])):
    print("primary", flush=True)
    sys.exit(0)
print("answer:" + instance.answer, flush=True)
print(instance.hand_over_message(), flush=True)
sys.exit(instance.exit_code())
"""

# A running instance that dies without cleaning up: lock file and (on Unix) socket file left behind.
KILLED_INSTANCE = """
import os, signal, sys
from pathlib import Path
from PySide6.QtCore import QCoreApplication
from trailstop_gui.single_instance import SingleInstance
instance = SingleInstance(Path(sys.argv[1]))
assert instance.claim(patience=0)
app = QCoreApplication([])
instance.listen()
os.kill(os.getpid(), signal.SIGKILL)
"""

# Holds the lock but never answers (hung, or busy starting up for longer than a second start waits).
SILENT_INSTANCE = """
import sys, time
from pathlib import Path
from trailstop_gui.single_instance import SingleInstance
instance = SingleInstance(Path(sys.argv[1]))
assert instance.claim(patience=0)
print("claimed", flush=True)
time.sleep(30)
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")


def second_start(
    qtbot: QtBot, directory: Path, mode: str = "window", patience: float = 5.0
) -> tuple[int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SECOND_START, str(directory), mode, str(patience)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        qtbot.waitUntil(lambda: proc.poll() is not None, timeout=20_000)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, _ = proc.communicate()
    return proc.returncode, out.splitlines()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[SingleInstance]:
    instance = SingleInstance(tmp_path)
    assert instance.claim(patience=0)
    instance.listen()
    yield instance
    instance.release()


def test_a_second_start_brings_the_running_window_to_the_front(
    qtbot: QtBot, tmp_path: Path, running: SingleInstance
) -> None:
    window = QMainWindow()
    window.setObjectName(MAIN_WINDOW_NAME)
    qtbot.addWidget(window)
    window.hide()  # closed to the tray
    with qtbot.waitSignal(running.activation_requested, timeout=20_000):
        code, lines = second_start(qtbot, tmp_path)
    assert code == HANDED_OVER
    assert lines[0] == "answer:window"
    assert "already running" in lines[1] and "brought to the front" in lines[1]
    assert window.isVisible()


def test_a_second_headless_start_is_refused(qtbot: QtBot, tmp_path: Path) -> None:
    instance = SingleInstance(tmp_path, headless=True)
    assert instance.claim(patience=0)
    instance.listen()
    try:
        code, lines = second_start(qtbot, tmp_path, "headless")
    finally:
        instance.release()
    assert code == ALREADY_RUNNING
    assert lines[0] == "answer:headless"
    assert "already running in the background" in lines[1]


def test_a_window_start_beside_a_headless_instance_does_not_open_a_second_one(
    qtbot: QtBot, tmp_path: Path
) -> None:
    instance = SingleInstance(tmp_path, headless=True)
    assert instance.claim(patience=0)
    instance.listen()
    try:
        code, lines = second_start(qtbot, tmp_path, "window")
    finally:
        instance.release()
    assert code == ALREADY_RUNNING
    assert "--headless" in lines[1]


def test_an_instance_released_with_a_connection_open_is_freed_at_once(qtbot: QtBot, tmp_path: Path) -> None:
    """Nothing of its own keeps the running instance alive: a slot holding it, kept by a connected socket's
    connection, freed it only when that socket was deleted, from inside the socket's destructor, deleting
    its ancestors there (a worker's segfault in processEvents)."""
    instance = SingleInstance(tmp_path, headless=True)
    assert instance.claim(patience=0)
    instance.listen()
    server = instance._server
    assert server is not None
    client = QLocalSocket()
    client.connectToServer(instance.name)
    assert client.waitForConnected(2000)

    def accepted(server: QLocalServer = server) -> bool:
        return len(server.findChildren(QLocalSocket)) == 1 and not server.hasPendingConnections()

    qtbot.waitUntil(accepted)
    instance.release()
    gone = weakref.ref(instance)
    del instance, server
    gc.collect()
    assert gone() is None
    client.disconnectFromServer()
    qtbot.wait(100)  # the other end's disconnect reaches nothing


def test_after_release_the_next_start_runs(qtbot: QtBot, tmp_path: Path) -> None:
    instance = SingleInstance(tmp_path)
    assert instance.claim(patience=0)
    instance.listen()
    instance.release()
    code, lines = second_start(qtbot, tmp_path)
    assert (code, lines) == (0, ["primary"])


def test_the_lock_and_socket_of_a_killed_instance_are_taken_over(qtbot: QtBot, tmp_path: Path) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_INSTANCE, str(tmp_path)], env=_env(), capture_output=True, timeout=30
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / LOCK_NAME).exists()
    instance = SingleInstance(tmp_path, headless=True)
    assert instance.claim(patience=0)
    instance.listen()  # over the dead one's socket
    try:
        code, lines = second_start(qtbot, tmp_path, "headless")
    finally:
        instance.release()
    assert (code, lines[0]) == (ALREADY_RUNNING, "answer:headless")


def test_an_instance_that_never_answers_still_keeps_the_second_start_out(
    qtbot: QtBot, tmp_path: Path
) -> None:
    silent = subprocess.Popen(
        [sys.executable, "-c", SILENT_INSTANCE, str(tmp_path)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert silent.stdout is not None and silent.stdout.readline().strip() == "claimed"
        started = time.monotonic()
        code, lines = second_start(qtbot, tmp_path, "window", patience=0.5)
        assert time.monotonic() - started < 15
    finally:
        silent.kill()
        silent.wait()
    assert code == ALREADY_RUNNING
    assert lines[0] == f"answer:unresponsive (pid {silent.pid})"


def test_a_folder_that_cannot_hold_the_lock_file_is_reported_as_such(tmp_path: Path) -> None:
    # No file can be created in it (root ignores permissions, so a read-only folder would not do).
    folder = tmp_path / "a file, not a folder"
    folder.write_text("")
    instance = SingleInstance(folder)
    started = time.monotonic()
    assert not instance.claim(patience=5)
    assert time.monotonic() - started < 2  # no point waiting for an instance that is not there
    assert instance.exit_code() == CANNOT_LOCK
    assert instance.hand_over_message().startswith(
        f"TrailStop cannot start: cannot create {folder / LOCK_NAME}"
    )


def test_each_data_folder_has_its_own_instance(tmp_path: Path) -> None:
    first = SingleInstance(tmp_path / "a")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    second = SingleInstance(tmp_path / "b")
    try:
        assert first.claim(patience=0) and second.claim(patience=0)
    finally:
        first.release()
        second.release()


def test_server_name_is_stable_per_folder_and_short_enough_for_a_unix_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 150)
    deep.mkdir()
    assert server_name(tmp_path) == server_name(tmp_path / "." / "")
    assert server_name(tmp_path) != server_name(deep)
    # Unix sockets live in the temp folder and their path must stay under ~100 bytes.
    assert len(server_name(deep)) < 40 and "/" not in server_name(deep)


@pytest.mark.qt  # starts the real (Qt) app twice in subprocesses
def test_the_real_app_refuses_a_second_headless_start(tmp_path: Path) -> None:
    env = dict(_env(), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "trailstop_gui", "--headless", "--data-dir", str(tmp_path)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert first.stdout is not None
        deadline = time.monotonic() + 30
        for line in first.stdout:
            if "headless; data in" in line:
                break
            assert time.monotonic() < deadline, "the first instance never started"
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
        assert second.returncode == ALREADY_RUNNING, second.stdout + second.stderr
        assert "already running in the background" in second.stderr
        assert "TrailStop" not in second.stdout  # it never got as far as starting its services
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
