"""When the app is killed and restarted (`Kills`): SIGKILL (sometimes SIGTERM) at random moments, just
after a stop was crossed, in the middle of a basket's exits, after a crash, and the restart that brings a new
login (the headless app logs in only as it starts). Down for a moment each time; sometimes a second
protection of a position is written meanwhile (positions.py).
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.chaos.run import Run

KILL_REASONS = ("at a random moment", "just after a crossing", "new login")


class Kills:
    """The kills and restarts of one run; the chaos thread (`Run.chaos_loop`) looks at them every 50 ms."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.rng = run.rng
        self.config = run.config
        self.report = run.report
        self.next_kill = 0.0
        self.kill_request: float | None = None  # a kill soon after a crossing or a basket's breach
        self.restart_due: float | None = None  # a restart for a new login
        self.last_kill = 0.0

    def schedule(self, now: float) -> None:
        self.next_kill = now + self.rng.uniform(*self.config.kill_every)

    def on_clock(self, now: float) -> None:
        """A crash is restarted; else the restart for a login, a requested kill or the random one, if due."""
        app = self.run.app
        if app.proc is not None and app.proc.poll() is not None:
            code = app.proc.returncode
            self.run.violation("app exited by itself", f"exit code {code}")
            self.restart_app("after a crash", signal.SIGKILL)
        elif self.restart_due is not None and now >= self.restart_due:
            self.restart_if_due()
        elif self.kill_request is not None and now >= self.kill_request:
            self.kill_request = None
            self.restart_app("just after a crossing", signal.SIGKILL)
        elif now >= self.next_kill:
            sig = signal.SIGTERM if self.rng.random() < 0.15 else signal.SIGKILL
            self.restart_app("at a random moment", sig)
            self.schedule(time.time())

    def after_crossing(self) -> None:
        """Sometimes a kill follows a crossing within 0.4 s (never two kills within 4 s)."""
        if (
            self.rng.random() < self.config.kill_after_crossing
            and self.kill_request is None
            and time.time() - self.last_kill > 4.0
        ):
            self.kill_request = time.time() + self.rng.uniform(0.0, 0.4)

    def restart_app(self, why: str, sig: int) -> None:
        """Stop the app with ``sig``, keep it down a moment (a second protection may be written meanwhile),
        start it again."""
        app = self.run.app
        with self.run.app_lock:
            if app.running:
                ready = app.ready_at is not None
                code = app.stop(sig)
                name = "SIGKILL" if sig == signal.SIGKILL else "SIGTERM"
                self.report.kills[name] += 1
                self.report.kills[why] += 1
                if sig == signal.SIGTERM and ready and code != 0:
                    self.run.violation("unclean shutdown", f"SIGTERM ({why}) gave exit code {code}")
            if self.rng.random() < 0.4:
                self.run.positions.protect_twice()
            time.sleep(self.rng.uniform(*self.config.downtime))
            app.start()
            self.last_kill = time.time()

    def on_app_line(self, t: float, line: str) -> None:
        """The app's output, line by line: a basket's breach may bring a kill, a lost login a restart."""
        if self.config.baskets and "breached:" in line and "basket" in line:
            self.report.basket_breaches += 1
            if self.kill_request is None and self.rng.random() < 0.6:
                self.kill_request = t + self.rng.uniform(0.0, 0.3)  # in the middle of the basket's exits
        # The headless app cannot log in by itself once its login failed or its token was refused: the
        # trader does it, which for the headless app means a restart (it logs in as it starts).
        if ("simulator login failed" in line or ": login needed" in line) and self.restart_due is None:
            self.restart_due = t + self.rng.uniform(0.5, 3.0)

    def restart_if_due(self) -> None:
        if self.restart_due is not None and time.time() >= self.restart_due:
            self.restart_due = None
            sig = signal.SIGTERM if self.rng.random() < 0.5 else signal.SIGKILL
            self.restart_app("new login", sig)
