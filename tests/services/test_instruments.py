"""The instrument master: downloaded once a day per master, off the GUI thread, searched from SQLite."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests import factories
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import Instrument
from trailstop_gui.services.brokers.upstox import UpstoxBroker
from trailstop_gui.services.instruments import InstrumentService, master_key
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession
from trailstop_gui.simulator.runner import SimulatorHandle


class Clock:
    def __init__(self) -> None:
        self.day = date(2025, 7, 1)

    def __call__(self) -> date:
        return self.day


def sim_session(
    sim: SimulatorHandle, store: ProtectionStore, broker: str, login: bool = True
) -> AccountSession:
    return factories.sim_session(store, sim, broker, label=f"{broker} sim", login=login)


def test_kite_master_downloads_once_a_day_off_the_gui_thread(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    clock = Clock()
    service = InstrumentService(store, today=clock)
    session = sim_session(simulator, store, "kite")
    master = master_key(session.account)
    assert master == "kite@sim"
    with qtbot.waitSignal(service.master_loaded, timeout=10_000) as loaded:
        assert service.ensure(session) is True
        assert service.ensure(session) is False  # already on its way: not twice
    assert loaded.args == [master, 62]
    assert service.is_current(master) and service.loaded_on(master) == clock.day
    assert service.ensure(session) is False  # today's master is stored
    infy = service.search(master, "inf")[0]
    assert (infy.label, infy.token, infy.tick_size, infy.lot_size) == ("NSE:INFY", "408065", 0.05, 1)
    fut = service.search(master, "NIFTY")[0]
    assert fut.exchange == "NFO" and fut.lot_size == 75 and fut.instrument_type == "FUT"
    assert service.resolve(master, "infy") == infy == service.resolve(master, "NSE:INFY")
    assert service.resolve(master, "INF") is None
    assert all(r.symbol != "NIFTY 50" for r in service.search(master, "NIFTY 50"))  # an index: not tradable
    clock.day += timedelta(days=1)
    assert not service.is_current(master)
    with qtbot.waitSignal(service.master_loaded, timeout=10_000):
        assert service.ensure(session) is True
    service.wait_for_done()


def test_upstox_simulator_master_comes_from_the_simulator_not_the_internet(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_internet(self: Any) -> list[Instrument]:
        raise AssertionError("the Upstox master URL is on the internet")

    monkeypatch.setattr(UpstoxBroker, "instruments", no_internet)
    service = InstrumentService(store, today=Clock())
    session = sim_session(simulator, store, "upstox", login=False)
    assert service.download(session) == 62
    infy = service.resolve("upstox@sim", "INFY")
    assert infy is not None and infy.token == "NSE_EQ|INE009A01021" and infy.segment == "NSE_EQ"
    assert infy.engine_instrument == "NSE_EQ|INE009A01021"
    assert InstrumentService.quote_key(session.account, infy) == "NSE_EQ|INE009A01021"
    fut = service.search("upstox@sim", "BANKNIFTY")[0]
    assert fut.token.startswith("NSE_FO|") and fut.lot_size == 30


class FakeBroker:
    def __init__(self, instruments: list[Instrument]) -> None:
        self.rows = instruments

    def instruments(self) -> list[Instrument]:
        return self.rows


def real_session(store: ProtectionStore, broker: Any) -> AccountSession:
    account = store.add_account("kite", "Zerodha", api_key="key")
    session = AccountSession(account, SecretStore())
    session.broker = broker
    return session


def test_real_account_uses_the_broker_and_a_bad_download_keeps_the_old_master(
    qtbot: QtBot, store: ProtectionStore
) -> None:
    row = Instrument(408065, "INFY", "NSE", "NSE", "EQ", "INFOSYS", 0.05, 1, "NSE:INFY")
    broker = FakeBroker([row])
    session = real_session(store, broker)
    service = InstrumentService(store, today=Clock())
    with qtbot.waitSignal(service.master_failed, timeout=5000) as failed:
        service.ensure(session)  # no token yet
    assert failed.args[0] == "kite" and "log in" in failed.args[1]
    session.secrets.set(session.account_id, "access_token", "t")
    assert service.download(session) == 1
    assert master_key(session.account) == "kite" and service.resolve("kite", "INFY") is not None
    broker.rows = []
    with qtbot.waitSignal(service.master_failed, timeout=5000) as failed:
        assert service.ensure(session, force=True)
    assert "empty" in failed.args[1]
    assert store.instrument_count("kite") == 1


def test_last_price_arrives_as_a_signal(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    service = InstrumentService(store, today=Clock())
    session = sim_session(simulator, store, "kite")
    service.download(session)
    infy = service.resolve("kite@sim", "INFY")
    assert infy is not None
    simulator.set_price("NSE:INFY", 1500.0)
    with qtbot.waitSignal(service.ltp_received, timeout=5000) as got:
        service.request_ltp(session, infy)
    assert got.args == [session.account_id, "408065", 1500.0]
    session.mark_login_needed("test")
    with qtbot.waitSignal(service.ltp_failed, timeout=5000) as failed:
        service.request_ltp(session, infy)
    assert failed.args[2] == "not logged in"
    service.wait_for_done()


def test_a_download_is_over_before_anyone_hears_it_ended(
    qtbot: QtBot, simulator: SimulatorHandle, store: ProtectionStore
) -> None:
    """Found on a loaded machine: master_loaded reached the test before the worker had marked the download
    over, and the next day's ensure was told "already on its way". A listener on the worker's own thread
    (a direct connection) asks at the very moment the signal is sent."""
    clock = Clock()
    service = InstrumentService(store, today=clock)
    session = sim_session(simulator, store, "kite")
    asked: list[bool] = []

    def ask_again(_master: str, _count: int) -> None:
        if not asked:
            clock.day += timedelta(days=1)
            asked.append(service.ensure(session))

    service.master_loaded.connect(ask_again, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignals([service.master_loaded, service.master_loaded], timeout=10_000):
        assert service.ensure(session) is True
    assert asked == [True]
