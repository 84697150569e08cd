"""Matching a protection to the broker's live position: how much of it is really still open."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from trailstop_gui.models.domain import Product, Protection, Side, Status
from trailstop_gui.services.brokers.base import Capabilities, Holding, Position
from trailstop_gui.services.holdings import DeliveryStock, delivery_shares
from trailstop_gui.services.resize_confirmation import covered


def same_instrument(p: Protection, instrument: object, symbol: str, exchange: str) -> bool:
    if str(instrument) == p.instrument:
        return True
    return symbol == p.symbol and exchange == p.exchange


def matching_position(p: Protection, positions: Iterable[Position], caps: Capabilities) -> Position | None:
    """The broker's net position for the protection's instrument and product, if any."""
    wanted = caps.broker_product(p.product)
    for pos in positions:
        if not same_instrument(p, pos.instrument, pos.symbol, pos.exchange):
            continue
        if pos.product is p.product or pos.raw_product == wanted:
            return pos
    return None


def open_quantity(
    p: Protection, positions: Iterable[Position], holdings: Iterable[Holding], caps: Capabilities
) -> int:
    """The quantity an exit may close without flipping the position (0 when flat or reversed).

    Delivery (CNC) shares are sold by the broker's own rule over holdings and today's net (see
    ``services/holdings.py``). A delivery protection on the SELL side would exit with a BUY of
    delivery shares, buying back what the trader sold: it never has anything to close.
    """
    if p.product is Product.CNC:
        if p.side is not Side.BUY:
            return 0
        shares = delivery_shares(p.instrument, p.symbol, p.exchange, positions, holdings)
        return shares.sellable(caps.broker)
    position = matching_position(p, positions, caps)
    net = position.quantity if position is not None else 0
    return max(net, 0) if p.side is Side.BUY else max(-net, 0)


# ----------------------------------------------------------------------------- sharing one position

PositionKey = tuple[int, str, Product, Side]
"""One broker position as protections see it: account, instrument, product and side."""

# Protections whose exit is decided: TRIGGERED (not sent yet) or EXITING (an exit order at the broker).
EXITS_IN_FLIGHT = (Status.TRIGGERED, Status.EXITING)


EQUITY_EXCHANGES = ("NSE", "BSE")


def position_key(p: Protection) -> PositionKey:
    """Delivery shares are one stock whichever listing a protection names: a CNC protection on NSE:SBIN
    and one on BSE:SBIN sell from the same demat (services/holdings.py counts every listing of the ISIN),
    so they share one key, by ISIN where the instrument carries it (Upstox "NSE_EQ|INE..."), else by the
    trading symbol (Kite lists a stock under the same symbol on both exchanges; one that differs keeps a
    key of its own, as before). Without it each protection counted the whole demat as its own."""
    if p.product is Product.CNC and p.exchange in EQUITY_EXCHANGES:
        return (p.account_id, f"EQ:{position_name(p)}", p.product, p.side)
    return (p.account_id, p.instrument, p.product, p.side)


def covers_position(p: Protection, account_id: int, position: Position | DeliveryStock) -> bool:
    """Whether ``p`` protects shares of ``position`` (by :func:`position_key`'s rule): a broker position, or
    a stock's delivery shares in any listing."""
    if p.account_id != account_id or p.product is not position.product or p.side is not position.side:
        return False
    if p.product is Product.CNC and p.exchange in EQUITY_EXCHANGES:
        _segment, bar, isin = str(position.instrument).partition("|")
        return position_name(p) == (isin if bar else position.symbol)
    return same_instrument(p, position.instrument, position.symbol, position.exchange)


def covered_quantity(p: Protection) -> int:
    """How many shares of its position ``p`` protects now: what it holds once filled; a PENDING entry only
    what has filled of it (the rest is not in the position yet)."""
    return p.filled_quantity if p.status is Status.PENDING else covered(p)


def position_name(p: Protection) -> str:
    """The name a delivery position goes by in :func:`position_key` (the ISIN ending the instrument id,
    else the trading symbol): with the instrument, what ``ProtectionStore.live_like`` matches on."""
    _segment, bar, isin = p.instrument.partition("|")
    return isin if bar else p.symbol


def exit_claim(p: Protection) -> int:
    """What an exit order at the broker (EXITING) may still take from its position."""
    return p.exit_quantity or p.filled_quantity or p.quantity


def exits_in_flight(protections: Iterable[Protection]) -> dict[PositionKey, int]:
    """Per position, what its exit orders at the broker (EXITING) may still take."""
    claims: dict[PositionKey, int] = {}
    for p in protections:
        if p.status is Status.EXITING:
            key = position_key(p)
            claims[key] = claims.get(key, 0) + exit_claim(p)
    return claims


def allocate(
    protections: Iterable[Protection],
    live: Mapping[PositionKey, int],
    in_flight: Mapping[PositionKey, int] | None = None,
) -> dict[int, int]:
    """How much of its position each protection covers: {protection id: quantity}.

    Several protections on one position share its live quantity (``live``, per position), oldest first,
    less what exits already on their way will take (``in_flight``); each gets at most its own protected
    quantity. Without this, two protections on a 100-share long each believed they held 100, and their two
    exits sold 200: the long became a short.
    """
    in_flight = in_flight or {}
    left: dict[PositionKey, int] = {}
    shares: dict[int, int] = {}
    for p in sorted(protections, key=lambda p: p.id):  # ids grow in creation order: oldest first
        key = position_key(p)
        if key not in left:
            left[key] = max(live.get(key, 0) - in_flight.get(key, 0), 0)
        share = min(p.filled_quantity or p.quantity, left[key])
        left[key] -= share
        shares[p.id] = share
    return shares


@dataclass(frozen=True)
class LiveQuantity:
    """A live open quantity an exit is sized on, and which fills it is known to show.

    ``as_of``: every fill made a positions lag before it is in the figure (a REST read: when it was sent;
    the position book: when the read that last corrected it was sent). ``fills``: the fills the order
    stream had counted in it when it was taken (the position book), order id -> (tag, filled quantity).
    """

    quantity: int
    as_of: datetime
    fills: Mapping[str, tuple[str | None, int]] = field(default_factory=dict)

    def with_quantity(self, quantity: int) -> LiveQuantity:
        return LiveQuantity(quantity, self.as_of, self.fills)


def shows_exit(twin: Protection, live: LiveQuantity, lag: float) -> bool:
    """Whether ``live`` is known to show the fill of ``twin``'s exit (CLOSED at ``twin.closed_at``).

    The exit was reported filled before ``closed_at`` was written, so a read sent a positions lag after it
    shows it; so does a figure whose order stream counted that exit's orders (its tag, or the order it
    was recorded with, as a fired broker-held stop is) for the whole quantity.
    """
    if twin.closed_at is None or twin.closed_at + timedelta(seconds=lag) <= live.as_of:
        return True
    counted = sum(
        filled
        for order_id, (tag, filled) in live.fills.items()
        if order_id == twin.exit_order_id or (tag and tag == twin.exit_tag)
    )
    return counted >= exit_claim(twin)


def settling_exits(
    p: Protection, ended: Iterable[Protection], live: LiveQuantity, lag: float
) -> list[Protection]:
    """The twins of ``p`` (protections on its position) that an exit CLOSED a moment ago, whose fills
    ``live`` may not show yet: each still takes its exit quantity (``exit_share``'s ``settling``).

    Found by the chaos run: two protections on one 8-share Upstox short; the second exit waited while the
    first was in flight, then was sent a second after the first filled, sized on a positions read that did
    not show that fill yet, and bought 8 more: the short became a long (PROTOCOLS: positions can lag a
    fill). A protection that closed with no exit of its own (reason "external": its position was already
    flat) took nothing. Nor did one that closed before ``p`` was created when ``p`` has an entry order of
    its own: its shares were bought after that exit had filled, so a read either shows both or neither,
    and ``p`` never sells more than it bought (a trader stopped out, re-entering at once and stopped out
    again within the lag would otherwise wait for a read that shows the first exit; found by the
    tick-to-exit bench).
    """
    key = position_key(p)
    return [
        o
        for o in ended
        if o.id != p.id
        and o.status is Status.CLOSED
        and o.reason != "external"
        and position_key(o) == key
        and not _ended_before_entry(o, p)
        and not shows_exit(o, live, lag)
    ]


def _ended_before_entry(twin: Protection, p: Protection) -> bool:
    """``twin`` closed before ``p``, an entry of its own (not an adopted position), was created."""
    return p.entry_order_id is not None and twin.closed_at is not None and twin.closed_at <= p.created_at


def exit_share(p: Protection, others: Iterable[Protection], live: int, *, settling: int = 0) -> int | None:
    """How much the exit of ``p`` may sell of its position's ``live`` quantity; None: wait.

    Its share after the exit orders already at the broker (``others`` EXITING) and the older protections
    on the same position that are still OPEN or TRIGGERED (not sent yet). None when the exit orders at the
    broker take all that is left: whether ``live`` already shows their fills cannot be told, so this exit
    waits for them to settle.

    ``settling``: what exits that filled a moment ago took from the position, when ``live`` may not show
    it yet (``settling_exits``). The share must be the same whether ``live`` shows those fills or not;
    when it is not, None: the exit waits for a figure known to show them (never a flip on a lagging read).
    """
    key = position_key(p)
    same = [o for o in others if o.id != p.id and position_key(o) == key]
    in_flight = exits_in_flight(same)
    group = [p, *(o for o in same if o.status in (Status.OPEN, Status.TRIGGERED))]
    share = allocate(group, {key: live}, in_flight)[p.id]
    if settling > 0 and allocate(group, {key: live - settling}, in_flight)[p.id] != share:
        return None
    if share <= 0 < live and in_flight.get(key, 0) > 0:
        return None
    return share
