"""The ``update_disorder`` fault: order updates on the streams repeated and out of order.

An order sends one update per change (placed, open, each partial fill, complete; Kite docs, Postbacks: "An
UPDATE postback is triggered when an open order is modified or when there's a partial fill"), each with
the cumulative ``filled_quantity``. Nothing in either broker's documentation promises that they arrive once
or in order, and a client that reconnects or a broker that retries may deliver one twice. With the fault on,
an order's interim updates are held back; when it ends, the streams get its final update first, then the
held ones (older states: OPEN after COMPLETE), then the final one again. Updates held when the fault is
cleared go out, in the same disorder, with the order's next update.
"""

from __future__ import annotations

from dataclasses import replace

from trailstop_gui.simulator.exchange import Order


def _snapshot(order: Order) -> Order:
    """The order as it is now (the exchange keeps changing the live object)."""
    return replace(order, state=replace(order.state), history=list(order.history))


class UpdateDisorder:
    """What the streams get of each order update. Used on the simulator's loop thread only."""

    def __init__(self) -> None:
        self._held: dict[str, list[Order]] = {}

    def pass_on(self, order: Order, disorder: bool) -> list[Order]:
        held = self._held.get(order.order_id)
        if not disorder and held is None:
            return [order]
        now = _snapshot(order)
        if disorder and not order.status.is_final:
            self._held.setdefault(order.order_id, []).append(now)
            return []
        older = self._held.pop(order.order_id, [])
        return [now, *older, now]
