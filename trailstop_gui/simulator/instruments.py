"""The simulator's instrument universe: NSE equities, a few NFO contracts and the NIFTY 50 index.

Identifiers follow the brokers: Kite's instrument_token is ``exchange_token << 8 | segment`` (the low byte
is the segment), Upstox's instrument key is ``NSE_EQ|<ISIN>``, ``NSE_FO|<exchange_token>`` or
``NSE_INDEX|Nifty 50``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

# Kite's segment numbers, the low byte of an instrument_token.
SEGMENT_NSE = 1
SEGMENT_NFO = 2
SEGMENT_INDICES = 9

EQUITY_TICK = 0.05


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable (or, for an index, quoted-only) instrument, with both brokers' identifiers."""

    exchange: str  # NSE, NFO
    tradingsymbol: str
    name: str
    exchange_token: int
    segment_id: int
    kite_segment: str  # the instruments CSV's `segment` column: NSE, NFO-FUT, NFO-OPT, INDICES
    instrument_type: str  # EQ, FUT, CE, PE
    upstox_key: str
    isin: str
    tick_size: float
    lot_size: int
    base_price: float
    expiry: date | None = None
    strike: float = 0.0
    freeze_quantity: int = 100000

    @property
    def kite_token(self) -> int:
        return self.exchange_token << 8 | self.segment_id

    @property
    def symbol(self) -> str:
        """The Kite-style ``EXCHANGE:TRADINGSYMBOL`` key."""
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def tradable(self) -> bool:
        return self.segment_id != SEGMENT_INDICES

    @property
    def is_index(self) -> bool:
        return self.segment_id == SEGMENT_INDICES

    @property
    def upstox_segment(self) -> str:
        return self.upstox_key.split("|", 1)[0]

    @property
    def is_derivative(self) -> bool:
        return self.exchange == "NFO"


