"""The rows both brokers send (order book and history, net positions, holdings) read into the app's
types; each adapter reads first what it spells apart (symbol, instrument, product, tag).

A missing status or quantity is a ValueError, which ``convert_all`` turns into an unreadable reply: read
as nothing, an exit order would look "not placed" and a position "flat".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from trailstop_gui.models.domain import InstrumentId, Position, Product, Side
from trailstop_gui.services.brokers.base import (
    Holding,
    Order,
    as_float,
    as_int,
    normalize_order_status,
    opt_float,
    opt_str,
    order_type_or_none,
    parse_ist,
    required_int,
    required_text,
)

__all__ = ["Listing", "holding_from_row", "order_from_row", "position_from_row"]


def order_from_row(
    row: Mapping[str, Any],
    *,
    product: Product | None,
    symbol: str,
    instrument: InstrumentId | None,
    tag: str | None,
    updated_at: datetime | None,
) -> Order:
    """An order-book or order-history row as an ``Order``; the caller reads what the brokers spell apart.

    A missing status or quantity is a ValueError (``convert_all`` makes the whole reply unreadable):
    read as nothing, an exit order would look "not placed".
    """
    raw_status = required_text(row, "status")
    return Order(
        order_id=str(row.get("order_id") or ""),
        status=normalize_order_status(raw_status),
        raw_status=raw_status,
        side=Side.parse(row.get("transaction_type")),
        order_type=order_type_or_none(row.get("order_type")),
        product=product,
        raw_product=str(row.get("product") or ""),
        symbol=symbol,
        exchange=str(row.get("exchange") or ""),
        instrument=instrument,
        quantity=required_int(row, "quantity"),
        filled_quantity=required_int(row, "filled_quantity"),
        pending_quantity=as_int(row.get("pending_quantity")),
        average_price=as_float(row.get("average_price")),
        price=as_float(row.get("price")),
        trigger_price=as_float(row.get("trigger_price")),
        tag=tag,
        status_message=opt_str(row.get("status_message")),
        placed_at=parse_ist(row.get("order_timestamp")),
        updated_at=updated_at,
        exchange_order_id=opt_str(row.get("exchange_order_id")),
    )


class Listing(NamedTuple):
    """What a position or holding row names its instrument by, as each broker spells it."""

    symbol: str
    instrument: InstrumentId
    quote_key: str


def position_from_row(row: Mapping[str, Any], listing: Listing, product: Product | None) -> Position:
    """A net-position row as a ``Position`` (a missing quantity is a ValueError, never "flat")."""
    return Position(
        symbol=listing.symbol,
        exchange=str(row.get("exchange") or ""),
        instrument=listing.instrument,
        quote_key=listing.quote_key,
        quantity=required_int(row, "quantity"),
        average_price=as_float(row.get("average_price")),
        product=product,
        raw_product=str(row.get("product") or ""),
        last_price=opt_float(row.get("last_price")),
        pnl=opt_float(row.get("pnl")),
    )


def holding_from_row(
    row: Mapping[str, Any], listing: Listing, *, used_quantity: int, authorised_quantity: int = 0
) -> Holding:
    """A holdings row as a ``Holding`` (a missing quantity is a ValueError, never "none held")."""
    return Holding(
        symbol=listing.symbol,
        exchange=str(row.get("exchange") or ""),
        instrument=listing.instrument,
        quote_key=listing.quote_key,
        isin=opt_str(row.get("isin")),
        quantity=required_int(row, "quantity"),
        t1_quantity=as_int(row.get("t1_quantity")),
        average_price=as_float(row.get("average_price")),
        last_price=opt_float(row.get("last_price")),
        used_quantity=used_quantity,
        authorised_quantity=authorised_quantity,
    )
