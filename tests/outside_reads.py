"""Catches the test suite reading files beside the repository, which a fresh clone does not have.

An audit hook (PEP 578) sees every file and folder Python opens in the pytest process. A path inside the
repository's parent folder but outside the repository (``../shared/...``) is recorded, and the session
fails at the end naming each one. The interpreter's own folders (a shared virtualenv beside a git worktree)
and the temporary folder are allowed. Subprocesses are not watched: the slow-tier test that runs the suite
from a lonely copy of the tree (tests/reliability/test_clone_alone.py) covers them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

# Every Python-level way of reading a file (open, io.open_code for imports) raises "open";
# listing a folder raises one of the other two.
WATCHED_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


# Entries of the temporary folder that belong to pytest's and tempfile's own machinery, whenever made.
TEMP_OWNED_PREFIXES = ("pytest-of-",)


def _names_in(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class OutsideReads:
    """Records the paths outside ``repo`` but inside its parent folder that this process opens."""

    def __init__(
        self, repo: Path, allowed: Iterable[str | Path] = (), home: str | Path | None = None
    ) -> None:
        self.repo = os.path.realpath(repo)
        self.parent = os.path.dirname(self.repo)
        # A folder that holds the repository (a temporary folder with the clone in it) excuses nothing
        # beside the repository as a whole...
        resolved = [os.path.realpath(a) for a in allowed]
        self.allowed = tuple(a for a in resolved if not _is_within(self.repo, a))
        # ...but a clone made straight in it (``git clone ... /tmp/x``) has the run's own temporary files
        # beside it: what the run creates there (``tmp*``, pytest's ``pytest-of-<user>``) is not data a
        # clone lacks. Only what was already there when the run began counts.
        self.before: frozenset[str] | None = None
        if self.parent in resolved:
            self.before = frozenset(
                name for name in _names_in(self.parent) if not name.startswith(TEMP_OWNED_PREFIXES)
            )
        self.home = os.path.realpath(home) if home is not None else None
        self.paths: set[str] = set()
        self._inside_hook = threading.local()

    @classmethod
    def for_this_interpreter(cls, repo: Path) -> OutsideReads:
        """Allows the running interpreter's installation and the temporary folder besides ``repo``."""
        allowed = {sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir()}
        return cls(repo, allowed, home=Path.home())

    def is_outside(self, path: str) -> bool:
        """Whether ``path`` (absolute, symlinks resolved) is beside the repository rather than in it."""
        if not _is_within(path, self.parent) or _is_within(path, self.repo):
            return False
        if any(_is_within(path, folder) for folder in self.allowed):
            return False
        if self.before is not None:
            # The repository sits straight in the temporary folder: listing that folder is the temporary
            # files' machinery, and only an entry that was there before the run is beside the repository.
            if path == self.parent:
                return False
            return os.path.relpath(path, self.parent).split(os.sep, 1)[0] in self.before
        if self.parent == self.home:
            # A repository cloned straight into the home folder: the dot-folders there are tools' own
            # per-user settings (keyring looks for ~/.config/python_keyring/keyringrc.cfg wherever the
            # repository is), not data that the tests take from beside the repository.
            name = os.path.relpath(path, self.parent).split(os.sep, 1)[0]
            return not name.startswith(".")
        return True

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        """The audit hook. It must never raise: an exception here would fail the ``open`` it watches."""
        if event not in WATCHED_EVENTS or getattr(self._inside_hook, "active", False):
            return
        self._inside_hook.active = True
        try:
            target = args[0] if args else None
            if target is None or isinstance(target, int):
                return  # os.listdir() of the current folder, or an already open file descriptor
            path = os.path.realpath(os.fsdecode(target))
            if self.is_outside(path):
                self.paths.add(path)
        except Exception:
            pass  # a path it cannot even decode is not one it can judge
        finally:
            self._inside_hook.active = False

    def install(self) -> OutsideReads:
        sys.addaudithook(self.audit)  # for the rest of the process: audit hooks cannot be removed
        return self

    def fail_session(self, session: pytest.Session) -> None:
        """From ``pytest_sessionfinish``: a run that read beside the repository fails, even if all passed."""
        if self.paths and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def write_summary(self, reporter: pytest.TerminalReporter) -> None:
        """From ``pytest_terminal_summary``: name every path, so the offending test is easy to find."""
        if not self.paths:
            return
        reporter.write_sep("=", "files opened outside the repository", red=True)
        reporter.write_line(f"the repository is {self.repo}; a clone has nothing beside it in {self.parent}")
        for path in sorted(self.paths):
            reporter.write_line(f"opened outside the repository: {path}")
