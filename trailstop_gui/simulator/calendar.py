"""The simulated exchanges' calendar: which days are open and when, as Upstox publishes it.

Served at GET /v2/market/timings/{YYYY-MM-DD} (Upstox's market-timings API; Kite Connect has no such API).
Weekdays are open 09:15-15:30 on NSE, BSE, NFO and BFO; ``POST /_sim/calendar`` closes a day (a holiday)
or gives it other hours (a half day, a Muhurat session), on every exchange or on some: Upstox answers one
row per exchange and the rows can differ (a partial holiday with only some exchanges open; derivatives
closing later than cash on expiry days; see the sample replies at
https://docs.openalgo.in/api-documentation/v1/utilities-api/timings, which relays Upstox's timings).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30))
EXCHANGES = ("NSE", "BSE", "NFO", "BFO")
OPEN = time(9, 15)
CLOSE = time(15, 30)


@dataclass
class Calendar:
    closed: set[tuple[date, str]] = field(default_factory=set)
    special: dict[tuple[date, str], tuple[time, time]] = field(default_factory=dict)

    def set_day(
        self, day: date, hours: tuple[time, time] | None, exchanges: Iterable[str] = EXCHANGES
    ) -> None:
        """Close ``day`` (None) or give it ``hours``, on ``exchanges`` (all of them unless named)."""
        for exchange in exchanges:
            key = (day, exchange)
            self.special.pop(key, None)
            self.closed.discard(key)
            if hours is None:
                self.closed.add(key)
            else:
                self.special[key] = hours

    def hours(self, day: date, exchange: str = "NSE") -> tuple[time, time] | None:
        key = (day, exchange)
        if key in self.closed:
            return None
        if key in self.special:
            return self.special[key]
        return (OPEN, CLOSE) if day.weekday() < 5 else None

    def timings(self, day: date) -> list[dict[str, object]]:
        """Upstox's ``data`` for the day: one row per open exchange, times in epoch milliseconds."""
        rows: list[dict[str, object]] = []
        for exchange in EXCHANGES:
            hours = self.hours(day, exchange)
            if hours is None:
                continue
            start = int(datetime.combine(day, hours[0], IST).timestamp() * 1000)
            end = int(datetime.combine(day, hours[1], IST).timestamp() * 1000)
            rows.append({"exchange": exchange, "start_time": start, "end_time": end})
        return rows

    def reset(self) -> None:
        self.closed.clear()
        self.special.clear()
