"""The one SQLite database every table is bound to, and the base class of those tables.

Its own module so that table modules (``db.py``, ``paper_db.py``) import it and ``db.py`` can list every
table without importing anything back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import peewee as pw

# How long a transaction waits for this process's writer before it leaves the wait to SQLite (which then
# waits its own busy_timeout): only a writer that hangs holds it that long.
WRITER_WAIT = 5.0


class SerialWriteDatabase(pw.SqliteDatabase):
    """SQLite whose write transactions, within this process, queue on a lock of their own.

    SQLite lets one writer in at a time, and a second one waits in its busy handler, which sleeps 1, 2, 5,
    10, 15... ms between looks (sqlite3's sqliteDefaultBusyCallback), however soon the first one is done:
    a trigger's commit that began while the flusher of stop moves was committing (its fsync) woke up to
    18 ms after the way was free (bench/tick_to_exit_stages.py: commits behind a flush took 24 ms, 9 ms
    the others). Waiting on a lock here instead, it begins the moment the writer before it commits.
    """

    _state: Any  # peewee's per-thread connection state (untyped there)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # OS thread id -> its connection between two pool tasks (``kept_connection``); before peewee's
        # __init__, which calls init().
        self._parked: dict[int, Any] = {}
        self._parked_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.writer = threading.Lock()
        self._holds = threading.local()  # whether this thread's transaction holds ``writer``

    @contextlib.contextmanager
    def kept_connection(self) -> Iterator[None]:
        """Run a pool task with the connection its OS thread used for the last one, and keep it after.

        Peewee keeps a connection per thread in a ``threading.local``, but a QThreadPool thread gets a
        new Python thread state for every task it runs, and with it an empty ``threading.local``: each
        exit job and each reconcile opened a new SQLite connection (the file, its WAL and shared memory,
        four pragmas; 0.5-1 ms and a dozen system calls on the way from a tick to its exit order,
        bench/tick_to_exit_stages.py). A task runs on one thread at a time, so a connection parked by
        one task is used by no one until the next task on that OS thread takes it back.
        """
        ident = threading.get_ident()
        with self._parked_lock:
            parked = self._parked.pop(ident, None)
        if parked is not None:
            if self._state.closed:
                self._state.set_connection(parked)
            else:
                parked.close()  # a long-lived thread that has its own: the parked one is not needed
        try:
            yield
        finally:
            state = self._state
            # Never one in the middle of a transaction: that one is left to its thread state, as before.
            if not state.closed and not state.transactions and not state.ctx:
                with self._parked_lock:
                    self._parked[ident] = state.conn
                state.reset()  # forgotten by this thread state, open and parked

    def _close_parked(self) -> None:
        with self._parked_lock:
            parked, self._parked = list(self._parked.values()), {}
        for connection in parked:
            connection.close()

    def init(self, database: str | None, *args: Any, **kwargs: Any) -> None:
        self._close_parked()  # connections to the file this pointed at until now
        super().init(database, *args, **kwargs)

    def close(self) -> bool:
        """This thread's connection, and every parked one: the last to close folds the WAL back in."""
        self._close_parked()
        return bool(super().close())

    def begin(self, lock_type: str | None = None) -> None:
        # Past the wait (a writer that hangs), SQLite's own busy timeout decides, as it did before.
        self._holds.writer = self.writer.acquire(timeout=WRITER_WAIT)
        try:
            super().begin(lock_type)
        except BaseException:
            self._let_go()
            raise

    def commit(self) -> None:
        # A failed commit keeps the lock: peewee rolls the transaction back next, and that lets go.
        super().commit()
        self._let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._let_go()

    def _let_go(self) -> None:
        if getattr(self._holds, "writer", False):
            self._holds.writer = False
            self.writer.release()


# Deferred: init_db() points it at a file. Peewee keeps one connection per thread, which is what the
# threads design asks for (GUI, feed and executor threads each use their own connection).
# IMMEDIATE: a transaction takes the write lock when it begins. A deferred one that reads, then writes,
# fails at once with "database is locked" when another thread writes in between; this one waits instead.
database = SerialWriteDatabase(None, lock_type="IMMEDIATE")

PRAGMAS = {
    "journal_mode": "wal",
    # FULL: a committed transition survives a power cut, not just a crash of the app. Stop moves are
    # batched (write-behind), so the extra fsync is paid a few times a second at most.
    "synchronous": 2,
    "foreign_keys": 1,
    "busy_timeout": 5000,
}


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False
