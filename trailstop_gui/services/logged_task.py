"""The services' pool work: a QRunnable that runs one function and logs what it raises, so that nothing
dies silently in a pool (a QRunnable's exception would otherwise vanish with its thread's run)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QRunnable

from trailstop_gui.models.store import kept_connection


class LoggedTask(QRunnable):
    """Runs ``fn`` on a pool; an exception is logged to ``log`` as "<what> failed", with its traceback."""

    def __init__(self, fn: Callable[[], object], what: str, log: logging.Logger) -> None:
        super().__init__()
        self.fn, self.what, self.log = fn, what, log

    def run(self) -> None:
        try:
            with kept_connection():  # not a new SQLite connection for every task (a reconcile's)
                self.fn()
        except Exception:
            self.log.exception("%s failed", self.what)
