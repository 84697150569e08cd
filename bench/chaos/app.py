"""The app under test: ``python -m trailstop_gui --headless`` in a subprocess (`AppProcess`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from bench.chaos.feed import FeedTracker


class AppProcess:
    """``python -m trailstop_gui --headless`` in a subprocess; stdout to the tracker and a transcript."""

    def __init__(
        self,
        sim_url: str,
        data_dir: Path,
        rule: str,
        tracker: FeedTracker,
        transcript: TextIO,
        env: dict[str, str] | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.sim_url = sim_url
        self.data_dir = data_dir
        self.rule = rule
        self.tracker = tracker
        self.transcript = transcript
        self.proc: subprocess.Popen[str] | None = None
        self.generation = 0
        self.started_at = 0.0
        self.ready_at: float | None = None  # when it logged "headless" (its signal handlers are in place)
        self.lines: list[tuple[float, int, str]] = []
        self.start_times: dict[int, float] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._alive: int | None = None  # the generation whose lines still say something about the feeds
        self.on_line: Callable[[float, str], None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1", **self.env)
        command = [
            sys.executable,
            "-m",
            "trailstop_gui",
            "--headless",
            "--sim",
            self.sim_url,
            "--data-dir",
            str(self.data_dir),
            "--broker",
            "both",
            "--auto-protect",
            self.rule,
            *self.extra_args,
        ]
        self.generation += 1
        self.ready_at = None
        self.started_at = time.time()
        self.start_times[self.generation] = self.started_at
        self.tracker.process_started(self.started_at)
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self._alive = self.generation
        self.transcript.write(f"----- start {self.generation} at {self.started_at:.3f}\n")
        self._reader = threading.Thread(
            target=self._read, args=(self.proc, self.generation), name="chaos-app-reader", daemon=True
        )
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str], generation: int) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            t = time.time()
            line = raw.rstrip("\n")
            with self._lock:
                self.lines.append((t, generation, line))
                self.transcript.write(f"{t:.3f} {line}\n")
            if generation != self._alive:
                continue  # signalled already: whatever it says now, it is going down
            if " headless; data in " in line:
                self.ready_at = t
            self.tracker.on_line(t, line)
            if self.on_line is not None:
                self.on_line(t, line)

    def stop(self, sig: int) -> int | None:
        """Send ``sig`` and wait for the process to end; returns its exit code."""
        proc = self.proc
        if proc is None:
            return None
        t = time.time()
        self._alive = None
        if proc.poll() is None:
            proc.send_signal(sig)
        self.tracker.process_ended(t)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        with self._lock:
            self.transcript.write(f"----- end {self.generation}: signal {sig}, exit code {code}\n")
        self.proc = None
        return code

    def output(self) -> list[tuple[float, int, str]]:
        with self._lock:
            return list(self.lines)
