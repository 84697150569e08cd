"""Square-off times are durable, journalled, validated, and arrive with the schema-4 migration."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import time
from pathlib import Path

import pytest

from trailstop_gui.models import db
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.models.timed_exit_store import TimedExitStore

OpenProtection = Callable[[ProtectionStore], int]


def test_set_change_clear_and_journal(store: ProtectionStore, open_protection: OpenProtection) -> None:
    times = TimedExitStore(store)
    pid = open_protection(store)
    assert times.get(pid) is None
    assert times.set(pid, "15:15") == time(15, 15)
    assert times.set(pid, "15:15") == time(15, 15)  # no change, no journal line
    assert times.set(pid, time(14, 0)) == time(14, 0)
    assert times.all() == {pid: time(14, 0)}
    assert times.set(pid, None) is None
    assert times.all() == {}
    events = [(e.old, e.new) for e in store.events(protection_id=pid, kinds=["square_off_time"])]
    assert events == [("", "15:15"), ("15:15", "14:00"), ("14:00", "")]


def test_bad_input_names_the_field_and_keeps_what_is_stored(
    store: ProtectionStore, open_protection: OpenProtection
) -> None:
    times = TimedExitStore(store)
    pid = open_protection(store)
    times.set(pid, "15:15")
    with pytest.raises(ValueError, match="exit time"):
        times.set(pid, "16:00")
    assert times.get(pid) == time(15, 15)
    with pytest.raises(KeyError):
        times.set(pid + 100, "15:15")


def test_a_version_3_file_gets_the_table_and_keeps_its_protections(
    tmp_path: Path, open_protection: OpenProtection
) -> None:
    path = tmp_path / "v3.db"
    with ProtectionStore(path) as store:
        pid = open_protection(store)
        before = store.get(pid)
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE timed_exit; DROP TABLE basket_member; DROP TABLE basket; DROP TABLE underlying_rule;"
        "UPDATE meta SET value='3' WHERE key='schema_version';"
    )
    conn.close()
    with ProtectionStore(path) as store:
        assert db.schema_version() == db.SCHEMA_VERSION
        assert store.get(pid) == before
        assert TimedExitStore(store).set(pid, "15:15") == time(15, 15)
