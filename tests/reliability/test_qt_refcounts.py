"""Found by a soak of the headless app: PySide6 6.12 on Python 3.11 used up the references to None and True.

Every Qt setter took a reference to None away, every signal emit one to True; after a few thousand the
interpreter aborted ("Fatal Python error: deallocating True") and the app's positions were unprotected. A
fresh interpreter (as the app runs) importing trailstop_gui must survive far more calls than that.
"""

from __future__ import annotations

import os
import subprocess
import sys

from trailstop_gui._immortal import make_singletons_immortal

HAMMER = """
import sys
{guard}
from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal
app = QCoreApplication([])
class Source(QObject):
    changed = Signal()
    moved = Signal(int, float, float)
source = Source()
source.changed.connect(lambda: None)
source.moved.connect(lambda pid, old, new: None)
timer = QTimer()
for _ in range(100_000):
    source.changed.emit()
    source.moved.emit(1, 2.0, 3.0)
    timer.stop()
    source.setObjectName("feed")
print("survived")
"""


def hammer(guard: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    script = HAMMER.format(guard=guard)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )


def test_qt_calls_never_use_up_none_or_true() -> None:
    result = hammer("import trailstop_gui")
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-2000:]


def test_the_installed_pyside6_keeps_its_references_without_the_guard() -> None:
    """pyproject.toml keeps PySide6 below 6.12 on Python 3.11; this fails if a leaking build got in.

    The guard stays as a second line (a bundle built elsewhere, a hand-installed PySide6), but the app
    must not depend on it. Checked with PySide6 6.12.0 on Python 3.11: aborts ("deallocating True").
    """
    result = hammer("")
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-2000:]


def test_the_guard_keeps_a_leaking_build_alive() -> None:
    """A stand-in for the leaking build: a C call that drops references to None, as 6.12 does on 3.11."""
    leak = """
import ctypes
for _ in range(20_000):  # each call takes one reference to None away, like a leaking Qt setter
    ctypes.pythonapi.Py_DecRef(ctypes.py_object(None))
print("survived")
"""
    guarded = subprocess.run(
        [sys.executable, "-c", "import trailstop_gui\n" + leak], capture_output=True, text=True, timeout=60
    )
    assert guarded.returncode == 0 and "survived" in guarded.stdout, guarded.stderr[-2000:]
    if sys.version_info < (3, 12):  # 3.12+ makes None immortal itself: nothing to show there
        bare = subprocess.run([sys.executable, "-c", leak], capture_output=True, text=True, timeout=60)
        assert bare.returncode != 0 and "deallocating None" in bare.stderr


def test_the_guard_is_applied_once_and_only_where_needed() -> None:
    before = sys.getrefcount(None)
    assert make_singletons_immortal() is False  # already applied at import (or not needed at all)
    assert abs(sys.getrefcount(None) - before) < 1000
    if sys.version_info < (3, 12):
        assert sys.getrefcount(None) > 1 << 39
