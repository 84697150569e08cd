"""Matching a protection to the broker's live position: how much of it is really still open."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from trailstop_gui.models.domain import Product, Protection, Side, Status
from trailstop_gui.services.brokers.base import Capabilities, Holding, Position
from trailstop_gui.services.holdings import delivery_shares


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
        _segment, bar, isin = p.instrument.partition("|")
        return (p.account_id, f"EQ:{isin if bar else p.symbol}", p.product, p.side)
    return (p.account_id, p.instrument, p.product, p.side)


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


def exit_share(p: Protection, others: Iterable[Protection], live: int) -> int | None:
    """How much the exit of ``p`` may sell of its position's ``live`` quantity; None: wait.

    Its share after the exit orders already at the broker (``others`` EXITING) and the older protections
    on the same position that are still OPEN or TRIGGERED (not sent yet). None when the exit orders at the
    broker take all that is left: whether ``live`` already shows their fills cannot be told, so this exit
    waits for them to settle.
    """
    key = position_key(p)
    same = [o for o in others if o.id != p.id and position_key(o) == key]
    in_flight = exits_in_flight(same)
    group = [p, *(o for o in same if o.status in (Status.OPEN, Status.TRIGGERED))]
    share = allocate(group, {key: live}, in_flight)[p.id]
    if share <= 0 < live and in_flight.get(key, 0) > 0:
        return None
    return share
