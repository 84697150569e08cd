"""Stops on the underlying, durable beside the protections (table ``underlying_rule``, schema 4)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from trailstop_gui.models import db
from trailstop_gui.models.domain import Side
from trailstop_gui.models.underlying import UnderlyingRule


class UnderlyingStore:
    """Read and write protections' underlying rules (services/underlying.py decides when)."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction over the rules and the protections (the same database): a rule and the stop
        it moves commit together, or neither does."""
        with db.database.atomic():
            yield

    def put(self, protection_id: int, rule: UnderlyingRule) -> None:
        """Give ``protection_id`` the rule, replacing any it had."""
        db.UnderlyingRow.insert(
            protection=protection_id,
            instrument=str(rule.instrument),
            symbol=rule.symbol,
            exchange=rule.exchange,
            view=rule.view.value,
            tick_size=rule.tick_size,
            reference=rule.reference,
        ).on_conflict_replace().execute()

    def all(self) -> dict[int, UnderlyingRule]:
        """Every protection's rule (ended protections included: callers filter by status)."""
        return {row.protection_id: _rule(row) for row in db.UnderlyingRow.select()}


def _rule(row: db.UnderlyingRow) -> UnderlyingRule:
    return UnderlyingRule(
        row.instrument, row.symbol, row.exchange, Side.parse(row.view), row.tick_size, row.reference
    )
