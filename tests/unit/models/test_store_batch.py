"""store.transition_many: the triggers of one tick in one transaction, each move checked on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.models.test_store import new_protection, raw_rows
from trailstop_gui.models import prepared_sql
from trailstop_gui.models.domain import Status
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore, TransitionRequest


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = ProtectionStore(tmp_path / "batch.db")
    yield s
    s.close()


def trigger(pid: int, stop: float = 97.5) -> TransitionRequest:
    return TransitionRequest(
        pid, Status.TRIGGERED, expected=Status.OPEN, reason="stop", price=97.4, fields={"stop": stop}
    )


def test_every_move_commits_in_one_transaction(store: ProtectionStore, tmp_path: Path) -> None:
    account = store.add_account("kite", "Zerodha", user_id="AB1234").id
    pids = [new_protection(store, account).id for _ in range(5)]
    commits: list[int] = []
    database = store._db  # counting commits is the point of this test
    original = database.commit

    def counting_commit() -> None:
        commits.append(1)
        original()

    database.commit = counting_commit  # type: ignore[method-assign]
    try:
        results = store.transition_many([trigger(pid) for pid in pids])
    finally:
        database.commit = original  # type: ignore[method-assign]
    assert [r.status for r in results if not isinstance(r, Exception)] == [Status.TRIGGERED] * 5
    assert len(commits) == 1
    on_disk = raw_rows(tmp_path / "batch.db", "SELECT status, stop FROM protection ORDER BY id")
    assert on_disk == [("TRIGGERED", 97.5)] * 5
    journal = [(e.old, e.new) for pid in pids for e in store.events(protection_id=pid, kinds=["transition"])]
    assert journal == [("OPEN", "TRIGGERED")] * 5


def test_a_failed_move_is_reported_in_its_place_and_leaves_no_trace(store: ProtectionStore) -> None:
    account = store.add_account("kite", "Zerodha", user_id="AB1234").id
    first, taken, closed = (new_protection(store, account).id for _ in range(3))
    store.transition(taken, Status.TRIGGERED, expected=Status.OPEN)  # another thread got there first
    store.transition(closed, Status.REMOVED)
    results = store.transition_many([trigger(first), trigger(taken), trigger(closed), trigger(999)])
    assert not isinstance(results[0], Exception) and results[0].status is Status.TRIGGERED
    assert isinstance(results[1], ConcurrentTransition)
    assert isinstance(results[2], ConcurrentTransition | IllegalTransition)
    assert isinstance(results[3], KeyError)
    assert store.get(taken).stop == 98.0  # the failed move wrote nothing
    assert len(store.events(protection_id=taken, kinds=["transition"])) == 1


def test_a_bad_field_refuses_the_whole_batch_before_writing(store: ProtectionStore) -> None:
    account = store.add_account("kite", "Zerodha", user_id="AB1234").id
    pids = [new_protection(store, account).id for _ in range(2)]
    with pytest.raises(ValueError, match="cannot change x"):
        store.transition_many(
            [trigger(pids[0]), TransitionRequest(pids[1], Status.TRIGGERED, fields={"x": 1})]
        )
    assert [store.get(pid).status for pid in pids] == [Status.OPEN, Status.OPEN]


def test_commit_transitions_reports_failures_only_and_the_moves_are_on_disk(
    store: ProtectionStore, tmp_path: Path
) -> None:
    # The tick path's commit: no rows read back (the exits go as it returns), only what failed.
    account = store.add_account("kite", "Zerodha", user_id="AB1234").id
    moved, taken = (new_protection(store, account).id for _ in range(2))
    store.transition(taken, Status.TRIGGERED, expected=Status.OPEN)
    failures = store.commit_transitions([trigger(moved), trigger(taken)])
    assert failures[0] is None and isinstance(failures[1], ConcurrentTransition)
    on_disk = raw_rows(tmp_path / "batch.db", f"SELECT status, stop FROM protection WHERE id = {moved}")
    assert on_disk == [("TRIGGERED", 97.5)]


def test_one_move_commits_without_a_savepoint_and_a_failed_one_leaves_no_trace(
    store: ProtectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick's single trigger is its transaction's only move: no SAVEPOINT/RELEASE before the exit
    leaves; a refused one is rolled back whole, its marker with it."""
    account = store.add_account("kite", "Zerodha", user_id="AB1234").id
    pid, taken = new_protection(store, account).id, new_protection(store, account).id
    store.transition(taken, Status.TRIGGERED, expected=Status.OPEN)  # another thread got there first
    executed: list[str] = []
    original = store._db.execute_sql

    def recorded(sql: str, *args: object, **kwargs: object) -> object:
        executed.append(sql)
        return original(sql, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store._db, "execute_sql", recorded)
    marker = (("exit_sending", "attempt 1"),)
    move = TransitionRequest(
        pid, Status.TRIGGERED, expected=Status.OPEN, fields={"stop": 97.5}, events=marker
    )
    assert store.commit_transitions([move]) == [None]
    assert not [sql for sql in executed if "SAVEPOINT" in sql.upper()]
    assert [e.kind for e in store.events(protection_id=pid)][-2:] == ["transition", "exit_sending"]
    refused = TransitionRequest(taken, Status.TRIGGERED, expected=Status.OPEN, events=marker)
    failures = store.commit_transitions([refused])
    assert isinstance(failures[0], ConcurrentTransition)
    assert not store.events(protection_id=taken, kinds=["exit_sending"])


def test_a_one_move_commit_rolls_back_what_it_wrote_when_the_write_fails(
    store: ProtectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a savepoint, the move's own transaction is what a refusal after the row's update undoes."""
    account = store.add_account("kite", "Zerodha", user_id="AB1234").id
    pid = new_protection(store, account).id
    original = prepared_sql.update

    def lost(*args: object, **kwargs: object) -> int:
        original(*args, **kwargs)  # type: ignore[arg-type]
        return 0  # as if another writer had changed it: the update's effect must not stay

    monkeypatch.setattr(prepared_sql, "update", lost)
    failures = store.commit_transitions([trigger(pid)])
    assert isinstance(failures[0], ConcurrentTransition)
    monkeypatch.undo()
    assert store.get(pid).status is Status.OPEN
    assert store.get(pid).stop == 98.0
    assert not store.events(protection_id=pid, kinds=["transition"])
