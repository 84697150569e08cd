"""The paper broker's orders and fills (tables in ``paper_db.py``): every query it makes, by name.

Rows are handed out as they are stored; the paper broker (``services/brokers/paper.py``) changes their
fields and hands them back to :meth:`PaperStore.save`, which appends the new state to the order's history.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from trailstop_gui.models.db_base import database
from trailstop_gui.models.paper_db import PaperOrder, PaperTrade

__all__ = ["PaperStore"]


class PaperStore:
    """One paper account's orders and fills; ``account`` keeps several apart in one database."""

    def __init__(self, account: str) -> None:
        self.account = account

    def waiting(self, statuses: Iterable[str]) -> list[tuple[str, str]]:
        """(instrument, order id) of this account's orders in one of ``statuses``."""
        rows = PaperOrder.select(PaperOrder.order_id, PaperOrder.instrument).where(
            (PaperOrder.account == self.account) & PaperOrder.status.in_(list(statuses))
        )
        return [(str(row.instrument), str(row.order_id)) for row in rows]

    def quote_keys(self, order_ids: Iterable[str]) -> dict[str, str]:
        """instrument -> quote key of the given orders."""
        rows = PaperOrder.select(PaperOrder.instrument, PaperOrder.quote_key).where(
            PaperOrder.order_id.in_(list(order_ids))
        )
        return {str(row.instrument): str(row.quote_key) for row in rows}

    def add_order(self, now: float, **fields: Any) -> Any:
        """Store a new order of this account with its first state; its id derives from the row id."""
        with database.atomic():
            placeholder = f"new-{uuid.uuid4().hex}"  # unique until the row id is known
            row = PaperOrder.create(account=self.account, order_id=placeholder, history="[]", **fields)
            row.order_id = f"P{row.id:010d}"
            self.save(row, now)
        return row

    def save(self, row: Any, now: float) -> None:
        """Write the order's changed fields and append its current state to its history."""
        history = json.loads(str(row.history) or "[]")
        history.append(
            {
                "status": str(row.status),
                "ts": now,
                "order_type": str(row.order_type),
                "quantity": int(row.quantity),
                "filled_quantity": int(row.filled_quantity),
                "average_price": float(row.average_price),
                "price": float(row.price),
                "trigger_price": float(row.trigger_price),
            }
        )
        row.history = json.dumps(history)
        row.save()

    @staticmethod
    def states(row: Any) -> list[dict[str, Any]]:
        """Every state the order went through, oldest first, as :meth:`save` recorded them."""
        states: list[dict[str, Any]] = json.loads(str(row.history) or "[]")
        return states

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction: a fill and the order it completes commit together, or neither does."""
        with database.atomic():
            yield

    def add_trade(self, row: Any, quantity: int, price: float, now: float) -> None:
        """Store a fill of ``quantity`` of the order ``row`` at ``price``."""
        PaperTrade.create(
            account=self.account,
            order=row,
            instrument=row.instrument,
            quote_key=row.quote_key,
            symbol=row.symbol,
            exchange=row.exchange,
            side=row.side,
            product=row.product,
            quantity=quantity,
            price=price,
            ts=now,
        )

    def order(self, order_id: str) -> Any | None:
        """This account's order ``order_id``, or None."""
        return PaperOrder.get_or_none(
            (PaperOrder.order_id == str(order_id)) & (PaperOrder.account == self.account)
        )

    def orders(self) -> list[Any]:
        """Every order of this account, oldest first."""
        return list(PaperOrder.select().where(PaperOrder.account == self.account).order_by(PaperOrder.id))

    def orders_by_id(self, order_ids: Iterable[str]) -> list[Any]:
        """The given orders, oldest first."""
        return list(
            PaperOrder.select().where(PaperOrder.order_id.in_(list(order_ids))).order_by(PaperOrder.id)
        )

    def latest_by_tag(self, tag: str) -> Any | None:
        """This account's newest order tagged ``tag``, or None."""
        return (
            PaperOrder.select()
            .where((PaperOrder.account == self.account) & (PaperOrder.tag == tag))
            .order_by(PaperOrder.id.desc())
            .first()
        )

    def instrument_for_quote_key(self, quote_key: str) -> str | None:
        """The instrument of an order of this account placed by ``quote_key``, or None."""
        row = (
            PaperOrder.select(PaperOrder.instrument)
            .where((PaperOrder.account == self.account) & (PaperOrder.quote_key == quote_key))
            .first()
        )
        return None if row is None else str(row.instrument)

    def trades(self) -> list[Any]:
        """Every fill of this account, oldest first."""
        return list(PaperTrade.select().where(PaperTrade.account == self.account).order_by(PaperTrade.id))
