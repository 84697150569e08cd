"""Keeps None, True and False alive under a PySide6 build that drops references to them on Python 3.11.

PySide6 6.12's wheels target the stable ABI but are compiled with Python 3.12+ headers, where None, True and
False are immortal (PEP 683) and returning them takes no new reference. Loaded by Python 3.11, every Qt call
that returns None (any setter) or a bool (any signal emit) then takes one reference away for good, and after
a few thousand calls the interpreter aborts with "Fatal Python error: deallocating None" (or True): the app
dies and its positions are left unprotected. A soak run of the headless app with ten protected positions
died this way after two minutes.

Python 3.12 makes these objects immortal by giving them a huge reference count; this does the same on 3.11,
once, at import. The durable fix is in pyproject.toml: PySide6 below 6.12 on Python 3.11 (6.11.3 keeps its
references). This guard stays as a second line, for a PySide6 installed or bundled some other way.
"""

from __future__ import annotations

import ctypes
import platform
import sys

# 2**40 references: at a million lost references a second it would last twelve days; the app loses a few
# hundred a second at most.
_RESERVE = 1 << 40
_applied = False


def make_singletons_immortal() -> bool:
    """Give None, True, False, Ellipsis and NotImplemented a reference count nothing can use up.

    Only on CPython before 3.12 (3.12+ does it itself), and not on a trace-refs debug build (whose object
    header does not start with the count). Returns whether it did anything; a second call does nothing.
    """
    global _applied
    if _applied or sys.version_info >= (3, 12) or platform.python_implementation() != "CPython":
        return False
    if hasattr(sys, "getobjects"):  # Py_TRACE_REFS: two pointers come before ob_refcnt
        return False
    for singleton in (None, True, False, Ellipsis, NotImplemented):
        ctypes.c_ssize_t.from_address(id(singleton)).value += _RESERVE
    _applied = True
    return True
