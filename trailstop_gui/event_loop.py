"""The GUI thread's asyncio loop: qasync's QEventLoop over the application object.

With it, the window's request/response flows (the login exchange, a refresh, Protect, the order-route
check) are coroutines that await blocking calls run on other threads (``services/async_calls.py``) and
resume on the GUI thread. The feed threads keep asyncio loops of their own; this one is the GUI thread's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import qasync
from PySide6.QtCore import QCoreApplication


def install_event_loop(app: QCoreApplication) -> qasync.QEventLoop:
    """Make qasync's loop over ``app`` this thread's asyncio loop; :func:`run_event_loop` runs it."""
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    return loop


def run_event_loop(loop: qasync.QEventLoop) -> int:
    """Run Qt's loop (``app.exec()``) with the asyncio loop running in it; returns exec's exit code."""
    return int(loop.run_forever())


def close_event_loop(loop: qasync.QEventLoop) -> None:
    """Cancel the flows still pending and release the loop, once every service that used it stopped."""
    for task in asyncio.all_tasks(loop):
        task.cancel()
    asyncio.set_event_loop(None)
    loop.close()


@contextlib.contextmanager
def caller_driven_event_loop(app: QCoreApplication) -> Iterator[qasync.QEventLoop]:
    """qasync's loop for code that spins Qt's loop itself (``processEvents``, a local ``QEventLoop``,
    pytest-qt's ``waitSignal``): inside the block it counts as running, as under ``run_event_loop``.

    Every callback of a qasync loop is a Qt timer or signal, so whoever spins Qt runs the flows. On the
    way out the loop is released without ``loop.stop()``: that calls ``QCoreApplication.exit()``, after
    which every local ``QEventLoop.exec()`` returns at once until the next ``app.exec()``.
    """
    outer = asyncio.events._get_running_loop()  # a caller-driven loop may nest (the self-test in a test)
    loop = qasync.QEventLoop(app, already_running=True)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        for _ in range(100):  # a cancelled flow ends on its next step
            if all(task.done() for task in pending):
                break
            app.processEvents()
        app.aboutToQuit.disconnect(loop._after_run_forever)
        loop._QEventLoop__is_running = False  # qasync's own flag, set by already_running; no API clears it
        asyncio.events._set_running_loop(outer)
        asyncio.set_event_loop(outer)
        loop.close()
