"""The safety stop's settings: off by default, 1 % or 5 ticks, validated, and loaded tolerantly."""

from __future__ import annotations

import pytest

from trailstop_gui.settings import Settings


def test_safety_stop_is_off_by_default_with_a_one_percent_buffer() -> None:
    s = Settings()
    assert (s.safety_stop, s.safety_buffer_percent, s.safety_buffer_ticks, s.safety_limit_percent) == (
        False,
        1.0,
        5,
        2.0,
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"safety_buffer_percent": 0}, "safety buffer percent"),
        ({"safety_buffer_percent": 60.0}, "safety buffer percent"),
        ({"safety_buffer_ticks": -1}, "safety buffer ticks"),
        ({"safety_limit_percent": 0.0}, "safety limit percent"),
        ({"safety_stop": "yes"}, "safety stop"),
    ],
)
def test_bad_safety_values_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**changes)  # type: ignore[arg-type]


def test_stored_safety_values_load_and_bad_ones_fall_back() -> None:
    loaded = Settings.from_dict(
        {"safety_stop": True, "safety_buffer_percent": 1.5, "safety_buffer_ticks": "x"}
    )
    assert loaded.safety_stop and loaded.safety_buffer_percent == 1.5
    assert loaded.safety_buffer_ticks == Settings().safety_buffer_ticks
