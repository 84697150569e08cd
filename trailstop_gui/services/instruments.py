"""The instrument master: each broker's instruments, downloaded at most once a day into SQLite, searched.

A master is named by ``master_key(account)``: the broker ("kite", "upstox") for a real account, and
"kite@sim" / "upstox@sim" for a simulator account, so that a demo never overwrites (or stands in for) the
real broker's 100k-row master. The download runs on a background pool; searches read SQLite directly and
take a few milliseconds, so the order form may call them from the GUI thread.

Kite's master comes through the adapter (the simulator serves ``/instruments`` like Kite does). Upstox's
adapter downloads its master from the internet (``instruments_url``); an Upstox simulator account builds it
from the simulator's own ``/_sim/instruments`` instead, so a demo or a test never leaves the machine.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal

from trailstop_gui.models.store import AccountRecord, InstrumentRecord, ProtectionStore
from trailstop_gui.services.brokers.base import IST, Instrument
from trailstop_gui.services.brokers.errors import AuthError, BrokerError
from trailstop_gui.services.logged_task import LoggedTask
from trailstop_gui.services.session import AccountSession

log = logging.getLogger("trailstop.instruments")

SETTING_PREFIX = "instrument_master:"
SIM_SUFFIX = "@sim"

JsonFetcher = Callable[[str], Any]


def ist_today() -> date:
    """The brokers regenerate their masters each morning in India: the day that counts is India's."""
    return datetime.now(IST).date()


def master_key(account: AccountRecord) -> str:
    """Which master serves ``account``: its broker's, or the simulator's copy for a simulator account."""
    return account.broker + (SIM_SUFFIX if is_simulator(account) else "")


def is_simulator(account: AccountRecord) -> bool:
    # Only simulator accounts carry an api_root (runtime.py); real ones use the SDKs' default hosts.
    return bool(account.api_root)


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=15) as response:
        return json.loads(response.read())


def from_broker(master: str, instruments: Iterable[Instrument]) -> list[InstrumentRecord]:
    """The adapters' ``Instrument`` rows as master rows."""
    return [
        InstrumentRecord(
            master=master,
            token=str(i.instrument),
            symbol=i.symbol,
            exchange=i.exchange,
            name=i.name,
            tick_size=i.tick_size,
            lot_size=max(int(i.lot_size), 0),
            segment=i.segment,
            instrument_type=i.instrument_type,
            expiry=i.expiry.isoformat() if i.expiry else "",
        )
        for i in instruments
        if i.symbol
    ]


def from_simulator(master: str, rows: Sequence[dict[str, Any]], broker: str) -> list[InstrumentRecord]:
    """The simulator's ``/_sim/instruments`` list as master rows, keyed the way ``broker`` keys them."""
    out = []
    for row in rows:
        token = row["kite_token"] if broker == "kite" else row["upstox_key"]
        kind = str(row.get("instrument_type") or "")
        index = not row.get("tradable", True)
        if broker == "kite":
            segment = "INDICES" if index else str(row.get("exchange") or "")
        else:
            segment = str(row["upstox_key"]).split("|", 1)[0]
        out.append(
            InstrumentRecord(
                master=master,
                token=str(token),
                symbol=str(row["tradingsymbol"]),
                exchange=str(row["exchange"]),
                name=str(row.get("name") or ""),
                tick_size=float(row.get("tick_size") or 0.0),
                lot_size=int(row.get("lot_size") or 0),
                segment=segment,
                instrument_type=kind,
                expiry=str(row.get("expiry") or ""),
            )
        )
    return out


