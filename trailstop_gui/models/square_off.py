"""Timed square-off: when a protection is exited by the clock, in Indian Standard Time.

Pure: no Qt, no network. The service (services/square_off.py) supplies the time and the day's session.

A square-off time applies on the days the market is open. Where the broker publishes the exchanges'
sessions (Upstox: GET /v2/market/timings/{date}, upstox_client MarketHolidaysAndTimingsApi; an empty list on
a holiday, an early end on a half day) those decide; Kite Connect publishes no holiday calendar, so there
the market is taken as open on weekdays, 09:15-15:30.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")
"""India keeps no daylight saving time: a fixed offset needs no tz database (absent on some Windows)."""

NORMAL_OPEN = time(9, 15)
NORMAL_CLOSE = time(15, 30)
SUGGESTED_MIS_SQUARE_OFF = time(15, 15)
"""Before the brokers' own MIS auto square-off (from about 15:20, with a fee per order)."""

# On a day whose session ends before the trader's time (a half day), the exit goes this long before the
# end, as 15:15 is before 15:30 on a normal day.
LEAD_BEFORE_CLOSE = timedelta(minutes=15)

_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class MarketSession:
    """One exchange's trading hours on one day, in IST."""

    open: time
    close: time


WEEKDAY_SESSION = MarketSession(NORMAL_OPEN, NORMAL_CLOSE)


def parse_exit_time(value: object, field_name: str = "exit time") -> time:
    """``HH:MM`` (IST, after 09:15 and before 15:30) as a time, or ValueError naming the field."""
    if isinstance(value, time):
        parsed = value.replace(second=0, microsecond=0, tzinfo=None)
    else:
        match = _HHMM.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{field_name}: expected HH:MM such as 15:15, got {value!r}")
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"{field_name}: not a time of day: {value!r}")
        parsed = time(hour, minute)
    if not NORMAL_OPEN < parsed < NORMAL_CLOSE:
        raise ValueError(f"{field_name}: must be after 09:15 and before 15:30 IST, got {parsed:%H:%M}")
    return parsed


def format_exit_time(at: time) -> str:
    return f"{at:%H:%M}"


def to_ist(moment: datetime) -> datetime:
    """An aware datetime in IST; a naive one is taken as the machine's local time."""
    return moment.astimezone(IST)


def weekday_session(day: date) -> MarketSession | None:
    """The fallback where no calendar is published: open on weekdays at the normal hours."""
    return WEEKDAY_SESSION if day.weekday() < 5 else None


def exit_moment(at: time, session: MarketSession | None) -> time | None:
    """When a square-off set for ``at`` goes on a day with ``session``; None on a closed day.

    Normally ``at`` itself. A session that does not contain ``at`` (a half day ending before it, an
    evening Muhurat session starting after it) moves it ``LEAD_BEFORE_CLOSE`` before that session's end
    (never before its open): a position opened in an evening session is not squared off at its first second.
    """
    if session is None:
        return None
    if session.open < at < session.close:
        return at
    end = datetime.combine(date(2000, 1, 3), session.close) - LEAD_BEFORE_CLOSE
    return max(end.time(), session.open)


def square_off_due(now: datetime, at: time, session: MarketSession | None) -> bool:
    """True when ``now`` (aware) is at or past the day's square-off moment and the session is still open.

    After the close nothing is due: an order then would be refused (or wait for the next day as an AMO);
    the protection keeps trailing and the time applies again on the next open day.
    """
    moment = exit_moment(at, session)
    if moment is None or session is None:
        return False
    clock = to_ist(now).time().replace(tzinfo=None)
    return moment <= clock < session.close
