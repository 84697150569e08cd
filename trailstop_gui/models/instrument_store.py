"""The instrument master in the protections' database: the order form's search, written once a day per
master by services/instruments.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw

from trailstop_gui.models import db

_INSTRUMENT_TABLE = "instrument"
_INSTRUMENT_COLUMNS = (
    "broker, token, symbol, exchange, name, tick_size, lot_size, segment, instrument_type, expiry"
)
_INSTRUMENT_UPSERT = (
    f"INSERT INTO {_INSTRUMENT_TABLE} ({_INSTRUMENT_COLUMNS}, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (broker, token) DO UPDATE SET symbol = excluded.symbol, exchange = excluded.exchange,"
    " name = excluded.name, tick_size = excluded.tick_size, lot_size = excluded.lot_size,"
    " segment = excluded.segment, instrument_type = excluded.instrument_type, expiry = excluded.expiry,"
    " updated_at = excluded.updated_at"
)
# Parameters: master, substring x2, [exchange], exact symbol x2, prefix x2, substring, limit.
_INSTRUMENT_SEARCH = (
    f"SELECT {_INSTRUMENT_COLUMNS} FROM {_INSTRUMENT_TABLE}"
    " WHERE broker = ? AND tick_size > 0 AND (symbol LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')"
    "{exchange_clause}"
    " ORDER BY"
    " CASE WHEN upper(symbol) = ? THEN 0 ELSE 1 END,"
    " CASE WHEN instrument_type = 'EQ' AND segment <> 'INDICES' THEN 0 ELSE 1 END,"
    " CASE WHEN upper(symbol) = ? THEN 0"
    "  WHEN symbol LIKE ? ESCAPE '\\' THEN 1"
    "  WHEN name LIKE ? ESCAPE '\\' THEN 2"
    "  WHEN symbol LIKE ? ESCAPE '\\' THEN 3 ELSE 4 END,"
    " length(symbol), symbol,"
    " CASE exchange WHEN 'NSE' THEN 0 WHEN 'NFO' THEN 1 ELSE 2 END, exchange"
    " LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class InstrumentRecord:
    """One row of an instrument master. ``master`` names the master it belongs to (see InstrumentService)."""

    master: str
    token: str  # Kite's instrument_token (digits) or Upstox's instrument key
    symbol: str  # the trading symbol: INFY, NIFTY25JULFUT
    exchange: str
    name: str = ""
    tick_size: float = 0.05
    lot_size: int = 1
    segment: str = ""
    instrument_type: str = ""
    expiry: str = ""  # ISO date, or "" for none

    @property
    def engine_instrument(self) -> int | str:
        """The key ticks carry: an int for a Kite token, the key string for Upstox."""
        return int(self.token) if self.token.isdigit() else self.token

    @property
    def is_equity(self) -> bool:
        return self.instrument_type == "EQ" and self.segment != "INDICES"

    @property
    def tradable(self) -> bool:
        return self.tick_size > 0

    @property
    def label(self) -> str:
        """What the trader reads and types: ``NSE:INFY``."""
        return f"{self.exchange}:{self.symbol}"


class InstrumentRepository:
    """Every master's instruments. Safe to call from any thread."""

    def __init__(self, database: pw.Database) -> None:
        self._db = database

    def upsert(self, master: str, records: Iterable[InstrumentRecord], *, replace: bool = True) -> int:
        """Write a master's instruments in one transaction; ``replace`` drops the rows not in ``records``.

        One transaction: a search never sees half a master. The rows go through one prepared statement
        (executemany) because a broker's master has ~100k rows and the write lock is held meanwhile.
        """
        if not master.strip():
            raise ValueError("master: must not be empty")
        now = datetime.now().isoformat(sep=" ")
        rows = [
            (
                master,
                str(r.token),
                r.symbol,
                r.exchange,
                r.name,
                float(r.tick_size),
                int(r.lot_size),
                r.segment,
                r.instrument_type,
                r.expiry,
                now,
            )
            for r in records
            if str(r.token).strip() and r.symbol.strip()
        ]
        raw: Any = self._db  # peewee is untyped; its DB-API calls are plain sqlite3 underneath
        with self._db.atomic():
            if replace:
                raw.execute_sql(f"DELETE FROM {_INSTRUMENT_TABLE} WHERE broker = ?", (master,))
            raw.cursor().executemany(_INSTRUMENT_UPSERT, rows)
        return len(rows)

    def search(self, master: str, text: str, limit: int = 20) -> list[InstrumentRecord]:
        """Tradable instruments whose symbol or name contains ``text`` (case-insensitive), best first.

        Order: the exact symbol, then equities before derivatives, then symbol prefix, name prefix, symbol
        substring, name substring; shorter symbols first; NSE before BSE. "NSE:INFY" searches NSE only.
        """
        query = " ".join(text.split()).upper()
        exchange = ""
        if ":" in query:
            exchange, _, query = (part.strip() for part in query.partition(":"))
        if not query or limit <= 0:
            return []
        like = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        prefix, inside = f"{like}%", f"%{like}%"
        params: list[Any] = [master, inside, inside]
        exchange_clause = ""
        if exchange:
            exchange_clause = " AND exchange = ?"
            params.append(exchange)
        params += [query, query, prefix, prefix, inside, int(limit)]
        raw: Any = self._db
        cursor = raw.execute_sql(_INSTRUMENT_SEARCH.format(exchange_clause=exchange_clause), params)
        return [InstrumentRecord(*row) for row in cursor.fetchall()]

    def get(self, master: str, token: str | int) -> InstrumentRecord | None:
        row = db.Instrument.get_or_none(
            (db.Instrument.broker == master) & (db.Instrument.token == str(token))
        )
        return None if row is None else _record(row)

    def find(self, master: str, exchange: str, symbol: str) -> InstrumentRecord | None:
        """The instrument traded as ``exchange``:``symbol`` in ``master`` (exact, case-insensitive)."""
        row = (
            db.Instrument.select()
            .where(
                (db.Instrument.broker == master)
                & (db.Instrument.exchange == exchange.strip().upper())
                & (db.Instrument.symbol == symbol.strip().upper())
            )
            .first()
        )
        return None if row is None else _record(row)

    def count(self, master: str) -> int:
        return int(db.Instrument.select().where(db.Instrument.broker == master).count())


def _record(row: Any) -> InstrumentRecord:
    return InstrumentRecord(
        master=row.broker,
        token=row.token,
        symbol=row.symbol,
        exchange=row.exchange,
        name=row.name,
        tick_size=row.tick_size,
        lot_size=row.lot_size,
        segment=row.segment,
        instrument_type=row.instrument_type,
        expiry=row.expiry,
    )
