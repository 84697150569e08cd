"""The MIS square-off setting: off by default, HH:MM when on, a bad stored value falls back to off."""

from __future__ import annotations

import pytest

from trailstop_gui.settings import Settings


def test_off_by_default() -> None:
    assert Settings().mis_square_off == ""


def test_a_time_is_kept_and_a_bad_one_names_the_field() -> None:
    assert Settings(mis_square_off="15:15").mis_square_off == "15:15"
    with pytest.raises(ValueError, match="^MIS square-off time: "):
        Settings(mis_square_off="15:45")


def test_a_bad_stored_value_keeps_the_default() -> None:
    assert Settings.from_dict({"mis_square_off": "soon"}).mis_square_off == ""
    assert Settings.from_dict({"mis_square_off": "15:10"}).mis_square_off == "15:10"
