"""Delivery shares (Kite CNC, Upstox product D): how many may be sold, and whether the demat lets them go.

A trader's delivery shares show up in two replies: ``holdings`` (what sits in the demat, by ISIN, under
the exchange it was bought on) and today's ``positions`` (a CNC/D net row for today's buys and sales).
Both brokers' rules, from their documented fields:

- Kite (Kite Connect docs, Portfolio > Holdings): ``quantity`` is "Net quantity (T+1 + realised)", so it
  already includes ``t1_quantity``; ``used_quantity`` is "Quantity sold from the net holding quantity",
  the same sale that today's CNC row shows with a negative net ("Why do stocks sold from the holdings show
  up as a negative position", Zerodha support). A same-day buy-back brings the net back up and leaves the
  holdings intact. Sellable = max(0, sum of ``quantity`` + the signed CNC net), every row of the ISIN.
- Upstox (Upstox API docs, Get Holdings / Get Positions; SDK ``HoldingsData``): ``quantity``,
  ``cnc_used_quantity`` ("blocked towards open or completed order"), product D. Sellable =
  max(0, ``quantity`` + the signed D net), and never more than ``quantity - cnc_used_quantity`` plus
  what was bought today (max(net D, 0)).

A negative delivery net is shares sold out of holdings, never a short: nothing here ever offers it as
something to buy back. Rows are matched by ISIN, so a holding listed under BSE counts for an NSE
protection and the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from trailstop_gui.models.domain import InstrumentId, Product, Protection, Side
from trailstop_gui.services.brokers.base import Holding, Order, Position

EQUITY_EXCHANGES = ("NSE", "BSE")


def _same_listing(instrument: object, symbol: str, exchange: str, other: Holding | Position | Order) -> bool:
    if str(other.instrument) == str(instrument):
        return True
    return other.symbol == symbol and other.exchange == exchange


def isin_of(
    instrument: InstrumentId | object, symbol: str, exchange: str, holdings: Iterable[Holding]
) -> str | None:
    """The ISIN of an equity, from its Upstox key ("NSE_EQ|INE..."), else from a holding of it.

    Kite's positions carry no ISIN: a holding of the same listing, or of the same trading symbol on the
    other equity exchange, names it.
    """
    key = str(instrument)
    segment, bar, code = key.partition("|")
    if bar and segment.endswith("_EQ") and code:
        return code
    rows = list(holdings)
    for h in rows:
        if h.isin and _same_listing(instrument, symbol, exchange, h):
            return h.isin
    if exchange in EQUITY_EXCHANGES:
        for h in rows:
            if h.isin and h.symbol == symbol and h.exchange in EQUITY_EXCHANGES:
                return h.isin
    return None


@dataclass(frozen=True, slots=True)
class DeliveryShares:
    """One stock's delivery shares across its listings: holdings and today's signed delivery net."""

    isin: str | None
    held: int  # sum of the holdings' ``quantity`` (Kite: T1 included)
    used: int  # sum of ``used_quantity`` / ``cnc_used_quantity``
    net: int  # sum of today's signed CNC / D net quantity (negative: sold out of holdings)
    holdings: tuple[Holding, ...] = ()
    positions: tuple[Position, ...] = ()  # today's delivery rows counted in ``net``

    def sellable(self, broker: str) -> int:
        """What a SELL may take from the demat now, by the broker's own rule (see the module docstring)."""
        total = self.held + self.net
        if broker == "upstox":
            total = min(total, self.held - self.used + max(self.net, 0))
        return max(0, total)

    def sellable_besides(self, broker: str, blocked: int) -> int:
        """What a SELL may take while working delivery sales (:func:`blocked_by_working_sales`) hold
        ``blocked`` shares: the broker will not deliver the same shares twice. Upstox's ``used`` already
        counts open orders; taking them off ``held + net`` as well never goes below its own rule."""
        return max(0, min(self.sellable(broker), self.held + self.net - blocked))


def _same_stock(
    isin: str | None,
    instrument: object,
    symbol: str,
    exchange: str,
    other: Holding | Position | Order,
    holdings: list[Holding],
) -> bool:
    """Whether ``other`` (a holding, a position row, an order) is of the stock named: by ISIN where both
    sides have one, else by listing."""
    other_isin = (
        other.isin
        if isinstance(other, Holding)
        else isin_of(other.instrument, other.symbol, other.exchange, holdings)
    )
    if isin is not None and other_isin is not None:
        return other_isin == isin
    return _same_listing(instrument, symbol, exchange, other)


