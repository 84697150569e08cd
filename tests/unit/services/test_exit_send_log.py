"""ExitSendLog: what a crash between any two steps leaves on disk, and what the next start makes of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trailstop_gui.services.exit_send_log import ExitSendLog, SendState


class Clocks:
    """A wall and a monotonic clock the test moves by hand."""

    def __init__(self, wall: float = 1_000_000.0, mono: float = 500.0) -> None:
        self.now_wall = wall
        self.now_mono = mono
        self.runs = 0  # the app's starts on this data folder (ProtectionStore.next_run)

    def wall(self) -> float:
        return self.now_wall

    def mono(self) -> float:
        return self.now_mono

    def advance(self, seconds: float) -> None:
        self.now_wall += seconds
        self.now_mono += seconds


def open_log(path: Path, clocks: Clocks) -> ExitSendLog:
    """One more start of the app: the next run's log."""
    clocks.runs += 1
    return ExitSendLog(path, run=clocks.runs, first_event_id=0, wall=clocks.wall, mono=clocks.mono)


def test_a_record_reads_back_and_anything_else_is_unknown() -> None:
    state = SendState(7, 2, 1_000_000.5, 77.25)
    raw = state.encode()
    assert SendState.decode(raw) == state
    assert len(raw) == len(SendState(10**9, 0, 1e12, 1e9).encode())  # fixed size: no tail of a longer record
    for bad in (b"", b"unknown\n", raw[:20], raw.replace(b"v1", b"v9"), b"exit-sends-v1 -1 1.0 2.0", b"\xff"):
        assert SendState.decode(bad) is None
    # Torn: the next record (the request ended, later) half written over this one. Without the checksum
    # it would read as "nothing in the air since 1000000.5": too long ago, and the window cut short.
    older = SendState(3, 1, 1_000_000.5, 77.25)
    newer = SendState(3, 0, 1_000_009.5, 86.25)
    for cut in range(1, len(newer.encode())):
        torn = newer.encode()[:cut] + older.encode()[cut:]
        assert SendState.decode(torn) in (None, newer, older)


def test_without_a_previous_record_the_whole_window_is_waited(tmp_path: Path) -> None:
    log = open_log(tmp_path / "exit-sends", Clocks())
    assert log.previous is None and log.seconds_quiet() is None
    (tmp_path / "torn").write_bytes(b"exit-sends-v1 0 10")
    assert open_log(tmp_path / "torn", Clocks()).seconds_quiet() is None


def test_the_next_start_counts_from_when_the_last_request_ended(tmp_path: Path) -> None:
    path, clocks = tmp_path / "exit-sends", Clocks()
    first = open_log(path, clocks)
    clocks.advance(5.0)
    first.sending()
    clocks.advance(0.5)
    first.ended()
    clocks.advance(2.0)  # the crash, and the restart 2 s after the request ended
    assert open_log(path, clocks).seconds_quiet() == pytest.approx(2.0)


def test_a_request_in_the_air_at_the_crash_is_unknown(tmp_path: Path) -> None:
    path, clocks = tmp_path / "exit-sends", Clocks()
    first = open_log(path, clocks)
    first.sending()
    first.sending()
    first.ended()  # one of two ended; the other was in the air
    clocks.advance(60.0)
    assert open_log(path, clocks).seconds_quiet() is None


def test_a_process_that_sent_nothing_leaves_its_own_start(tmp_path: Path) -> None:
    """Every request of the processes before it had ended by its start (one instance at a time)."""
    path, clocks = tmp_path / "exit-sends", Clocks()
    open_log(path, clocks).sending()  # the first process dies with a request in the air
    clocks.advance(3.0)
    second = open_log(path, clocks)  # starts, sends nothing, dies
    assert second.seconds_quiet() is None
    clocks.advance(1.5)
    assert open_log(path, clocks).seconds_quiet() == pytest.approx(1.5)


def test_the_shorter_of_the_two_clocks_counts_and_never_below_zero(tmp_path: Path) -> None:
    path, clocks = tmp_path / "exit-sends", Clocks()
    open_log(path, clocks)
    clocks.now_wall += 30.0  # the wall clock stepped forward: the monotonic clock says 1 s
    clocks.now_mono += 1.0
    assert open_log(path, clocks).seconds_quiet() == pytest.approx(1.0)
    clocks.now_wall -= 100.0  # stepped back
    assert open_log(path, clocks).seconds_quiet() == 0.0


def test_a_record_that_cannot_be_written_leaves_none_to_trust(tmp_path: Path) -> None:
    path, clocks = tmp_path / "exit-sends", Clocks()
    log = open_log(path, clocks)
    log.close()
    log.sending()  # the file is gone from under it: the next start must not trust the old record
    clocks.advance(10.0)
    assert open_log(path, clocks).seconds_quiet() is None


def test_only_the_record_of_the_run_just_before_counts(tmp_path: Path) -> None:
    """A start that could not write its record (its file could not be opened) leaves the one before it:
    that one says nothing about the sends of the start in between."""
    path, clocks = tmp_path / "exit-sends", Clocks()
    open_log(path, clocks)
    clocks.runs += 1  # a run that wrote no record
    clocks.advance(10.0)
    assert open_log(path, clocks).seconds_quiet() is None


def test_a_record_that_cannot_be_opened_stops_nothing(tmp_path: Path) -> None:
    clocks = Clocks()
    log = open_log(tmp_path / "missing-folder" / "exit-sends", clocks)
    log.sending()
    log.ended()
    log.close()
    assert log.seconds_quiet() is None and not (tmp_path / "missing-folder").exists()


def test_the_record_is_owner_only(tmp_path: Path) -> None:
    open_log(tmp_path / "exit-sends", Clocks())
    if os.name == "posix":
        assert (tmp_path / "exit-sends").stat().st_mode & 0o777 == 0o600


_CHILD = """
import os, signal, sys, time
from trailstop_gui.services.exit_send_log import ExitSendLog
log = ExitSendLog(sys.argv[1], run=1, first_event_id=0)
step = sys.argv[2]
if step in ("in the air", "answered"):
    log.sending()
if step == "answered":
    log.ended()
print(time.time(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
@pytest.mark.parametrize(
    ("step", "known"),
    [("before the request", True), ("in the air", False), ("answered", True)],
)
def test_a_sigkill_at_each_step_leaves_what_was_written(tmp_path: Path, step: str, known: bool) -> None:
    """A real SIGKILL (no finally, no flush at exit): the unsynced record survives it as written."""
    path = tmp_path / "exit-sends"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), step], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    killed_at = float(out.stdout.split()[0])
    quiet = ExitSendLog(path, run=2, first_event_id=0).seconds_quiet()
    if not known:
        assert quiet is None
    else:
        assert quiet is not None
        # Counted from no later than the kill: never more time than really passed since it.
        assert 0.0 <= quiet <= time.time() - killed_at + 0.05
