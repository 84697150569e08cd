"""ExitSendLog: when this process's exit requests last ended, on disk for the next start; no Qt.

Why: the "exit_sending" marker is committed with TRIGGERED (one fsync before the order), so it precedes the
request, possibly by a long time; after a crash it says only that an exit *may* be at the broker. The
restart then looks the tag up over the whole lost-order window (the order book trails a send by 0.5-2 s)
before it may send, even when the app died before the request left. This log says more, without an fsync:

- before each exit request: ``in_flight`` + 1; after it returned or raised: ``in_flight`` - 1 and
  ``ended`` = now. Written in place, not synced: a SIGKILL leaves the page cache, so the next process reads
  exactly what was written; a torn or missing file reads as "unknown".
- at the next start, ``in_flight == 0`` means every request of the previous process had ended by ``ended``
  (a crash between the marker and the request leaves 0 and an old ``ended``): the window counts from
  ``ended``, as it counts from the failed call in-process (ExitJobs._look_for_lost_exit). ``in_flight > 0``,
  or anything unreadable: unknown, the whole window from the restart, as before.
- a process starts its file with ``ended`` = its own start: every request of the processes before it had
  ended by then (one instance at a time; a killed process's connections are closed by the kernel).
- every record carries its process's run number (counted in the database at each start, before anything
  is sent: ProtectionStore.next_run); the next start trusts only the record of the run just before its
  own, so a process that could not write its record (the file could not be opened) leaves none to trust.
  A record that could not be rewritten later is made unreadable, or removed.

A crash between any two steps leaves the file conservative: before "+1", nothing was sent after ``ended``;
between "+1" and "-1", ``in_flight > 0`` (unknown).

Clocks: the elapsed time is the smaller of the wall clock's and the monotonic clock's. The monotonic clock
is system-wide and counts from boot (Linux CLOCK_MONOTONIC, Windows QPC, macOS uptime), so across a reboot
(a power loss may drop unsynced writes) its difference is at most the new uptime, never more than the time
since the crash; the wall clock covers a platform where it is not system-wide. Only both wrong together
(a wall clock stepped forward during the restart, on such a platform) could make it too long.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("trailstop.exit")

_VERSION = "exit-sends-v1"
_WIDTH = 96  # every write is one fixed-size record over the last: never a shorter one leaving a tail


@dataclass(frozen=True)
class SendState:
    """One record: whose it is (the run), how many exit requests are in the air and when the last one
    ended (both clocks)."""

    run: int
    in_flight: int
    ended_wall: float
    ended_mono: float

    def encode(self) -> bytes:
        text = f"{_VERSION} {self.run} {self.in_flight} {self.ended_wall:.6f} {self.ended_mono:.6f}"
        text = f"{text} {zlib.crc32(text.encode('ascii')):08x}"
        return text.ljust(_WIDTH - 1).encode("ascii") + b"\n"

    @staticmethod
    def decode(raw: bytes) -> SendState | None:
        """The record, or None when it cannot be read (missing, torn, another version). The checksum
        keeps a record half overwritten by the next one (a torn write) from reading as a valid, older one."""
        try:
            *fields, checksum = raw.decode("ascii").split()
            version, run, in_flight, wall, mono = fields
            if int(checksum, 16) != zlib.crc32(" ".join(fields).encode("ascii")):
                return None
            state = SendState(int(run), int(in_flight), float(wall), float(mono))
        except (UnicodeDecodeError, ValueError):
            return None
        if version != _VERSION or state.in_flight < 0:
            return None
        return state


class ExitSendLog:
    """The exit requests of this process, as a record the next start can read (see the module's doc)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        run: int,
        first_event_id: int,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        """``run``: this start's number (ProtectionStore.next_run); ``first_event_id``: the last journal
        entry written before this process started (markers up to it are the previous processes')."""
        self.path = Path(path)
        self.run = run
        self.first_event_id = first_event_id
        self._wall = wall
        self._mono = mono
        self._lock = threading.Lock()
        try:
            self.previous = SendState.decode(self.path.read_bytes())
        except OSError:
            self.previous = None
        if self.previous is not None and self.previous.run != run - 1:
            self.previous = None  # not the last run's (it wrote none): says nothing about that run's sends
        self._in_flight = 0
        self._ended = (wall(), mono())
        self._file: BinaryIO | None = None
        try:
            # Owner-only, like the database and the log (the secrets audit checks the data folder's modes).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
            self._file = os.fdopen(fd, "r+b", buffering=0)
        except OSError as exc:
            # Exits go out all the same; the next start finds no record of this run and looks over the
            # whole window.
            log.error(
                "exit send log %s cannot be opened (%s): restarts look over the whole window", path, exc
            )
            return
        self._write()

    def seconds_quiet(self) -> float | None:
        """Seconds since every exit request of the previous process had ended; None when unknown (one
        was in the air at the crash, or no readable record): the caller then waits the whole window."""
        state = self.previous
        if state is None or state.in_flight:
            return None
        elapsed = min(self._wall() - state.ended_wall, self._mono() - state.ended_mono)
        return max(elapsed, 0.0)

    def sending(self) -> None:
        """Just before an exit request: it is in the air from now on (written before it leaves)."""
        with self._lock:
            self._in_flight += 1
            self._write()

    def ended(self) -> None:
        """The request returned or raised: whatever it did at the broker, it did by now."""
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            self._ended = (self._wall(), self._mono())
            self._write()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()

    def _write(self) -> None:
        if self._file is None:
            return  # never opened: no record of this run on disk, none trusted
        state = SendState(self.run, self._in_flight, *self._ended)
        try:
            self._file.seek(0)
            self._file.write(state.encode())
        except (OSError, ValueError) as exc:
            # A full disk or a closed file: the record may be stale. Sending stays safe only if the next
            # start does not trust it, so make it unreadable (in_flight unknown) where we still can.
            log.warning(
                "exit send log %s not written (%s): the next start looks over the whole window",
                self.path,
                exc,
            )
            self._poison()

    def _poison(self) -> None:
        try:
            self.path.write_bytes(b"unknown\n")
        except OSError:
            try:
                self.path.unlink()  # a missing record reads as unknown too
            except OSError:
                log.error("exit send log %s could not be marked unknown", self.path)
