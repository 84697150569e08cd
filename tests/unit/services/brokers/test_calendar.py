"""Upstox market timings as sessions: open exchanges, holidays (empty), half days; unreadable is an error."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from trailstop_gui.models.square_off import IST, MarketSession
from trailstop_gui.services.brokers.calendar import sessions_from_upstox
from trailstop_gui.services.brokers.errors import MalformedReplyError

DAY = date(2026, 12, 7)


def ms(hh: int, mm: int, day: date = DAY) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=IST).timestamp() * 1000)


def test_a_normal_day_and_a_half_day() -> None:
    data = [
        {"exchange": "NSE", "start_time": ms(9, 15), "end_time": ms(15, 30)},
        {"exchange": "nfo", "start_time": ms(9, 15), "end_time": ms(13, 0)},
    ]
    assert sessions_from_upstox(data, DAY) == {
        "NSE": MarketSession(time(9, 15), time(15, 30)),
        "NFO": MarketSession(time(9, 15), time(13, 0)),
    }


def test_a_holiday_is_an_empty_list() -> None:
    assert sessions_from_upstox([], DAY) == {}


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"exchange": "NSE"},
        [{"exchange": "NSE", "start_time": ms(9, 15)}],
        [{"exchange": "NSE", "start_time": "soon", "end_time": ms(15, 30)}],
        [{"start_time": ms(9, 15), "end_time": ms(15, 30)}],
        [{"exchange": "NSE", "start_time": ms(15, 30), "end_time": ms(9, 15)}],
        [
            {
                "exchange": "NSE",
                "start_time": ms(9, 15, date(2026, 12, 8)),
                "end_time": ms(15, 30, date(2026, 12, 8)),
            }
        ],
    ],
)
def test_an_unreadable_reply_is_an_error_never_a_holiday(data: object) -> None:
    with pytest.raises(MalformedReplyError):
        sessions_from_upstox(data, DAY)