class InstrumentService(QObject):
    """Downloads each master at most once a day (off the GUI thread) and answers searches from SQLite."""

    master_loaded = Signal(str, int)  # master key, instruments stored
    master_failed = Signal(str, str)  # master key, why
    ltp_received = Signal(int, str, float)  # account id, instrument token, last price
    ltp_failed = Signal(int, str, str)  # account id, instrument token, why

    def __init__(
        self,
        store: ProtectionStore,
        *,
        today: Callable[[], date] = ist_today,
        fetch_json: JsonFetcher = _fetch_json,
    ) -> None:
        super().__init__()
        self.store = store
        self._today = today
        self._fetch_json = fetch_json
        self._lock = threading.Lock()
        self._loading: set[str] = set()
        self.downloads = QThreadPool()
        self.downloads.setMaxThreadCount(1)  # one master at a time: each holds the write lock while stored
        self.quotes = QThreadPool()
        self.quotes.setMaxThreadCount(2)

    # ----------------------------------------------------------------- the daily download

    def loaded_on(self, master: str) -> date | None:
        """The day ``master`` was last downloaded, if it still has rows."""
        meta = self.store.settings_repo.get(SETTING_PREFIX + master)
        if not isinstance(meta, dict) or not meta.get("count"):
            return None
        try:
            return date.fromisoformat(str(meta.get("date")))
        except ValueError:
            return None

    def is_current(self, master: str) -> bool:
        return self.loaded_on(master) == self._today() and self.store.instruments_repo.count(master) > 0

    def ensure(self, session: AccountSession, *, force: bool = False) -> bool:
        """Download ``session``'s master in the background unless today's is stored. True if started."""
        master = master_key(session.account)
        if not force and self.is_current(master):
            return False
        with self._lock:
            if master in self._loading:
                return False
            self._loading.add(master)
        self.downloads.start(
            LoggedTask(lambda: self._download_job(session, master), f"instruments for {master}", log)
        )
        return True

    def _download_job(self, session: AccountSession, master: str) -> None:
        # No longer "loading" before anyone hears it ended: a listener that asks again at once (the next
        # day's ensure) must not be told the download is still on its way (a race a loaded machine showed).
        try:
            count = self.download(session)
        except Exception as exc:
            why = str(exc) or type(exc).__name__
            log.warning("instrument master %s: download failed: %s", master, why)
            self._loaded(master)
            self.master_failed.emit(master, why)
        else:
            self._loaded(master)
            self.master_loaded.emit(master, count)

    def _loaded(self, master: str) -> None:
        with self._lock:
            self._loading.discard(master)

    def download(self, session: AccountSession) -> int:
        """Fetch ``session``'s master and store it in one transaction. BLOCKING: not on the GUI thread."""
        account = session.account
        master = master_key(account)
        if is_simulator(account) and account.broker == "upstox":
            # The Upstox adapter's master URL is on the internet; the simulator lists its own instruments.
            rows = self._fetch_json(account.api_root.rstrip("/") + "/_sim/instruments")
            if not isinstance(rows, list):
                raise BrokerError("simulator instruments: expected a list")
            records = from_simulator(master, rows, account.broker)
        else:
            broker = session.broker_if_ready()
            if broker is None:
                raise AuthError("log in first: the instrument master comes from the broker")
            records = from_broker(master, broker.instruments())
        if not records:
            # Never replace a good master with an empty one (a broker hiccup before the morning dump).
            raise BrokerError(f"{master}: the broker sent an empty instrument list")
        count = self.store.instruments_repo.upsert(master, records, replace=True)
        meta = {"date": self._today().isoformat(), "count": count}
        self.store.settings_repo.set(SETTING_PREFIX + master, meta)
        log.info("instrument master %s: %d instruments stored", master, count)
        return count

    def wait_for_done(self, msecs: int = 30_000) -> bool:
        return bool(self.downloads.waitForDone(msecs)) and bool(self.quotes.waitForDone(msecs))

    # ----------------------------------------------------------------- lookups (fast; any thread)

    def search(self, master: str, text: str, limit: int = 20) -> list[InstrumentRecord]:
        return self.store.instruments_repo.search(master, text, limit)

    def find(self, master: str, token: str | int) -> InstrumentRecord | None:
        return self.store.instruments_repo.get(master, token)

    def resolve(self, master: str, text: str) -> InstrumentRecord | None:
        """What a trader typed without picking from the list: "INFY" or "NSE:INFY", if it names one."""
        text = text.strip().upper()
        if not text:
            return None
        if ":" in text:
            exchange, _, symbol = text.partition(":")
            return self.store.instruments_repo.find(master, exchange, symbol)
        exact = [r for r in self.search(master, text, limit=10) if r.symbol.upper() == text]
        # The same symbol on NSE and BSE: prefer NSE, where the liquidity is.
        exact.sort(key=lambda r: (r.exchange != "NSE", r.exchange))
        return exact[0] if exact else None

    @staticmethod
    def quote_key(account: AccountRecord, record: InstrumentRecord) -> str:
        """What ``broker.ltp()`` takes: "NSE:INFY" for Kite, the instrument key for Upstox."""
        return record.label if account.broker == "kite" else record.token

    # ----------------------------------------------------------------- last price (background)

    def request_ltp(self, session: AccountSession, record: InstrumentRecord) -> None:
        """Ask the broker for ``record``'s last price off the GUI thread; the answer comes as a signal."""
        account_id = session.account_id
        key = self.quote_key(session.account, record)

        def fetch() -> None:
            broker = session.broker_if_ready()
            if broker is None:
                self.ltp_failed.emit(account_id, record.token, "not logged in")
                return
            try:
                prices = broker.ltp([key])
            except BrokerError as exc:
                self.ltp_failed.emit(account_id, record.token, str(exc))
                return
            price = prices.get(key)
            if price is None or not price > 0:
                self.ltp_failed.emit(account_id, record.token, "no price")
                return
            self.ltp_received.emit(account_id, record.token, float(price))

        self.quotes.start(LoggedTask(fetch, f"last price of {key}", log))
