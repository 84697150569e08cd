"""UpstoxBroker.market_sessions against the simulator's market timings (holidays and half days)."""

from __future__ import annotations

from datetime import date, time

import pytest
import requests

from tests.services.brokers.test_upstox_adapter_sim import make_broker
from tests.services.conftest import control
from trailstop_gui.models.square_off import MarketSession
from trailstop_gui.services.brokers.calendar import as_calendar_broker
from trailstop_gui.services.brokers.errors import TemporaryError
from trailstop_gui.simulator.runner import SimulatorHandle

MONDAY = date(2026, 12, 7)


def test_weekdays_holidays_and_half_days(simulator: SimulatorHandle) -> None:
    broker = as_calendar_broker(make_broker(simulator))  # the SDK sends no token for timings
    assert broker is not None
    normal = MarketSession(time(9, 15), time(15, 30))
    assert broker.market_sessions(MONDAY) == {"NSE": normal, "BSE": normal, "NFO": normal, "BFO": normal}
    assert broker.market_sessions(date(2026, 12, 12)) == {}  # a Saturday
    control(simulator, "calendar", {"date": "2026-12-25", "closed": True})
    assert broker.market_sessions(date(2026, 12, 25)) == {}
    control(simulator, "calendar", {"date": "2026-12-08", "open": "09:15", "close": "13:00"})
    assert broker.market_sessions(date(2026, 12, 8))["NSE"] == MarketSession(time(9, 15), time(13, 0))


def test_one_exchange_can_have_its_own_hours_or_holiday(simulator: SimulatorHandle) -> None:
    broker = as_calendar_broker(make_broker(simulator))
    assert broker is not None
    normal = MarketSession(time(9, 15), time(15, 30))
    control(
        simulator, "calendar", {"date": "2026-12-08", "open": "09:15", "close": "15:40", "exchanges": ["NFO"]}
    )
    control(simulator, "calendar", {"date": "2026-12-08", "closed": True, "exchanges": ["BSE", "BFO"]})
    assert broker.market_sessions(date(2026, 12, 8)) == {
        "NSE": normal,
        "NFO": MarketSession(time(9, 15), time(15, 40)),
    }


def test_a_failing_timings_call_is_an_error_never_a_holiday(simulator: SimulatorHandle) -> None:
    broker = make_broker(simulator)
    control(simulator, "fault", {"fault": "http_error", "status": 503, "path": "/v2/market/timings"})
    with pytest.raises(TemporaryError):
        broker.market_sessions(MONDAY)


def test_bad_calendar_requests_are_refused(simulator: SimulatorHandle) -> None:
    url = f"{simulator.url}/_sim/calendar"
    for body in (
        {"date": "Monday", "closed": True},
        {"date": "2026-12-08", "open": "13:00", "close": "09:15"},
        {"date": "2026-12-08", "closed": True, "exchanges": ["MCX"]},
        {"date": "2026-12-08", "closed": True, "exchanges": []},
    ):
        assert requests.post(url, json=body, headers=simulator.control_headers, timeout=5).status_code == 400
    assert requests.get(f"{simulator.url}/v2/market/timings/someday", timeout=5).status_code == 400
