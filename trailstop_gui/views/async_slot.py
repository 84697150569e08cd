"""``async_slot``: qasync's ``asyncSlot`` with types, for the window's request/response flows.

A slot written ``async def`` runs as a task on the qasync loop (``trailstop_gui/event_loop.py``): it awaits
the blocking call (on another thread) and goes on, on the GUI thread, with the answer. An exception it
does not catch reaches ``sys.excepthook`` (the crash dialog), never a task nobody reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, cast

from qasync import asyncSlot

P = ParamSpec("P")


def async_slot(
    *types: type,
) -> Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, asyncio.Task[None]]]:
    """Decorate an ``async def`` slot (``types``: the signal's argument types, as for ``Slot``)."""
    return cast(
        Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, asyncio.Task[None]]],
        asyncSlot(*types),
    )
