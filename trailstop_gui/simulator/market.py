"""Prices: one order book per instrument, moved by a seeded random walk or set through the control API."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from trailstop_gui.simulator.instruments import Instrument, InstrumentIndex

DEPTH_LEVELS = 5
_WALK_TICK = 0.05  # indices have no tick size; they still move in paise steps


class PriceError(ValueError):
    """A price the market cannot take (not positive, not a number, bid above ask)."""


@dataclass(frozen=True, slots=True)
class DepthLevel:
    price: float
    quantity: int
    orders: int


@dataclass(frozen=True, slots=True)
class Quote:
    """A snapshot of one instrument's book; safe to keep and to pass between threads."""

    instrument: Instrument
    ltp: float
    last_quantity: int
    average_price: float
    volume: int
    buy_quantity: int
    sell_quantity: int
    open: float
    high: float
    low: float
    close: float
    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]
    last_trade_time: int  # epoch seconds
    timestamp: int  # epoch seconds
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0

    @property
    def bid(self) -> float | None:
        return self.bids[0].price if self.bids else None

    @property
    def ask(self) -> float | None:
        return self.asks[0].price if self.asks else None

    @property
    def net_change(self) -> float:
        return round(self.ltp - self.close, 2)

    @property
    def change_percent(self) -> float:
        return (self.ltp - self.close) * 100 / self.close if self.close else 0.0


def round_to_tick(price: float, tick: float) -> float:
    if tick <= 0:
        return round(price, 2)
    return round(round(price / tick) * tick, 2)


class _Book:
    __slots__ = (
        "instrument",
        "ltp",
        "last_quantity",
        "turnover",
        "volume",
        "open",
        "high",
        "low",
        "close",
        "bids",
        "asks",
        "last_trade_time",
        "timestamp",
        "oi",
        "oi_day_high",
        "oi_day_low",
    )

    def __init__(self, instrument: Instrument, ltp: float, close: float, now: int) -> None:
        self.instrument = instrument
        self.ltp = ltp
        self.last_quantity = 0
        self.turnover = 0.0
        self.volume = 0
        self.open = ltp
        self.high = ltp
        self.low = ltp
        self.close = close
        self.bids: tuple[DepthLevel, ...] = ()
        self.asks: tuple[DepthLevel, ...] = ()
        self.last_trade_time = now
        self.timestamp = now
        self.oi = 0
        self.oi_day_high = 0
        self.oi_day_low = 0


# How far a derivative moves for a move of its index: a future one for one, an option by a plain delta
# (about at the money). Enough for "the stop on NIFTY 50 fires while the option is exited" to be tested
# with prices that move together; not an option pricing model.
FOLLOW_DELTA = {"FUT": 1.0, "CE": 0.5, "PE": -0.5}
INDEX_OF = {"NIFTY": "NIFTY 50"}  # a derivative's ``name`` -> its index's tradingsymbol


