"""PositionBook: one account's live positions, fed by its order-update stream and corrected by REST reads.

An exit is sized from the book instead of a positions read over REST (a whole round trip before the
order) when the book can vouch for the position; otherwise the exit job reads REST as before. No Qt.

Fills. A pushed order update carries the order's *cumulative* ``filled_quantity`` (Kite docs, Postbacks:
an UPDATE is sent "when an open order is modified or when there's a partial fill"; the WebSocket carries the
same payload for orders placed anywhere: web, mobile, API). The book applies, per order id, only the growth
of that figure over the largest one it has seen, so a repeated update adds nothing and a late, older one
(OPEN after COMPLETE) takes nothing back. An order stays final once an update said so.

Corrections. A REST read does not replace the stream's fills; it sets, per position, the offset between
what REST says and what the stream has added up (``net = offset + stream``). Positions may lag a fill
(PROTOCOLS: "replies can lie by omission") and the stream may trail REST: either way one read moves the
offset, and a position counts as known only while its offset is one that two reads agreed on. A change
the stream never reports (a product conversion, a missed update) thus shows as a moved offset, and the
book vouches for that position again once the next read confirms it.

Fresh, for one position (``quantity`` returns None otherwise, and the exit reads REST):
- the book was corrected while the stream was up, and the stream has not dropped since (updates sent
  while it was down are gone for good: Kite sends no backlog on connect);
- the position's offset is confirmed (above);
- no order on the instrument is on its way (placed, validating, a MARKET order not final: a fill that
  may come any moment: Kite forum 8676, "Orders Stages", an order in OPEN PENDING filled an hour later
  while the positions page showed nothing), none of this app's exits sent is unreported, no update the
  book could not read, and no lost reply (``suspect``) since the last correction.
Resting orders (an OPEN limit, a TRIGGER PENDING stop) do not spoil it: their fills come on the same stream;
except a working delivery sale, which blocks the shares it will deliver before anything fills.

Delivery (CNC) positions are counted by services/holdings.py's rules on the book's rows: holdings from the
last correction that read them, today's CNC net from the book (a sale out of holdings outside the app is a
negative CNC net), and on Upstox each CNC sale since that read added to ``cnc_used_quantity``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from trailstop_gui.models.domain import InstrumentId, OrderType, Position, Product, Protection, Side
from trailstop_gui.services.brokers.base import Capabilities, Holding, Order, OrderStatus
from trailstop_gui.services.brokers.errors import BrokerError
from trailstop_gui.services.brokers.feed_loop import OrderUpdate
from trailstop_gui.services.holdings import isin_of
from trailstop_gui.services.positions import open_quantity

log = logging.getLogger("trailstop.book")

BookKey = tuple[str, str, Product]
"""One net position as the book counts it: exchange, trading symbol, product."""

# How far a positions read may trail the fills (PROTOCOLS: "the order book, trades and positions can lag a
# fill by a moment"; the simulator's book_lag tests use 1.5 s): a read sent this long after a fill shows it.
POSITIONS_LAG = 5.0

# How long an exit we placed may go unreported by the stream before a REST read is trusted to show it.
SENT_GRACE = 10.0

# Statuses of an order that rests at the exchange: a fill may come, and the stream reports it.
_RESTING = (OrderStatus.OPEN, OrderStatus.TRIGGER_PENDING)


@dataclass
class _OrderSeen:
    """What the stream said of one order: its listing, the largest cumulative fill, and whether final."""

    key: BookKey | None
    instrument: InstrumentId | None
    side: Side
    tag: str | None = None
    filled: int = 0
    final: bool = False
    in_flight: bool = False  # on its way (see the module docstring): a fill may come at any moment


@dataclass
class _Row:
    """One position: the stream's sum of fills and the offset REST reads agreed on (see ``correct``)."""

    instrument: InstrumentId
    quote_key: str
    stream: int = 0
    stable: int | None = None  # the accepted offset: net = stable + stream
    confirmed: bool = False  # the last read agreed with ``stable``
    moved: int | None = None  # an offset the last read showed instead, not accepted yet
    last_fill_at: float | None = None  # when the stream last changed ``stream``
    cnc_sold: int = 0  # CNC sales seen since the last holdings read (Upstox's used quantity grows by them)

    @property
    def net(self) -> int:
        return (self.stable or 0) + self.stream


