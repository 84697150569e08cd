"""Fuzzing settings loading: whatever is stored, TrailStop starts with valid settings, keeping good values."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.settings import SETTINGS_KEY, Settings, load_settings, save_settings

# Thousands of generated cases: make test runs them, make unit's quick loop leaves them out.
pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = [f.name for f in fields(Settings)]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# Values a field might plausibly hold, right or wrong: the field's own kind of value, and everything else.
plausible = st.one_of(
    json_values,
    st.sampled_from(["percent", "points", "MIS", "CNC", "NRML", "light", "dark", "system", "", "PERCENT"]),
    st.sampled_from([-1, 0, 1, 2, 5, 50, 100, 101, 0.5, 2.0, -2.0, 1e9]),
)
stored = st.one_of(
    json_values,
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), plausible, max_size=12),
)


def assert_valid(result: Settings) -> None:
    """Every field is of its kind and the whole set passes the class's own checks."""
    assert isinstance(result, Settings)
    Settings(**asdict(result))  # __post_init__ again: raises if any value is out of range
    for f in fields(Settings):
        value = getattr(result, f.name)
        if isinstance(value, float):
            assert math.isfinite(value), (f.name, value)


@FUZZ
@given(stored)
def test_from_dict_always_gives_valid_settings(data: Any) -> None:
    assert_valid(Settings.from_dict(data))


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), plausible, max_size=12))
def test_a_good_value_is_kept_and_a_bad_one_falls_back_to_its_default(data: dict[str, Any]) -> None:
    result = Settings.from_dict(data)
    assert_valid(result)
    defaults = Settings()
    for name, value in data.items():
        if name != "schema":
            # Taken as given (an int may become a float), or the default when it is bad (alone, or with
            # the values it depends on): never a third value made up along the way.
            got = getattr(result, name)
            assert got == value or got == getattr(defaults, name), (name, value, got)


def test_every_default_survives_a_round_trip(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "s.db") as store:
        save_settings(store, Settings())
        assert load_settings(store) == Settings()


@FUZZ
@given(json_values)
def test_any_stored_json_value_loads(tmp_path: Path, value: Any) -> None:
    with ProtectionStore(tmp_path / "json.db") as store:
        store.set_setting(SETTINGS_KEY, value)
        assert_valid(load_settings(store))


@FUZZ
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_a_damaged_settings_row_loads_the_defaults(tmp_path: Path, raw: str) -> None:
    """A row that is not JSON at all (edited by hand, or damaged) must not stop TrailStop from starting."""
    path = tmp_path / "raw.db"
    with ProtectionStore(path) as store:
        pass
    conn = sqlite3.connect(path)
    conn.execute("INSERT OR REPLACE INTO setting (key, value) VALUES (?, ?)", (SETTINGS_KEY, raw))
    conn.commit()
    conn.close()
    with ProtectionStore(path) as store:
        assert_valid(load_settings(store))
