"""Suite-wide set-up: Qt renders offscreen (there is no display in CI)."""

from __future__ import annotations

import os

# Before any Qt import: pytest-qt creates the QApplication lazily, so this is early enough.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
