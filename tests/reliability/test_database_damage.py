"""The app with a damaged or locked database: a clear message, a backup, an exit code; never a traceback.

(The store's side is fuzzed in tests/unit/test_fuzz_database.py.) Here the real headless app meets a
damaged file, and then starts afresh; a locked file is reported and left alone; and the window shows the
message in a dialog.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from trailstop_gui import app as app_module
from trailstop_gui.models.db import DatabaseError
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=17, auto=False)
    yield handle
    handle.stop()


def headless(sim: SimulatorHandle, data: Path, seconds: float) -> subprocess.CompletedProcess[str]:
    """Run the headless app for at most ``seconds``; SIGTERM it if it is still running then."""
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        PYTHONUNBUFFERED="1",
        TRAILSTOP_SIM_TOKEN=sim.control_headers["X-Sim-Token"],
    )
    command = [sys.executable, "-m", "trailstop_gui", "--headless", "--sim", sim.url, "--data-dir", str(data)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_a_damaged_database_stops_the_app_with_a_message_and_a_backup(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    damaged = b"SQLite format 3\x00" + os.urandom(8000)
    (data / "trailstop.db").write_bytes(damaged)
    (data / "trailstop.db-wal").write_bytes(b"the damaged file's WAL")

    result = headless(sim, data, 30)
    assert result.returncode == app_module.DATABASE_UNUSABLE, result
    backups = sorted(data.glob("trailstop.db.corrupt-*"))
    assert [b.name for b in backups if not b.name.endswith(("-wal", "-shm"))] == [backups[0].name]
    assert backups[0].read_bytes() == damaged
    assert (data / f"{backups[0].name}-wal").read_bytes() == b"the damaged file's WAL"
    assert "damaged" in result.stderr and str(backups[0]) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert str(backups[0]) in (data / "logs" / "trailstop.log").read_text()

    # The next start begins with a fresh database and works; the backup stays.
    again = headless(sim, data, 6)
    assert again.returncode == 0, again
    assert "feed: live" in again.stdout
    assert backups[0].read_bytes() == damaged
    conn = sqlite3.connect(data / "trailstop.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_a_locked_database_is_reported_and_left_as_it_was(sim: SimulatorHandle, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = headless(sim, data, 4)  # a normal database, made by a normal start
    assert first.returncode == 0, first
    before = (data / "trailstop.db").read_bytes()
    holder = sqlite3.connect(data / "trailstop.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")  # a database tool, say, holding it
    try:
        result = headless(sim, data, 40)  # the app waits 5 s for the lock before it gives up
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == app_module.DATABASE_UNUSABLE, result
    assert "in use by another program" in result.stderr and "Traceback" not in result.stderr
    assert not list(data.glob("trailstop.db.corrupt-*"))
    assert (data / "trailstop.db").read_bytes() == before


def test_the_window_shows_the_message(qtbot: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(
        QMessageBox, "critical", staticmethod(lambda _parent, title, text, *a: shown.append((title, text)))
    )
    error = DatabaseError(
        f"The database {tmp_path}/trailstop.db is damaged ... moved to {tmp_path}/trailstop.db.corrupt-1",
        backup=tmp_path / "trailstop.db.corrupt-1",
    )
    assert app_module.database_unusable(error, window=True) == app_module.DATABASE_UNUSABLE
    assert shown == [("TrailStop cannot open its database", str(error))]