@dataclass(frozen=True)
class BookState:
    """How fresh the book is (for logs and tests)."""

    corrected_at: float | None
    stream_up_since: float | None
    in_flight: tuple[str, ...] = ()
    unreadable: int = 0
    rows: Mapping[BookKey, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BookFigure:
    """What an exit may close by the book, and what the figure shows: the fills the stream counted in
    it (order id -> (tag, filled)), and how long ago the read that last corrected the book was sent."""

    quantity: int
    read_age: float
    fills: Mapping[str, tuple[str | None, int]] = field(default_factory=dict)


class PositionBook:
    """One account's positions, per exchange/symbol/product: thread-safe (the feed thread writes, exits read).

    ``parse`` turns a pushed update's fields into an ``Order`` (the broker adapter's own order-book parser).
    """

    def __init__(
        self,
        capabilities: Capabilities,
        parse: Callable[[Mapping[str, Any]], Order],
        *,
        clock: Callable[[], float] = time.monotonic,
        lag: float = POSITIONS_LAG,
    ) -> None:
        self.capabilities = capabilities
        self.lag = lag
        self._parse = parse
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: dict[str, _OrderSeen] = {}
        # Views of ``_orders`` kept as updates come, so that an exit's read scans only what it needs, not
        # every order of the day (an exit reads the book while TRIGGERED commits on the feed thread, and
        # both need the interpreter): the orders not final yet, and those with a fill, by trading symbol.
        self._open: dict[str, _OrderSeen] = {}
        self._filled_by_symbol: dict[str, dict[str, _OrderSeen]] = {}
        self._rows: dict[BookKey, _Row] = {}
        self._holdings: list[Holding] | None = None
        self._corrected_at: float | None = None  # when the last counted correction's read was sent
        self._stream_up_since: float | None = None
        self._sent: dict[str, tuple[BookKey, float]] = {}  # our exits placed, not reported yet; when
        self._read_before = False
        self._unreadable = 0  # updates whose fill could not be placed since the last correction
        self._suspect: set[BookKey] = set()  # a lost reply: an order may be out there unseen

    # ----------------------------------------------------------------- the stream (feed thread)

    def stream_up(self) -> None:
        """The order-update stream (re)connected: fills from now on are seen."""
        with self._lock:
            self._stream_up_since = self._clock()

    def stream_down(self) -> None:
        """The stream dropped: fills meanwhile are lost until the next correction after it is back."""
        with self._lock:
            self._stream_up_since = None

    def apply(self, update: OrderUpdate) -> None:
        """One pushed order update; its fill counts once however often and in whatever order it comes."""
        if not update.order_id:
            return
        try:
            order = self._parse(update.raw)
        except (BrokerError, ValueError, KeyError, TypeError) as exc:
            log.warning("order update %s unreadable for the book (%s)", update.order_id, exc)
            with self._lock:
                self._unreadable += 1
            return
        key = self._key(order)
        with self._lock:
            self._sent.pop(update.order_id, None)
            seen = self._orders.get(update.order_id)
            if seen is None:
                tag = update.tag or order.tag or None
                seen = self._orders[update.order_id] = _OrderSeen(key, order.instrument, order.side, tag)
            if seen.final and not order.is_final:
                return  # an older update arriving late (OPEN after COMPLETE): nothing to learn
            grown = order.filled_quantity - seen.filled
            if grown > 0:
                seen.filled = order.filled_quantity
                if key is None:
                    self._unreadable += 1  # a fill on a product the app does not trade, or no listing
                else:
                    row = self._row(key, order.instrument)
                    signed = grown if order.side is Side.BUY else -grown
                    row.stream += signed
                    row.last_fill_at = self._clock()
                    if key[2] is Product.CNC and signed < 0:
                        row.cnc_sold += -signed
            seen.final = seen.final or order.is_final
            seen.in_flight = not seen.final and (
                order.status not in _RESTING or order.order_type is OrderType.MARKET
            )
            if seen.final:
                self._open.pop(update.order_id, None)
            else:
                self._open[update.order_id] = seen
            if seen.filled and seen.key is not None:
                self._filled_by_symbol.setdefault(seen.key[1], {})[update.order_id] = seen

    # ----------------------------------------------------------------- this app's exits (exit threads)

    def exit_sent(self, order_ids: Iterable[str], p: Protection) -> None:
        """Exits placed for ``p``: its position is not known until the stream reports them."""
        key = (p.exchange, p.symbol, p.product)
        with self._lock:
            for order_id in order_ids:
                if order_id not in self._orders:
                    self._sent[order_id] = (key, self._clock())

    def suspect(self, p: Protection) -> None:
        """A reply was lost: an order may be at the broker unseen; REST until the next correction."""
        with self._lock:
            self._suspect.add((p.exchange, p.symbol, p.product))

    # ----------------------------------------------------------------- corrections (reconciler thread)

    def correct(self, positions: list[Position], holdings: list[Holding] | None, sent_at: float) -> bool:
        """The reconciler's REST read, sent at ``sent_at`` (this book's clock): it sets every offset.

        ``holdings`` None: not read this time; the last holdings read stays. Returns whether every position
        is confirmed now (False: another read soon lets the book vouch for them again).
        """
        with self._lock:
            seen: dict[BookKey, Position] = {}
            for pos in positions:
                if pos.product is None:
                    continue
                key = (pos.exchange, pos.symbol, pos.product)
                if key in seen:  # one row per key from the broker; add up if it ever sends two
                    pos = replace(pos, quantity=pos.quantity + seen[key].quantity)
                seen[key] = pos
            for key, pos in seen.items():
                self._row(key, pos.instrument, pos.quote_key)
            self._read_before = True
            for key, row in self._rows.items():
                self._settle(key, row, seen[key].quantity if key in seen else 0, sent_at)
                if holdings is not None:
                    row.cnc_sold = 0
            if holdings is not None:
                self._holdings = list(holdings)
            up = self._stream_up_since
            if up is not None and up + self.lag <= sent_at:
                # Counted only when the stream was up a lag before the read left: the read shows every fill
                # made while the stream was down (or before it first came up), the stream every one since.
                self._corrected_at = sent_at
            # Our exits the stream never reported: after SENT_GRACE the read itself shows their fills
            # (a moved offset, confirmed by the read after it).
            self._sent = {o: s for o, s in self._sent.items() if s[1] > sent_at - SENT_GRACE}
            self._unreadable = 0
            self._suspect.clear()
            return self._corrected_at == sent_at and all(row.confirmed for row in self._rows.values())

    def _settle(self, key: BookKey, row: _Row, rest: int, sent_at: float) -> None:
        """One row's REST quantity against the stream: agree, or a moved offset waiting to be accepted.

        Agreeing with the accepted offset confirms it. A different offset is accepted once a second read
        shows it too, sent a lag after the stream's last fill on the row: that read cannot be trailing a
        fill the stream saw, and two reads agreeing rule out a fill the stream has yet to report. (Reads
        that trail by one fill give the same offset after every fill: only time tells them apart.) Until
        then the book does not vouch for the row.
        """
        if row.last_fill_at is not None and row.last_fill_at >= sent_at:
            # The stream saw a fill while the read was on its way: whether the read shows it cannot be
            # told, so this read says nothing about the row (it keeps what it had).
            return
        offset = rest - row.stream
        if row.stable is not None and offset == row.stable:
            row.confirmed, row.moved = True, None
            return
        quiet = row.last_fill_at is None or row.last_fill_at < sent_at - self.lag
        if row.moved == offset and quiet:
            row.stable, row.confirmed, row.moved = offset, True, None
            return
        row.moved = offset
        if row.stable is not None:
            log.info("book %s %s %s: REST %d, stream %d; not vouching yet", *key, rest, row.net)
        row.confirmed = False

    # ----------------------------------------------------------------- reading (exit threads)

    def quantity(self, p: Protection) -> int | None:
        """What an exit of ``p`` may close without a flip (positions.open_quantity), or None: not known."""
        figure = self.figure(p)
        return figure.quantity if figure is not None else None

    def figure(self, p: Protection) -> BookFigure | None:
        """``quantity`` with what it is known to show (an exit twin's fill: positions.shows_exit)."""
        key = (p.exchange, p.symbol, p.product)
        with self._lock:
            corrected = self._corrected_at
            if corrected is None or not self._fresh_for(p, key):
                return None
            holdings = list(self._holdings or [])
            positions = [self._position(k, row) for k, row in self._rows.items() if k[2] is p.product]
            if p.product is Product.CNC and self.capabilities.broker == "upstox":
                holdings = self._with_sales(holdings, positions)
            symbols = {k[1] for k in self._rows_of(p)} | {p.symbol}
            fills = {
                order_id: (o.tag, o.filled)
                for symbol in symbols
                for order_id, o in self._filled_by_symbol.get(symbol, {}).items()
            }
            read_age = self._clock() - corrected
        return BookFigure(open_quantity(p, positions, holdings, self.capabilities), read_age, fills)

    def recent_fills_bound(self, p: Protection) -> int | None:
        """What the stream says ``p`` may close when a read may still trail a fill it saw; else None.

        When the book cannot vouch because a read disagrees with fills the stream saw within the lag (a
        sale outside the app that positions do not show yet), an exit takes the smaller of the read and
        this: never a flip. Without such a recent fill the read is believed (a change the stream never
        reports, such as a product conversion, shows only there).
        """
        key = (p.exchange, p.symbol, p.product)
        with self._lock:
            up, corrected = self._stream_up_since, self._corrected_at
            if up is None or corrected is None or up > corrected or self._unreadable:
                return None
            if p.product is Product.CNC and self._holdings is None:
                return None
            rows = self._rows_of(p) or ([key] if key in self._rows else [])
            if not rows or any(self._rows[k].stable is None for k in rows):
                return None
            recent = self._clock() - self.lag
            if not any((self._rows[k].last_fill_at or -math.inf) >= recent for k in rows):
                return None
            holdings = list(self._holdings or [])
            positions = [self._position(k, row) for k, row in self._rows.items() if k[2] is p.product]
            if p.product is Product.CNC and self.capabilities.broker == "upstox":
                holdings = self._with_sales(holdings, positions)
        return open_quantity(p, positions, holdings, self.capabilities)

    def state(self) -> BookState:
        with self._lock:
            return BookState(
                corrected_at=self._corrected_at,
                stream_up_since=self._stream_up_since,
                in_flight=tuple(i for i, o in self._open.items() if o.in_flight) + tuple(self._sent),
                unreadable=self._unreadable,
                rows={k: row.net for k, row in self._rows.items()},
            )

    # ----------------------------------------------------------------- inside the lock

    def _fresh_for(self, p: Protection, key: BookKey) -> bool:
        return not self._why_not(p, key)

    def why_not(self, p: Protection) -> str:
        """Why the book does not vouch for ``p``'s position now ("" when it does): for the exit's log."""
        with self._lock:
            return self._why_not(p, (p.exchange, p.symbol, p.product))

    def _why_not(self, p: Protection, key: BookKey) -> str:
        up, corrected = self._stream_up_since, self._corrected_at
        if up is None:
            return "the order stream is down"
        if corrected is None or up > corrected:
            return "no positions read since the order stream came up"
        if self._unreadable:
            return "an order update could not be read"
        if p.product is Product.CNC and self._holdings is None:
            return "holdings never read"
        rows = self._rows_of(p)
        if any(not self._rows[k].confirmed for k in rows):
            return "the positions read and the order stream disagree"
        if key in self._suspect:
            return "a reply was lost"
        listing = {(k[0], k[1]) for k in rows} | {(p.exchange, p.symbol)}
        busy = [o for o in self._open.values() if o.in_flight]  # in flight: never final
        if p.product is Product.CNC:
            # A working delivery sale, even one resting, blocks the shares it will deliver (Upstox:
            # cnc_used_quantity is "blocked towards open or completed order"; Kite refuses a second sale):
            # only the order book tells how many (exit_jobs reads it), so the book does not vouch.
            busy += [o for o in self._open.values() if o.key and o.key[2] is Product.CNC]
        if any(o.key is None or (o.key[0], o.key[1]) in listing for o in busy):
            return "an order on the instrument is on its way"
        if any((k[0], k[1]) in listing for k, _at in self._sent.values()):
            return "an exit of ours is not reported yet"
        return ""

    def _rows_of(self, p: Protection) -> list[BookKey]:
        """The rows an exit of ``p`` is counted on: its own, and for delivery every listing of its ISIN."""
        if p.product is not Product.CNC:
            return [k for k in self._rows if (k[0], k[1], k[2]) == (p.exchange, p.symbol, p.product)]
        holdings = self._holdings or []
        isin = isin_of(p.instrument, p.symbol, p.exchange, holdings)
        keys = []
        for k, row in self._rows.items():
            if k[2] is not Product.CNC:
                continue
            same = (k[0], k[1]) == (p.exchange, p.symbol)
            if same or (isin is not None and isin_of(row.instrument, k[1], k[0], holdings) == isin):
                keys.append(k)
        return keys

    def _row(self, key: BookKey, instrument: InstrumentId | None, quote_key: str = "") -> _Row:
        row = self._rows.get(key)
        if row is None:
            # A row first seen now was flat at every read so far (none listed it): offset 0 is accepted
            # once a read has been made; before any, nothing is.
            row = self._rows[key] = _Row(
                instrument if instrument is not None else f"{key[0]}:{key[1]}",
                quote_key or f"{key[0]}:{key[1]}",
                stable=0 if self._read_before else None,
                confirmed=self._read_before,
            )
        return row

    def _position(self, key: BookKey, row: _Row) -> Position:
        product = key[2]
        return Position(
            symbol=key[1],
            exchange=key[0],
            instrument=row.instrument,
            quote_key=row.quote_key,
            quantity=row.net,
            average_price=0.0,
            product=product,
            raw_product=self.capabilities.broker_product(product),
        )

    def _with_sales(self, holdings: list[Holding], positions: list[Position]) -> list[Holding]:
        """Upstox counts a delivery sale in ``cnc_used_quantity`` too: add the sales since the read."""
        sold: dict[str | None, int] = {}
        for pos in positions:
            row = self._rows[(pos.exchange, pos.symbol, Product.CNC)]
            if row.cnc_sold:
                isin = isin_of(pos.instrument, pos.symbol, pos.exchange, holdings)
                sold[isin] = sold.get(isin, 0) + row.cnc_sold
        if not sold:
            return holdings
        out = []
        for h in holdings:
            extra = sold.pop(h.isin, 0)
            out.append(replace(h, used_quantity=h.used_quantity + extra) if extra else h)
        return out

    def _key(self, order: Order) -> BookKey | None:
        if order.product is None or not order.symbol or not order.exchange:
            return None
        return (order.exchange, order.symbol, order.product)
