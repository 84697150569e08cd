"""Matching a protection to the broker's live position: how much of it is really still open."""

from __future__ import annotations

from collections.abc import Iterable

from trailstop_gui.models.domain import Product, Protection, Side
from trailstop_gui.services.brokers.base import Capabilities, Holding, Position


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
    """The quantity an exit may close without flipping the position (0 when flat or reversed)."""
    position = matching_position(p, positions, caps)
    net = position.quantity if position is not None else 0
    if p.side is Side.BUY:
        live = max(net, 0)
        if p.product is Product.CNC:
            # Delivery longs bought on earlier days sit in holdings, not in today's net positions.
            live += sum(
                h.quantity + h.t1_quantity
                for h in holdings
                if same_instrument(p, h.instrument, h.symbol, h.exchange)
            )
        return live
    return max(-net, 0)