# (tradingsymbol, company name, ISIN, NSE exchange token, plausible price)
NSE_EQUITIES: tuple[tuple[str, str, str, int, float], ...] = (
    ("RELIANCE", "RELIANCE INDUSTRIES", "INE002A01018", 2885, 1285.40),
    ("TCS", "TATA CONSULTANCY SERV LT", "INE467B01029", 11536, 3452.10),
    ("HDFCBANK", "HDFC BANK", "INE040A01034", 1333, 1712.55),
    ("INFY", "INFOSYS", "INE009A01021", 1594, 1574.80),
    ("ICICIBANK", "ICICI BANK", "INE090A01021", 4963, 1248.30),
    ("SBIN", "STATE BANK OF INDIA", "INE062A01020", 3045, 812.65),
    ("ITC", "ITC", "INE154A01025", 1660, 418.20),
    ("HINDUNILVR", "HINDUSTAN UNILEVER", "INE030A01027", 1394, 2390.75),
    ("BHARTIARTL", "BHARTI AIRTEL", "INE397D01024", 10604, 1652.35),
    ("KOTAKBANK", "KOTAK MAHINDRA BANK", "INE237A01028", 1922, 1788.90),
    ("LT", "LARSEN & TOUBRO", "INE018A01030", 11483, 3520.45),
    ("AXISBANK", "AXIS BANK", "INE238A01034", 5900, 1098.60),
    ("ASIANPAINT", "ASIAN PAINTS", "INE021A01026", 236, 2315.20),
    ("MARUTI", "MARUTI SUZUKI INDIA", "INE585B01010", 10999, 11860.00),
    ("SUNPHARMA", "SUN PHARMACEUTICAL IND L", "INE044A01036", 3351, 1731.55),
    ("TITAN", "TITAN COMPANY", "INE280A01028", 3506, 3298.40),
    ("ULTRACEMCO", "ULTRATECH CEMENT", "INE481G01011", 11532, 11245.65),
    ("BAJFINANCE", "BAJAJ FINANCE", "INE296A01024", 317, 6920.30),
    ("WIPRO", "WIPRO", "INE075A01022", 3787, 296.85),
    ("HCLTECH", "HCL TECHNOLOGIES", "INE860A01027", 7229, 1742.10),
    ("NESTLEIND", "NESTLE INDIA", "INE239A01016", 17963, 2245.50),
    ("TATAMOTORS", "TATA MOTORS", "INE155A01022", 3456, 712.35),
    ("TATASTEEL", "TATA STEEL", "INE081A01020", 3499, 156.70),
    ("POWERGRID", "POWER GRID CORP. LTD.", "INE752E01010", 14977, 305.25),
    ("NTPC", "NTPC", "INE733E01010", 11630, 338.90),
    ("ONGC", "OIL AND NATURAL GAS CORP.", "INE213A01029", 2475, 247.15),
    ("COALINDIA", "COAL INDIA", "INE522F01014", 20374, 384.60),
    ("JSWSTEEL", "JSW STEEL", "INE019A01038", 11723, 1012.45),
    ("ADANIENT", "ADANI ENTERPRISES", "INE423A01024", 25, 2398.70),
    ("ADANIPORTS", "ADANI PORTS AND SEZ", "INE742F01042", 15083, 1184.25),
    ("BAJAJFINSV", "BAJAJ FINSERV", "INE918I01026", 16675, 1925.80),
    ("BAJAJ-AUTO", "BAJAJ AUTO", "INE917I01010", 16669, 8615.35),
    ("M&M", "MAHINDRA & MAHINDRA", "INE101A01026", 2031, 2987.60),
    ("HEROMOTOCO", "HERO MOTOCORP", "INE158A01026", 1348, 4278.95),
    ("EICHERMOT", "EICHER MOTORS", "INE066A01021", 910, 5412.30),
    ("DRREDDY", "DR. REDDY'S LABORATORIES", "INE089A01023", 881, 1248.85),
    ("CIPLA", "CIPLA", "INE059A01026", 694, 1492.40),
    ("DIVISLAB", "DIVI'S LABORATORIES", "INE361B01024", 10940, 5934.55),
    ("GRASIM", "GRASIM INDUSTRIES", "INE047A01021", 1232, 2612.20),
    ("HINDALCO", "HINDALCO  INDUSTRIES", "INE038A01020", 1363, 642.75),
    ("INDUSINDBK", "INDUSIND BANK", "INE095A01012", 5258, 978.40),
    ("TECHM", "TECH MAHINDRA", "INE669C01036", 13538, 1612.05),
    ("BPCL", "BHARAT PETROLEUM CORP  LT", "INE029A01011", 526, 291.35),
    ("BRITANNIA", "BRITANNIA INDUSTRIES", "INE216A01030", 547, 4925.70),
    ("APOLLOHOSP", "APOLLO HOSPITALS ENTER. L", "INE437A01024", 157, 7012.25),
    ("TATACONSUM", "TATA CONSUMER PRODUCT LTD", "INE192A01025", 878, 1084.15),
    ("SBILIFE", "SBI LIFE INSURANCE CO LTD", "INE123W01016", 21808, 1538.60),
    ("HDFCLIFE", "HDFC LIFE INS CO LTD", "INE795G01014", 467, 684.30),
    ("IOC", "INDIAN OIL CORP", "INE242A01010", 1624, 138.45),
    ("VEDL", "VEDANTA", "INE205A01025", 3063, 452.90),
    ("DLF", "DLF", "INE271C01023", 14732, 812.35),
    ("PIDILITIND", "PIDILITE INDUSTRIES", "INE318A01026", 2664, 2984.10),
)

NIFTY_LEVEL = 24350.0


def monthly_expiry(today: date) -> date:
    """The NSE monthly F&O expiry for ``today``: the month's last Tuesday, or next month's once it passed."""
    year, month = today.year, today.month
    for _ in range(2):
        last_day = calendar.monthrange(year, month)[1]
        expiry = date(year, month, last_day)
        while expiry.weekday() != calendar.TUESDAY:
            expiry = date(year, month, expiry.day - 1)
        if expiry >= today:
            return expiry
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable: next month always has a last Tuesday after today")


def _fo_prefix(underlying: str, expiry: date) -> str:
    return f"{underlying}{expiry:%y}{expiry.strftime('%b').upper()}"


