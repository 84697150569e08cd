"""Exchange sessions from brokers that publish them (Upstox); Kite Connect has no such API.

Upstox: GET /v2/market/timings/{YYYY-MM-DD} (upstox_client
``MarketHolidaysAndTimingsApi.get_exchange_timings``) answers ``{"status": "success", "data":
[{"exchange": "NSE", "start_time": <epoch ms>, "end_time": <epoch ms>}, ...]}``; an exchange missing
from the list is closed that day (a holiday answers an empty list), and a half day or a special session
(Muhurat) shows its own hours.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Protocol, runtime_checkable

from trailstop_gui.models.square_off import IST, MarketSession
from trailstop_gui.services.brokers.base import list_reply, malformed_reply, required_int, required_text


@runtime_checkable
class CalendarBroker(Protocol):
    """A broker that publishes each day's exchange sessions."""

    def market_sessions(self, day: date) -> dict[str, MarketSession]:
        """The exchanges open on ``day`` with their hours (IST); an exchange not listed is closed."""
        ...


def as_calendar_broker(broker: object) -> CalendarBroker | None:
    return broker if isinstance(broker, CalendarBroker) else None


def sessions_from_upstox(data: object, day: date) -> dict[str, MarketSession]:
    """The ``data`` of an Upstox market-timings reply; an unreadable one raises MalformedReplyError."""
    sessions: dict[str, MarketSession] = {}
    for row in list_reply(data, "upstox market timings"):
        try:
            sessions[required_text(row, "exchange").upper()] = _session(row, day)
        except (ValueError, OverflowError, OSError) as exc:
            raise malformed_reply("upstox market timings", str(exc)) from exc
    return sessions


def _session(row: Mapping[str, object], day: date) -> MarketSession:
    start = datetime.fromtimestamp(required_int(row, "start_time") / 1000, IST)
    end = datetime.fromtimestamp(required_int(row, "end_time") / 1000, IST)
    if end <= start or start.date() != day:
        raise ValueError(f"a session {start:%Y-%m-%d %H:%M}-{end:%H:%M} for {day}")
    # Sessions that run past midnight (none on Indian exchanges today) end at the day's last minute.
    close = end.time() if end.date() == day else datetime.max.time()
    return MarketSession(start.time().replace(tzinfo=None), close.replace(tzinfo=None))
