"""SerialWriteDatabase: a write transaction behind another one waits on the process's writer lock, not in
SQLite's busy handler (which sleeps 1, 2, 5, 10, 15... ms between looks, however soon the way is free)."""

from __future__ import annotations

import threading
from typing import Any

import peewee as pw
import pytest

from tests.unit.models.conftest import _open_protection
from trailstop_gui.models import db
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import ProtectionStore, TransitionRequest


class WatchedLock:
    """The writer lock, telling when a thread has to wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(blocking=False):
            return True
        self.waiting.set()
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()


def test_a_trigger_behind_a_flush_begins_when_the_flush_commits(
    store: ProtectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _open_protection(store)
    other = _open_protection(store)
    lock = WatchedLock()
    monkeypatch.setattr(db.database, "writer", lock, raising=False)
    order: list[str] = []  # what SQLite was asked, in order, by either thread
    flushing, finish = threading.Event(), threading.Event()

    def flush() -> None:
        # A flush of stop moves, caught between its writes and its commit (the fsync).
        with db.database.atomic():
            db.ProtectionRow.update(stop=98.5).where(db.ProtectionRow.id == other).execute()
            flushing.set()
            finish.wait(10)
            order.append("flush commits")

    def trigger(results: list[Any]) -> None:
        db.database.connection().set_trace_callback(
            lambda sql: order.append("trigger begins") if sql.startswith("BEGIN") else None
        )
        results.extend(
            store.transition_many([TransitionRequest(pid, Status.TRIGGERED, expected=Status.OPEN)])
        )

    flusher = threading.Thread(target=flush)
    flusher.start()
    assert flushing.wait(10)
    results: list[Any] = []
    feed = threading.Thread(target=trigger, args=(results,))
    feed.start()
    # The trigger waits for the writer (the old code asked SQLite at once, and slept in its busy handler).
    assert lock.waiting.wait(10)
    finish.set()
    flusher.join(10)
    feed.join(10)
    assert order == ["flush commits", "trigger begins"]
    assert [r.status for r in results] == [Status.TRIGGERED]


def test_a_failed_begin_lets_the_writer_go(store: ProtectionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = _open_protection(store)

    def locked(_self: Any, _lock_type: str | None = None) -> None:
        raise pw.OperationalError("database is locked")

    with monkeypatch.context() as patch:
        patch.setattr(pw.SqliteDatabase, "begin", locked)
        with pytest.raises(pw.OperationalError):
            store.transition(pid, Status.TRIGGERED, expected=Status.OPEN)
    assert not db.database.writer.locked()
    assert store.transition(pid, Status.TRIGGERED, expected=Status.OPEN).status is Status.TRIGGERED


def test_a_rolled_back_transaction_lets_the_writer_go(store: ProtectionStore) -> None:
    pid = _open_protection(store)
    with pytest.raises(RuntimeError), db.database.atomic():
        db.ProtectionRow.update(stop=1.0).where(db.ProtectionRow.id == pid).execute()
        raise RuntimeError("changed its mind")
    assert not db.database.writer.locked()
    assert store.get(pid).stop != 1.0
