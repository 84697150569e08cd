"""Blocking broker calls for the window's request/response flows, which are coroutines on the qasync loop.

A flow (the login exchange, a refresh, Protect, the order-route check) reads top to bottom:
``result = await calls.run(session.check_order_route)`` hands the blocking call to a small thread pool
of its own and resumes on the GUI thread with the answer, so the GUI thread never waits on the network
and no runnable, signal object or queued connection carries the answer back. ``start`` tracks the
flows so that shutdown can cancel them and a test can wait for them.

The loop is qasync's QEventLoop over the QApplication (``app.py``; tests: the ``qasync_loop`` fixture).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from PySide6.QtCore import QCoreApplication, QEventLoop

log = logging.getLogger("trailstop.async")

T = TypeVar("T")


class BlockingCalls:
    """A named pool of ``workers`` threads for blocking calls, and the flows awaiting them."""

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._flows: set[asyncio.Future[Any]] = set()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this pool's threads; the awaiting flow resumes on the loop's thread."""
        # get_event_loop, not get_running_loop: a flow started before the app's loop runs (a stored login's
        # route check) can take its first step inside a modal dialog's exec(), with Qt's loop running
        # but not yet asyncio's; the loop it answers to is the same qasync loop either way.
        loop = asyncio.get_event_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def start(self, flow: Coroutine[Any, Any, object]) -> asyncio.Future[Any]:
        """Run ``flow`` on the thread's asyncio loop (qasync's), tracked until it ends.

        A flow catches what it expects; anything else is logged here, never lost in a task nobody reads.
        """
        task = asyncio.ensure_future(flow)
        self._flows.add(task)
        task.add_done_callback(self._finished)
        return task

    @property
    def busy(self) -> bool:
        return bool(self._flows)

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Let the Qt loop run until every flow has ended (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_ms / 1000
        app = QCoreApplication.instance()
        while self._flows and time.monotonic() < deadline:
            if app is None:
                return False
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.005)  # the pool thread's answer arrives through the loop, not in this thread
        return not self._flows

    def shutdown(self) -> None:
        """Cancel the flows and drop calls not yet started; a call already running finishes on its own."""
        for flow in list(self._flows):
            flow.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _finished(self, flow: asyncio.Future[Any]) -> None:
        self._flows.discard(flow)
        if flow.cancelled():
            return
        error = flow.exception()
        if error is not None:
            log.error("%s: a flow failed", self.name, exc_info=error)