def _equities() -> list[Instrument]:
    return [
        Instrument(
            exchange="NSE",
            tradingsymbol=symbol,
            name=name,
            exchange_token=exchange_token,
            segment_id=SEGMENT_NSE,
            kite_segment="NSE",
            instrument_type="EQ",
            upstox_key=f"NSE_EQ|{isin}",
            isin=isin,
            tick_size=EQUITY_TICK,
            lot_size=1,
            base_price=price,
        )
        for symbol, name, isin, exchange_token, price in NSE_EQUITIES
    ]


def _derivatives(expiry: date) -> list[Instrument]:
    # (underlying, name, exchange_token, instrument_type, strike, lot size, price, freeze quantity)
    contracts = (
        ("NIFTY", "NIFTY", 53001, "FUT", 0.0, 75, NIFTY_LEVEL + 85.0, 1800),
        ("BANKNIFTY", "BANKNIFTY", 53002, "FUT", 0.0, 30, 52410.0, 900),
        ("RELIANCE", "RELIANCE", 53003, "FUT", 0.0, 500, 1291.2, 20000),
        ("INFY", "INFY", 53004, "FUT", 0.0, 400, 1581.3, 16000),
        ("SBIN", "SBIN", 53005, "FUT", 0.0, 750, 816.4, 30000),
        ("NIFTY", "NIFTY", 53011, "CE", 24300.0, 75, 212.35, 1800),
        ("NIFTY", "NIFTY", 53012, "PE", 24300.0, 75, 158.60, 1800),
        ("NIFTY", "NIFTY", 53013, "CE", 24500.0, 75, 118.40, 1800),
        ("NIFTY", "NIFTY", 53014, "PE", 24200.0, 75, 121.75, 1800),
    )
    instruments = []
    for underlying, name, token, kind, strike, lot, price, freeze in contracts:
        prefix = _fo_prefix(underlying, expiry)
        symbol = f"{prefix}FUT" if kind == "FUT" else f"{prefix}{strike:.0f}{kind}"
        instruments.append(
            Instrument(
                exchange="NFO",
                tradingsymbol=symbol,
                name=name,
                exchange_token=token,
                segment_id=SEGMENT_NFO,
                kite_segment=f"NFO-{'FUT' if kind == 'FUT' else 'OPT'}",
                instrument_type=kind,
                upstox_key=f"NSE_FO|{token}",
                isin="",
                tick_size=EQUITY_TICK,
                lot_size=lot,
                base_price=price,
                expiry=expiry,
                strike=strike,
                freeze_quantity=freeze,
            )
        )
    return instruments


def _nifty_index() -> Instrument:
    return Instrument(
        exchange="NSE",
        tradingsymbol="NIFTY 50",
        name="NIFTY 50",
        exchange_token=1001,
        segment_id=SEGMENT_INDICES,
        kite_segment="INDICES",
        instrument_type="EQ",
        upstox_key="NSE_INDEX|Nifty 50",
        isin="",
        tick_size=0.0,
        lot_size=0,
        base_price=NIFTY_LEVEL,
    )


def build_universe(today: date) -> list[Instrument]:
    """Every instrument the simulator quotes, equities first; F&O expiries follow ``today``."""
    return [*_equities(), *_derivatives(monthly_expiry(today)), _nifty_index()]


class InstrumentIndex:
    """Looks instruments up by any identifier a client may send."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self.all: tuple[Instrument, ...] = tuple(instruments)
        self._by_symbol = {i.symbol: i for i in instruments}
        self._by_token = {i.kite_token: i for i in instruments}
        self._by_key = {i.upstox_key: i for i in instruments}

    def by_symbol(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        return self._by_symbol.get(f"{exchange}:{tradingsymbol}")

    def by_kite_token(self, token: int) -> Instrument | None:
        return self._by_token.get(token)

    def by_upstox_key(self, key: str) -> Instrument | None:
        return self._by_key.get(key)

    def find(self, ident: object) -> Instrument | None:
        """Any of ``"NSE:INFY"``, ``408065`` (or ``"408065"``), ``"NSE_EQ|INE009A01021"``."""
        if isinstance(ident, bool):
            return None
        if isinstance(ident, int):
            return self._by_token.get(ident)
        if not isinstance(ident, str):
            return None
        text = ident.strip()
        if text.isdigit():
            return self._by_token.get(int(text))
        return self._by_symbol.get(text) or self._by_key.get(text)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)