class Market:
    """All books, the random walk and manual price setting. Not thread-safe: call it on the loop thread."""

    def __init__(
        self, instruments: InstrumentIndex, rng: random.Random, clock: Callable[[], float] = time.time
    ) -> None:
        self.instruments = instruments
        self._rng = rng
        self._clock = clock
        self._books: dict[int, _Book] = {}
        now = int(clock())
        for inst in instruments:
            close = round_to_tick(
                inst.base_price * (1 + rng.uniform(-0.012, 0.012)), inst.tick_size or _WALK_TICK
            )
            book = _Book(inst, inst.base_price, close, now)
            if inst.is_derivative:
                book.oi = rng.randrange(50, 5000) * inst.lot_size
                book.oi_day_high = int(book.oi * 1.05)
                book.oi_day_low = int(book.oi * 0.95)
            self._trade(book, inst.base_price, self._random_quantity(inst), now)
            self._rebuild_depth(book, None, None)
            self._books[inst.kite_token] = book

    # -- reading ---------------------------------------------------------------------------------

    def quote(self, instrument: Instrument) -> Quote:
        b = self._books[instrument.kite_token]
        return Quote(
            instrument=instrument,
            ltp=b.ltp,
            last_quantity=b.last_quantity,
            average_price=round(b.turnover / b.volume, 2) if b.volume else b.ltp,
            volume=b.volume,
            buy_quantity=sum(level.quantity for level in b.bids) * 7,
            sell_quantity=sum(level.quantity for level in b.asks) * 7,
            open=b.open,
            high=b.high,
            low=b.low,
            close=b.close,
            bids=b.bids,
            asks=b.asks,
            last_trade_time=b.last_trade_time,
            timestamp=b.timestamp,
            oi=b.oi,
            oi_day_high=b.oi_day_high,
            oi_day_low=b.oi_day_low,
        )

    def ltp(self, instrument: Instrument) -> float:
        return self._books[instrument.kite_token].ltp

    def followers(self, index: Instrument) -> list[Instrument]:
        """The derivatives that move with ``index`` (NIFTY 50: the NIFTY future and options)."""
        if not index.is_index:
            return []
        return [
            book.instrument
            for book in self._books.values()
            if book.instrument.is_derivative
            and INDEX_OF.get(book.instrument.name) == index.tradingsymbol
            and book.instrument.instrument_type in FOLLOW_DELTA
        ]

    def _follow(self, index: Instrument, move: float, now: int) -> None:
        for inst in self.followers(index):
            book = self._books[inst.kite_token]
            tick = inst.tick_size or _WALK_TICK
            price = max(round_to_tick(book.ltp + FOLLOW_DELTA[inst.instrument_type] * move, tick), tick)
            self._trade(book, price, self._random_quantity(inst), now)
            self._rebuild_depth(book, None, None)

    # -- moving prices ---------------------------------------------------------------------------

    def set_price(
        self, instrument: Instrument, ltp: float, bid: float | None = None, ask: float | None = None
    ) -> Quote:
        """Trade at ``ltp``; put the best bid/ask where asked (by default a tick either side of ``ltp``)."""
        ltp = _valid_price(ltp, "ltp")
        bid = None if bid is None else _valid_price(bid, "bid")
        ask = None if ask is None else _valid_price(ask, "ask")
        if bid is not None and ask is not None and bid > ask:
            raise PriceError(f"bid {bid} is above ask {ask}")
        book = self._books[instrument.kite_token]
        now = int(self._clock())
        before = book.ltp
        self._trade(book, round(ltp, 2), self._random_quantity(instrument), now)
        self._rebuild_depth(book, bid, ask, manual=True)
        self._follow(instrument, book.ltp - before, now)
        return self.quote(instrument)

    def gap(self, instrument: Instrument, percent: float) -> Quote:
        """Jump the price by ``percent`` at once, as an opening gap or a news spike does."""
        book = self._books[instrument.kite_token]
        target = round_to_tick(book.ltp * (1 + percent / 100), instrument.tick_size or _WALK_TICK)
        return self.set_price(instrument, max(target, instrument.tick_size or _WALK_TICK))

    def step(self) -> list[Instrument]:
        """One random-walk step for every instrument; returns the instruments that changed."""
        now = int(self._clock())
        changed = []
        index_moves: list[tuple[Instrument, float]] = []
        for book in self._books.values():
            inst = book.instrument
            tick = inst.tick_size or _WALK_TICK
            sigma = 0.004 if inst.instrument_type in ("CE", "PE") else 0.0006
            moves = round(self._rng.gauss(0.0, sigma * book.ltp) / tick)
            price = max(round_to_tick(book.ltp + moves * tick, tick), tick)
            before = book.ltp
            self._trade(book, price, self._random_quantity(inst), now)
            self._rebuild_depth(book, None, None)
            if inst.is_index:
                index_moves.append((inst, book.ltp - before))
            changed.append(inst)
        for index, move in index_moves:
            self._follow(index, move, now)
        return changed

    # -- internals -------------------------------------------------------------------------------

    def _random_quantity(self, inst: Instrument) -> int:
        if inst.is_index:
            return 0
        return self._rng.randint(1, 40) * max(inst.lot_size, 1)

    def _trade(self, book: _Book, price: float, quantity: int, now: int) -> None:
        book.ltp = price
        book.last_quantity = quantity
        book.volume += quantity
        book.turnover += price * quantity
        book.high = max(book.high, price)
        book.low = min(book.low, price)
        book.last_trade_time = now
        book.timestamp = now

    def _rebuild_depth(self, book: _Book, bid: float | None, ask: float | None, manual: bool = False) -> None:
        inst = book.instrument
        if inst.is_index:
            book.bids, book.asks = (), ()
            return
        tick = inst.tick_size
        if bid is None and ask is None and not manual:
            # The last trade happened either at the bid or at the ask.
            spread = tick * self._rng.randint(1, 2)
            if self._rng.random() < 0.5:
                bid, ask = book.ltp, book.ltp + spread
            else:
                bid, ask = book.ltp - spread, book.ltp
        if bid is None:
            bid = book.ltp - tick if ask is None or ask > book.ltp else ask - tick
        if ask is None:
            ask = book.ltp + tick if bid < book.ltp else bid + tick
        if bid == ask:
            bid = ask - tick
        bid, ask = max(round(bid, 2), tick), round(ask, 2)
        book.bids = self._levels(inst, bid, -tick)
        book.asks = self._levels(inst, ask, tick)

    def _levels(self, inst: Instrument, best: float, step: float) -> tuple[DepthLevel, ...]:
        levels = []
        price = best
        lot = max(inst.lot_size, 1)
        for _ in range(DEPTH_LEVELS):
            if price <= 0:
                break
            quantity = self._rng.randint(1, 300) * lot
            levels.append(DepthLevel(round(price, 2), quantity, self._rng.randint(1, min(25, quantity))))
            price = price + step * self._rng.randint(1, 2)
        return tuple(levels)


def _valid_price(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceError(f"{name} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise PriceError(f"{name} must be a number") from None
    if not math.isfinite(number) or number <= 0:
        raise PriceError(f"{name} must be a positive number")
    return round(number, 2)
