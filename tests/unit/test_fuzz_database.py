"""A damaged or locked database file: a clear DatabaseError and a backup, never a crash or silent data loss.

The damage is fuzzed: bytes flipped, pages zeroed, the file cut short or padded with junk, the header
overwritten. Whatever happens, opening the store either works on a file SQLite vouches for, or raises
DatabaseError; a damaged file is moved aside with its -wal and -shm, byte for byte, and the message says
where.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trailstop_gui.models import db
from trailstop_gui.models.db import DatabaseError
from trailstop_gui.models.domain import Status, TrailRule
from trailstop_gui.models.store import ProtectionStore

# Thousands of generated cases: make test runs them, make unit's quick loop leaves them out.
pytestmark = pytest.mark.fuzz

PAGE = 4096
_counter = itertools.count()


def build_reference(path: Path) -> None:
    """A database with what a trader's holds: accounts, protections in several states, a journal."""
    with ProtectionStore(path) as store:
        account = store.add_account("kite", "Zerodha", user_id="AB1234", api_key="key")
        for i in range(12):
            p = store.create_protection(
                account_id=account.id,
                broker="kite",
                instrument=408065 + i,
                symbol=f"SYM{i}",
                exchange="NSE",
                side="BUY" if i % 2 else "SELL",
                product="MIS",
                quantity=5 + i,
                filled_quantity=5 + i,
                tick_size=0.05,
                rule=TrailRule.parse("percent:2"),
                entry_price=100.0 + i,
                status=Status.OPEN,
            )
            assert p.stop is not None
            store.record_stop(p.id, p.stop + 0.5 if p.side.value == "BUY" else p.stop - 0.5)
            store.flush()
            if i % 3 == 0:
                store.transition(p.id, Status.TRIGGERED, expected=Status.OPEN, reason="stop")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("reference") / "trailstop.db"
    build_reference(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    conn.close()
    return path.read_bytes()


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def place(folder: Path, content: bytes) -> Path:
    target = folder / f"case{next(_counter)}"
    target.mkdir()
    path = target / "trailstop.db"
    path.write_bytes(content)
    return path


def open_or_explain(path: Path) -> tuple[ProtectionStore | None, DatabaseError | None]:
    """Open the store; the only exception allowed out is DatabaseError."""
    try:
        return ProtectionStore(path), None
    except DatabaseError as exc:
        return None, exc


def assert_kept_or_backed_up(path: Path, original: bytes, error: DatabaseError) -> None:
    message = str(error)
    if error.backup is not None:
        assert not path.exists(), "a damaged file was backed up but is still in place"
        assert error.backup.read_bytes() == original, "the backup is not the damaged file, byte for byte"
        assert str(error.backup) in message
        assert error.backup.name.startswith("trailstop.db.corrupt-")
        assert "damaged" in message
    else:
        # Not moved (locked, unreadable, from a newer TrailStop): then it must be exactly as it was.
        assert path.read_bytes() == original
    assert "Traceback" not in message


@st.composite
def damage(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    pages = size // PAGE
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(["flip", "flip", "zero_page", "truncate", "append", "header", "page_junk"])
        )
        steps.append((kind, draw(st.integers(0, size - 1)), draw(st.integers(1, 255)) if pages else 1))
    return steps


def apply(content: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(content)
    for kind, where, value in steps:
        if not data:
            break
        where %= len(data)
        if kind == "flip":
            data[where] ^= value
        elif kind == "zero_page":
            start = where - where % PAGE
            data[start : start + PAGE] = bytes(len(data[start : start + PAGE]))
        elif kind == "truncate":
            del data[max(1, where) :]
        elif kind == "append":
            data += bytes([value]) * (where % 3000 + 1)
        elif kind == "header":
            data[where % 100] ^= value
        elif kind == "page_junk":
            start = where - where % PAGE
            junk = bytes((i * value + 7) % 256 for i in range(PAGE))
            data[start : start + PAGE] = junk[: len(data[start : start + PAGE])]
    return bytes(data)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_damaged_file_is_refused_with_a_backup_or_opens_clean(
    reference: bytes, fresh_dir: Path, data: st.DataObject
) -> None:
    mutated = apply(reference, data.draw(damage(len(reference))))
    path = place(fresh_dir, mutated)
    store, error = open_or_explain(path)
    event("refused, backed up" if error is not None and error.backup else "refused" if error else "opened")
    if error is not None:
        assert_kept_or_backed_up(path, mutated, error)
        return
    assert store is not None
    try:
        # SQLite vouched for the file's structure (quick_check at open); the store works on it.
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        conn.close()
    finally:
        store.close()


def test_a_damaged_file_whose_check_reports_text_that_is_not_utf8_is_refused(
    reference: bytes, fresh_dir: Path
) -> None:
    """Found by the fuzzer above (one flipped bit in a page of text): SQLite's quick_check quoted the damaged
    bytes, the check's reply could not be decoded, and a UnicodeDecodeError left the store instead of the
    trader's message."""
    mutated = apply(reference, [("flip", 66765, 128)])
    path = place(fresh_dir, mutated)
    store, error = open_or_explain(path)
    if store is not None:
        store.close()
    assert error is not None
    assert_kept_or_backed_up(path, mutated, error)


@pytest.mark.parametrize(
    "content",
    [
        b"SQLite format 2\x00" + bytes(200),
        b"not a database at all, just text" * 50,
        bytes(range(256)) * 40,
    ],
    ids=["old-header", "text", "junk"],
)
def test_a_file_that_is_not_a_database_is_moved_aside(fresh_dir: Path, content: bytes) -> None:
    path = place(fresh_dir, content)
    store, error = open_or_explain(path)
    assert store is None and error is not None and error.backup is not None
    assert_kept_or_backed_up(path, content, error)
    # The next start begins afresh and works; the backup stays where the message said.
    with ProtectionStore(path) as store:
        assert store.accounts() == []
    assert error.backup.read_bytes() == content


def test_a_truncated_database_is_moved_aside_with_its_wal_and_shm(reference: bytes, fresh_dir: Path) -> None:
    path = place(fresh_dir, reference[: len(reference) // 2 + 100])
    wal = path.with_name("trailstop.db-wal")
    shm = path.with_name("trailstop.db-shm")
    wal.write_bytes(b"wal frames of the damaged file")
    shm.write_bytes(b"shm")
    store, error = open_or_explain(path)
    assert store is None and error is not None and error.backup is not None
    backup = error.backup
    assert backup.with_name(backup.name + "-wal").read_bytes() == b"wal frames of the damaged file"
    assert backup.with_name(backup.name + "-shm").exists()  # an index SQLite rebuilds: no data in it
    # A stale WAL must never be replayed into the next, fresh database.
    assert not wal.exists() and not shm.exists() and not path.exists()


def test_two_damaged_files_in_the_same_second_get_two_backups(fresh_dir: Path) -> None:
    path = fresh_dir / "trailstop.db"
    backups = []
    for content in (b"first damaged file" * 30, b"second damaged file" * 30):
        path.write_bytes(content)
        _store, error = open_or_explain(path)
        assert error is not None and error.backup is not None
        backups.append((error.backup, content))
    assert backups[0][0] != backups[1][0]
    for backup, content in backups:
        assert backup.read_bytes() == content


def test_an_intact_database_keeps_every_row(reference: bytes, fresh_dir: Path) -> None:
    path = place(fresh_dir, reference)
    with ProtectionStore(path) as store:
        assert len(store.protections()) == 12
        assert len(store.protections([Status.TRIGGERED])) == 4
        assert store.events(kinds=["stop_moved"])
    assert not list(path.parent.glob("*.corrupt-*"))


def test_a_locked_database_is_reported_and_left_alone(
    reference: bytes, fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(db.PRAGMAS, "busy_timeout", 200)  # fail fast; the app waits 5 s
    path = place(fresh_dir, reference)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")  # another program (a second TrailStop, a database tool) holds it
    try:
        store, error = open_or_explain(path)
        assert store is None and error is not None
        assert error.locked and error.backup is None
        assert "in use by another program" in str(error) and "Nothing was changed" in str(error)
        assert not list(path.parent.glob("*.corrupt-*"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert path.read_bytes() == reference
    with ProtectionStore(path) as store:  # once released, it opens with every row
        assert len(store.protections()) == 12


def test_an_unreadable_file_is_reported_not_moved(reference: bytes, fresh_dir: Path) -> None:
    path = place(fresh_dir, reference)
    path.parent.chmod(0o500)  # the folder cannot be written: no -wal, no -shm
    try:
        store, error = open_or_explain(path)
        if store is not None:  # running as a user who can write anyway (root): nothing to check
            store.close()
            pytest.skip("the folder stays writable for this user")
        assert error is not None and error.backup is None and not error.locked
        assert path.read_bytes() == reference
    finally:
        path.parent.chmod(0o700)
