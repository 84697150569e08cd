"""Spin boxes that keep what the trader typed and say what is wrong with it.

Qt's spin boxes drop a keystroke they cannot parse ("1o" becomes 1) and, on Enter or leaving the field,
put the previous value back ("-5" showed "- %" and confirmed the old 2 %): the trader never learns that
the number used is not the one typed. These keep the text as typed, leave ``value()`` at the last good
number, and ``problem()`` says why the text is not a number the field accepts; the form blocks on it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFocusEvent, QKeyEvent, QValidator
from PySide6.QtWidgets import QAbstractSpinBox, QDoubleSpinBox, QSpinBox, QWidget


def _typed(spin: QAbstractSpinBox, prefix: str, suffix: str) -> str:
    text = spin.lineEdit().text()
    if prefix and text.startswith(prefix):
        text = text[len(prefix) :]
    elif prefix and text.startswith(prefix.strip()):
        text = text[len(prefix.strip()) :]
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]
    elif suffix and text.endswith(suffix.strip()):
        text = text[: -len(suffix.strip())]
    return text.strip()


def _problem(typed: str, minimum: float, maximum: float, decimals: int, special: str) -> str | None:
    if special and typed == special:
        return None
    if not typed:
        return "enter a number"
    try:
        number = float(typed.replace(",", ""))
    except ValueError:
        return f"{typed!r} is not a number"
    if number < 0 <= minimum:
        return f"{typed} is negative; enter a positive number"
    if number < minimum:
        return f"must be at least {minimum:g}"
    if number > maximum:
        return f"must be at most {maximum:g}"
    if "." in typed and len(typed.split(".", 1)[1]) > decimals:
        return f"at most {decimals} decimal{'s' if decimals != 1 else ''}" if decimals else "a whole number"
    return None


class _KeepsTyping:
    """The shared behaviour; mixed into QDoubleSpinBox and QSpinBox below."""

    def _typed_problem(self) -> str | None:
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why the text in the field is not an acceptable number (None: it is, and ``value()`` is it)."""
        spin: Any = self
        if not spin.isEnabled():
            return None
        return self._typed_problem()

    # The overrides below reach the Qt spin box through super(): it follows this mixin in the MRO.

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        base: Any = super()
        state, text, pos = base.validate(text, pos)
        # Invalid would drop the keystroke: keep it, and let problem() name what is wrong.
        if state is QValidator.State.Invalid:
            return QValidator.State.Intermediate, text, pos
        return state, text, pos

    def focusOutEvent(self, event: QFocusEvent) -> None:
        if self._typed_problem() is None:
            base: Any = super()
            base.focusOutEvent(event)
            return
        spin: Any = self
        # The spin box's own handler would put the previous value back: the line edit and the widget
        # only, then the form hears that editing finished.
        spin.lineEdit().event(event)
        QWidget.focusOutEvent(spin, event)
        spin.editingFinished.emit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Enter on a bad number goes to the form (which refuses and says why), not back to the old value.
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self._typed_problem() is not None:
            event.ignore()
            return
        base: Any = super()
        base.keyPressEvent(event)


class StrictDoubleSpinBox(_KeepsTyping, QDoubleSpinBox):
    """A QDoubleSpinBox that never silently replaces what was typed."""

    def _typed_problem(self) -> str | None:
        typed = _typed(self, self.prefix(), self.suffix())
        return _problem(typed, self.minimum(), self.maximum(), self.decimals(), self.specialValueText())


class StrictSpinBox(_KeepsTyping, QSpinBox):
    """A QSpinBox that never silently replaces what was typed."""

    def _typed_problem(self) -> str | None:
        typed = _typed(self, self.prefix(), self.suffix())
        problem = _problem(typed, self.minimum(), self.maximum(), 0, self.specialValueText())
        if problem is None and "." in typed:
            return "a whole number"
        return problem
