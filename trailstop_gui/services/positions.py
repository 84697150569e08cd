"""Matching a protection to the broker's live position: how much of it is really still open."""

from __future__ import annotations

from collections.abc import Iterable

from trailstop_gui.models.domain import Product, Protection, Side
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