def delivery_shares(
    instrument: InstrumentId | object,
    symbol: str,
    exchange: str,
    positions: Iterable[Position],
    holdings: Iterable[Holding],
) -> DeliveryShares:
    """The delivery shares of the stock ``instrument`` names, all its listings counted once."""
    rows = list(holdings)
    isin = isin_of(instrument, symbol, exchange, rows)
    mine = tuple(h for h in rows if _same_stock(isin, instrument, symbol, exchange, h, rows))
    today = tuple(
        pos
        for pos in positions
        if pos.product is Product.CNC and _same_stock(isin, instrument, symbol, exchange, pos, rows)
    )
    return DeliveryShares(
        isin=isin,
        held=sum(h.quantity for h in mine),
        used=sum(h.used_quantity for h in mine),
        net=sum(pos.quantity for pos in today),
        holdings=mine,
        positions=today,
    )


@dataclass(frozen=True, slots=True)
class DeliveryStock:
    """One stock's sellable delivery shares, shaped like a ``Position`` so that lists and ``adopt`` take it.

    ``held`` > 0 marks it as a holding (bought on earlier days); ``quantity`` is what may be sold now.
    The listing named (instrument, symbol, exchange) is NSE's when the stock is held there.
    """

    symbol: str
    exchange: str
    instrument: InstrumentId
    quote_key: str
    isin: str | None
    quantity: int
    average_price: float
    held: int
    last_price: float | None = None
    pnl: float | None = None
    product: Product = Product.CNC
    raw_product: str = "CNC"

    @property
    def side(self) -> Side:
        return Side.BUY

    @property
    def is_holding(self) -> bool:
        return self.held > 0

    @property
    def reference_price(self) -> float:
        """Where a new protection's trail starts: today's price for holdings, else the average price.

        Shares bought months ago may sit far below their average cost: a stop under the average would
        be crossed already and sell them the moment they are protected.
        """
        if self.is_holding and self.last_price is not None and self.last_price > 0:
            return self.last_price
        return self.average_price


def delivery_stocks(
    positions: Iterable[Position], holdings: Iterable[Holding], broker: str
) -> list[DeliveryStock]:
    """Every stock with delivery shares to sell (holdings and today's delivery buys), one entry per ISIN."""
    position_rows = [pos for pos in positions if pos.product is Product.CNC]
    holding_rows = list(holdings)
    listings: dict[object, Holding | Position] = {}
    candidates: list[Holding | Position] = [*holding_rows, *(p for p in position_rows if p.quantity > 0)]
    for row in candidates:
        isin = (
            row.isin
            if isinstance(row, Holding)
            else isin_of(row.instrument, row.symbol, row.exchange, holding_rows)
        )
        key = isin or (row.exchange, row.symbol)
        chosen = listings.get(key)
        # Name the stock by its NSE listing when there is one (the feed quotes it; BSE rows share the ISIN).
        if chosen is None or (chosen.exchange != "NSE" and row.exchange == "NSE"):
            listings[key] = row
    stocks = []
    for listing in listings.values():
        shares = delivery_shares(
            listing.instrument, listing.symbol, listing.exchange, position_rows, holding_rows
        )
        quantity = shares.sellable(broker)
        if quantity <= 0:
            continue
        # The entry price: what the shares held and today's buys cost, on average.
        bought = [pos for pos in shares.positions if pos.quantity > 0]
        cost = sum(h.quantity * h.average_price for h in shares.holdings)
        cost += sum(pos.quantity * pos.average_price for pos in bought)
        units = shares.held + sum(pos.quantity for pos in bought)
        average = cost / units if units > 0 and cost > 0 else listing.average_price
        last = listing.last_price
        stocks.append(
            DeliveryStock(
                symbol=listing.symbol,
                exchange=listing.exchange,
                instrument=listing.instrument,
                quote_key=listing.quote_key,
                isin=shares.isin,
                quantity=quantity,
                average_price=round(average, 4),
                held=shares.held,
                last_price=last,
                pnl=(last - average) * quantity if last is not None and average > 0 else None,
            )
        )
    stocks.sort(key=lambda s: s.symbol)
    return stocks


