"""The simulated exchanges' calendar: which days are open and when, as Upstox publishes it.

Served at GET /v2/market/timings/{YYYY-MM-DD} (Upstox's market-timings API; Kite Connect has no such API).
Weekdays are open 09:15-15:30 on NSE, BSE, NFO and BFO; ``POST /_sim/calendar`` closes a day (a holiday)
or gives it other hours (a half day, a Muhurat session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30))
EXCHANGES = ("NSE", "BSE", "NFO", "BFO")
OPEN = time(9, 15)
CLOSE = time(15, 30)


@dataclass
class Calendar:
    closed: set[date] = field(default_factory=set)
    special: dict[date, tuple[time, time]] = field(default_factory=dict)

    def set_day(self, day: date, hours: tuple[time, time] | None) -> None:
        """Close ``day`` (None) or give it ``hours``."""
        self.special.pop(day, None)
        self.closed.discard(day)
        if hours is None:
            self.closed.add(day)
        else:
            self.special[day] = hours

    def hours(self, day: date) -> tuple[time, time] | None:
        if day in self.closed:
            return None
        if day in self.special:
            return self.special[day]
        return (OPEN, CLOSE) if day.weekday() < 5 else None

    def timings(self, day: date) -> list[dict[str, object]]:
        """Upstox's ``data`` for the day: one row per open exchange, times in epoch milliseconds."""
        hours = self.hours(day)
        if hours is None:
            return []
        start = int(datetime.combine(day, hours[0], IST).timestamp() * 1000)
        end = int(datetime.combine(day, hours[1], IST).timestamp() * 1000)
        return [{"exchange": exchange, "start_time": start, "end_time": end} for exchange in EXCHANGES]

    def reset(self) -> None:
        self.closed.clear()
        self.special.clear()
