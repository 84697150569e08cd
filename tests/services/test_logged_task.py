"""LoggedTask: the services' pool work never dies silently."""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest
from PySide6.QtCore import QThreadPool

from tests.factories import protection
from trailstop_gui.models import db
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.logged_task import LoggedTask


def test_what_the_work_raises_is_logged_with_what_it_was(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("odd reply")

    log = logging.getLogger("trailstop.test")
    pool = QThreadPool()
    with caplog.at_level(logging.ERROR, logger="trailstop.test"):
        pool.start(LoggedTask(broken, "reconcile 7", log))
        assert pool.waitForDone(5_000)
    [record] = caplog.records
    assert record.getMessage() == "reconcile 7 failed" and record.exc_info is not None
    assert "odd reply" in str(record.exc_info[1])


def test_work_that_succeeds_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []
    pool = QThreadPool()
    with caplog.at_level(logging.DEBUG, logger="trailstop.test"):
        pool.start(LoggedTask(lambda: done.append(1), "nothing", logging.getLogger("trailstop.test")))
        assert pool.waitForDone(5_000)
    assert done == [1] and caplog.records == []


def test_tasks_on_one_pool_thread_keep_one_sqlite_connection(store: ProtectionStore) -> None:
    # A pool thread gets a new Python thread state (and threading.local) for every task: without
    # kept_connection peewee opened a new SQLite connection each time (bench/tick_to_exit_stages.py).
    # Qt may start a task on a fresh OS thread even with one allowed (the last one had not yet gone back
    # to the idle list when the next task came: seen under load), so the connection is compared per OS thread.
    pid = protection(store).id
    seen: list[tuple[int, object]] = []  # (OS thread, its connection) per task
    pool = QThreadPool()
    pool.setMaxThreadCount(1)
    log = logging.getLogger("trailstop.test")

    def read() -> None:
        store.get(pid)
        seen.append((threading.get_ident(), db.database.connection()))

    for _ in range(6):
        pool.start(LoggedTask(read, "read", log))
        assert pool.waitForDone(5_000)
    by_thread: dict[int, list[object]] = {}
    for ident, connection in seen:
        by_thread.setdefault(ident, []).append(connection)
    assert len(seen) == 6 and max(len(c) for c in by_thread.values()) >= 2  # some thread ran tasks again
    for connections in by_thread.values():
        assert all(c is connections[0] for c in connections)  # one connection per OS thread, kept
    assert all(c is not db.database.connection() for _, c in seen)  # the pool's own, not this thread's
    store.close()  # closes the parked ones too: the last connection to close folds the WAL back in
    for _, connection in seen:
        with pytest.raises(sqlite3.ProgrammingError):
            connection.execute("SELECT 1")  # type: ignore[attr-defined]
