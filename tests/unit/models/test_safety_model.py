"""The safety stop's model: its level on the tick grid, its stored fields, and the schema 3 migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.models.test_store import new_protection, raw_rows
from trailstop_gui.models import db
from trailstop_gui.models.domain import (
    SafetyKind,
    SafetyState,
    Side,
    Status,
    check_safety_buffer,
    on_grid,
    safety_buffer,
    safety_level,
)
from trailstop_gui.models.store import ProtectionStore


@pytest.mark.parametrize(
    ("side", "stop", "tick", "percent", "ticks", "expected"),
    [
        (Side.BUY, 1500.0, 0.05, 1.0, 5, 1485.0),  # 1 %: 15.00
        (Side.SELL, 1500.0, 0.05, 1.0, 5, 1515.0),
        (Side.BUY, 1470.0, 0.05, 1.0, 5, 1455.3),  # 14.70
        (Side.BUY, 1472.85, 0.05, 1.0, 5, 1458.1),  # 14.7285 -> rounded down, never tighter
        (Side.SELL, 1472.85, 0.05, 1.0, 5, 1487.6),  # rounded up
        (Side.BUY, 10.0, 0.05, 1.0, 5, 9.75),  # 1 % is 0.10: five ticks are larger
        (Side.SELL, 10.0, 0.05, 1.0, 5, 10.25),
        (Side.BUY, 10.0, 0.05, 1.0, 0, 9.9),
    ],
)
def test_safety_level_is_behind_the_stop_on_the_grid(
    side: Side, stop: float, tick: float, percent: float, ticks: int, expected: float
) -> None:
    assert safety_level(side, stop, tick, percent, ticks) == expected


@given(
    stop=st.floats(1.0, 50_000.0),
    tick=st.sampled_from([0.05, 0.01, 0.1, 0.25, 1.0]),
    percent=st.floats(0.1, 10.0),
    ticks=st.integers(0, 20),
    long=st.booleans(),
)
def test_safety_level_is_never_tighter_than_the_buffer(
    stop: float, tick: float, percent: float, ticks: int, long: bool
) -> None:
    side = Side.BUY if long else Side.SELL
    level = safety_level(side, stop, tick, percent, ticks)
    buffer = safety_buffer(stop, tick, percent, ticks)
    assert on_grid(level, tick)
    if long:
        assert level <= stop - buffer + 1e-6 or level == pytest.approx(tick)
        assert level > stop - buffer - tick - 1e-6 or level == pytest.approx(tick)
    else:
        assert stop + buffer - 1e-6 <= level < stop + buffer + tick + 1e-6


@pytest.mark.parametrize(("percent", "ticks"), [(0, 5), (50, 5), (-1, 5), (1.0, -1), (1.0, 2.5), (1.0, True)])
def test_bad_buffers_are_refused(percent: object, ticks: object) -> None:
    with pytest.raises(ValueError, match="safety buffer"):
        check_safety_buffer(percent, ticks)


def test_new_protections_have_no_safety_stop_unless_asked(store: ProtectionStore) -> None:
    off = new_protection(store)
    assert (off.safety_enabled, off.safety_state, off.safety_target) == (False, SafetyState.OFF, None)
    on = new_protection(store, safety_enabled=True, safety_buffer_percent=2.0, safety_buffer_ticks=3)
    assert on.safety_enabled and on.safety_state is SafetyState.PLACING
    assert on.safety_target == 96.0 and on.safety_level is None  # 98 - 2 %; nothing at the broker yet
    assert on.safety_tag == on.exit_tag + "S"
    with pytest.raises(ValueError, match="safety buffer percent"):
        new_protection(store, safety_enabled=True, safety_buffer_percent=75.0)


def test_safety_fields_round_trip_and_are_journalled(store: ProtectionStore) -> None:
    p = new_protection(store, safety_enabled=True)
    placed = store.update_safety(
        p.id,
        kind="safety_placed",
        safety_state=SafetyState.PLACED,
        safety_kind=SafetyKind.GTT,
        safety_order_id="1001",
        safety_level=97.0,
        safety_price=95.05,
        safety_quantity=10,
    )
    assert placed == store.get(p.id)
    assert (placed.safety_state, placed.safety_kind, placed.safety_level) == (
        SafetyState.PLACED,
        SafetyKind.GTT,
        97.0,
    )
    event = store.events(protection_id=p.id, kinds=["safety_placed"])[0]
    assert event.price == 97.0 and "safety_order_id=1001" in event.new
    with pytest.raises(ValueError, match="cannot change"):
        store.update_safety(p.id, stop=99.0)
    with pytest.raises(ValueError, match="safety state"):
        store.update_safety(p.id, safety_state="teleported")


def test_safety_fields_change_after_the_protection_ended(store: ProtectionStore) -> None:
    """A broker stop is cleaned up after its position closed: that write must not be refused."""
    p = new_protection(store, safety_enabled=True)
    store.transition(p.id, Status.CLOSED, reason="external")
    with pytest.raises(ValueError, match="cannot change"):
        store.update(p.id, safety_state=SafetyState.REMOVED)
    done = store.update_safety(p.id, kind="safety_removed", safety_state=SafetyState.REMOVED)
    assert done.status is Status.CLOSED and done.safety_state is SafetyState.REMOVED


def test_version_2_file_is_migrated_with_safety_stops_off(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with ProtectionStore(path) as store:
        p = new_protection(store)
    columns = [name for name, _ in db._V3_SAFETY_COLUMNS]
    conn = sqlite3.connect(path)
    conn.executescript(
        "".join(f"ALTER TABLE protection DROP COLUMN {c};" for c in columns)
        + "UPDATE meta SET value='2' WHERE key='schema_version';"
    )
    conn.close()
    with ProtectionStore(path) as store:
        assert db.schema_version() == db.SCHEMA_VERSION  # 3, then every later step
        migrated = store.get(p.id)
        assert migrated == p and migrated.safety_state is SafetyState.OFF and not migrated.safety_enabled
        again = new_protection(store, account_id=p.account_id, safety_enabled=True)
        assert store.get(again.id).safety_enabled
    present = {row[1] for row in raw_rows(path, "PRAGMA table_info(protection)")}
    assert set(columns) <= present