def covers_stock(p: Protection, stock: DeliveryStock, holdings: Iterable[Holding]) -> bool:
    """Whether ``p`` already protects the stock's delivery shares (any listing of its ISIN)."""
    if p.product is not Product.CNC or p.side is not Side.BUY:
        return False
    isin = isin_of(p.instrument, p.symbol, p.exchange, holdings)
    if isin is not None and stock.isin is not None:
        return isin == stock.isin
    return str(p.instrument) == str(stock.instrument) or (p.symbol, p.exchange) == (
        stock.symbol,
        stock.exchange,
    )


def is_delivery_sale(pos: Position) -> bool:
    """A negative delivery row: shares sold out of holdings today, never a short to protect or buy back."""
    return pos.product is Product.CNC and pos.quantity < 0


# ----------------------------------------------------------------------------- consent to sell from demat

STANDING_CONSENT = frozenset({"physical", "poa", "ddpi"})


def sells_need_authorisation(demat_consent: str | None) -> bool | None:
    """Whether a sale from the demat needs the trader's authorisation first (None: the broker does not say).

    Kite's ``meta.demat_consent`` is "empty", "consent" or "physical": "physical" is a POA/DDPI on file
    (pykiteconnect issue 143: no CDSL PIN needed); "consent" is online consent, under which every sale is
    authorised with the CDSL TPIN and an OTP, valid for that trading day only (Zerodha support, "POA form";
    Z-Connect "CDSL TPIN authorisation from 20/02/2021"). Upstox reports ``poa`` (true/false) in its
    profile, read here as "poa" or "empty"; without DDPI/POA it asks for TPIN and OTP (Upstox help, eDIS).
    """
    if demat_consent is None:
        return None
    return demat_consent not in STANDING_CONSENT


CONSENT_WARNING = (
    "Selling delivery shares needs your consent at the depository. This account has no standing "
    "consent (DDPI or POA), so unless you authorise the sale with your CDSL TPIN today, the broker may "
    "refuse TrailStop's exit when the stop is hit. Authorise today's sale from the broker's holdings "
    "page, or enable DDPI for sales without a daily TPIN."
)

DEMAT_REFUSAL_ADVICE = (
    "The broker refused to take the shares from your demat: authorise the sale with your CDSL TPIN "
    "(the broker's holdings page, Authorise) or enable DDPI, then retry the exit."
)

# Neither broker publishes its refusal text for an unauthorised demat debit; these are the words their
# help pages use for it (Zerodha: "DP not authorised"/"TPIN"; Upstox: "not authorized on CDSL using
# TPIN", eDIS, DDPI/POA). Matching stays narrow so that an unrelated "not authorised" (an IP, a token)
# is not mistaken for it.
_DEMAT_WORDS = re.compile(r"\b(tpin|ddpi|e-?dis|cdsl|poa|power of attorney)\b")
_AUTH_WORDS = ("authoris", "authoriz")
_SUBJECT_WORDS = ("holding", "demat", "delivery")


def is_demat_refusal(message: str | None) -> bool:
    """Whether a broker's refusal says the shares could not be debited from the demat unauthorised."""
    text = (message or "").lower()
    if _DEMAT_WORDS.search(text):
        return True
    return any(word in text for word in _AUTH_WORDS) and any(word in text for word in _SUBJECT_WORDS)


def blocked_by_working_sales(
    instrument: InstrumentId | object,
    symbol: str,
    exchange: str,
    orders: Iterable[Order],
    holdings: Iterable[Holding],
    *,
    ignore_tags: Iterable[str] = (),
) -> int:
    """Delivery shares of this stock that working SELL orders already hold (every listing).

    A working delivery sale blocks the shares it will deliver: the broker refuses to sell them again
    (Upstox documents it: ``cnc_used_quantity`` is "Quantity either blocked towards open or completed
    order"; Kite rejects the second sale with an insufficient-holdings RMS message). Neither positions nor
    Kite's holdings show such an order until it fills, so only the order book tells. Orders whose tag is in
    ``ignore_tags`` (TrailStop's own exits, counted as exits in flight elsewhere) are left out.
    """
    rows = list(holdings)
    isin = isin_of(instrument, symbol, exchange, rows)
    ignored = set(ignore_tags)
    blocked = 0
    for order in orders:
        if order.is_final or order.side is not Side.SELL or order.product is not Product.CNC:
            continue
        if order.tag and order.tag in ignored:
            continue
        if _same_stock(isin, instrument, symbol, exchange, order, rows):
            blocked += max(order.quantity - order.filled_quantity, 0)
    return blocked
