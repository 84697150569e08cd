"""Protecting a position the trader already holds: the one protection the Protect action (``ProtectionService.
adopt``) and auto-protect (the reconciler) both create."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trailstop_gui.models.domain import Position, Protection, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.holdings import DeliveryStock

if TYPE_CHECKING:
    from trailstop_gui.services.safety_stop import SafetyConfig


def adopt_position(
    store: ProtectionStore,
    *,
    account_id: int,
    broker: str,
    position: Position | DeliveryStock,
    rule: TrailRule,
    tick_size: float,
    safety: SafetyConfig,
    reason: str,
    quantity: int | None = None,
) -> Protection:
    """Store an OPEN protection of the position's whole open quantity (or ``quantity`` of it: the part no
    other protection covers), entered at its average price (a delivery stock's reference price). Arming it
    is the caller's next step: persist before you act.
    """
    if position.side is None or position.product is None:
        raise ValueError("position: flat, or of a product the app does not trade")
    if quantity is not None and not 0 < quantity <= abs(position.quantity):
        raise ValueError(f"quantity: {quantity} is not a part of the position's {abs(position.quantity)}")
    return store.create_protection(
        safety_enabled=safety.enabled,
        safety_buffer_percent=safety.buffer_percent,
        safety_buffer_ticks=safety.buffer_ticks,
        account_id=account_id,
        broker=broker,
        instrument=position.instrument,
        symbol=position.symbol,
        exchange=position.exchange,
        side=position.side,
        product=position.product,
        quantity=abs(position.quantity) if quantity is None else quantity,
        filled_quantity=abs(position.quantity) if quantity is None else quantity,
        tick_size=tick_size,
        rule=rule,
        entry_price=(
            position.reference_price if isinstance(position, DeliveryStock) else position.average_price
        ),
        status=Status.OPEN,
        reason=reason,
    )
