"""Timed square-off arithmetic: exit times, sessions, half days, holidays, the IST clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from trailstop_gui.models.square_off import (
    IST,
    MarketSession,
    exit_moment,
    parse_exit_time,
    square_off_due,
    weekday_session,
)

MONDAY = date(2026, 12, 7)
NORMAL = MarketSession(time(9, 15), time(15, 30))


def ist(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=IST)


@pytest.mark.parametrize(
    ("text", "expected"), [("15:15", time(15, 15)), (" 9:30 ", time(9, 30)), ("15:29", time(15, 29))]
)
def test_exit_times_parse(text: str, expected: time) -> None:
    assert parse_exit_time(text) == expected


@pytest.mark.parametrize("text", ["", "3pm", "25:00", "15:60", "09:15", "15:30", "20:00", None, 1515])
def test_bad_exit_times_name_the_field(text: object) -> None:
    with pytest.raises(ValueError, match="^exit time: "):
        parse_exit_time(text)


def test_due_from_the_minute_until_the_close() -> None:
    at = time(15, 15)
    assert not square_off_due(ist(MONDAY, 15, 14, 59), at, NORMAL)
    assert square_off_due(ist(MONDAY, 15, 15), at, NORMAL)
    assert square_off_due(ist(MONDAY, 15, 29, 59), at, NORMAL)
    # After the close an order would be refused: the time applies again on the next open day.
    assert not square_off_due(ist(MONDAY, 15, 30), at, NORMAL)
    assert not square_off_due(ist(MONDAY, 9, 0), at, NORMAL)


def test_the_clock_is_read_in_ist_whatever_its_zone() -> None:
    utc = datetime(2026, 12, 7, 9, 45, tzinfo=UTC)  # 15:15 IST
    assert square_off_due(utc, time(15, 15), NORMAL)
    assert not square_off_due(utc - timedelta(seconds=1), time(15, 15), NORMAL)


def test_a_closed_day_has_no_square_off() -> None:
    assert exit_moment(time(15, 15), None) is None
    assert not square_off_due(ist(MONDAY, 15, 20), time(15, 15), None)


def test_weekends_are_closed_without_a_published_calendar() -> None:
    assert weekday_session(MONDAY) == NORMAL
    assert weekday_session(MONDAY + timedelta(days=4)) == NORMAL  # Friday
    assert weekday_session(MONDAY + timedelta(days=5)) is None  # Saturday
    assert weekday_session(MONDAY + timedelta(days=6)) is None


def test_a_half_day_moves_the_square_off_before_its_end() -> None:
    half = MarketSession(time(9, 15), time(13, 0))
    assert exit_moment(time(15, 15), half) == time(12, 45)
    assert not square_off_due(ist(MONDAY, 12, 44), time(15, 15), half)
    assert square_off_due(ist(MONDAY, 12, 45), time(15, 15), half)
    # A time inside the short session stays as it is.
    assert exit_moment(time(11, 0), half) == time(11, 0)


def test_a_special_evening_session() -> None:
    muhurat = MarketSession(time(18, 15), time(19, 15))
    assert exit_moment(time(15, 15), muhurat) == time(19, 0)
    assert not square_off_due(ist(MONDAY, 15, 15), time(15, 15), muhurat)
    assert square_off_due(ist(MONDAY, 19, 0), time(15, 15), muhurat)
    short = MarketSession(time(18, 15), time(18, 25))
    assert exit_moment(time(15, 15), short) == time(18, 15)  # never before the open
