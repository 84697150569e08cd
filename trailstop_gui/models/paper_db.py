"""Tables of the paper broker: its orders and its fills, in the app's database.

Bound to :data:`trailstop_gui.models.db_base.database`, like every other table (``db.py`` lists them all).
The paper broker (``services/brokers/paper.py``) owns the logic and ``paper_store.py`` the queries; this
module only describes what is stored. Positions are
not stored: they are the sum of the trades, so they can never disagree with them.
"""

from __future__ import annotations

import peewee as pw

from trailstop_gui.models.db_base import BaseModel, database

__all__ = ["PAPER_MODELS", "PaperOrder", "PaperTrade", "create_paper_tables"]


class PaperOrder(BaseModel):
    """One paper order in its latest state; ``history`` holds every state it went through, as JSON."""

    id = pw.AutoField()
    account = pw.CharField(index=True)
    order_id = pw.CharField(unique=True)
    tag = pw.CharField(null=True, index=True)
    instrument = pw.CharField()  # what ticks carry: a Kite token as digits, or an Upstox instrument key
    quote_key = pw.CharField()  # what ltp() takes: "NSE:INFY" or the instrument key
    symbol = pw.CharField()
    exchange = pw.CharField()
    side = pw.CharField()
    product = pw.CharField()
    order_type = pw.CharField()
    validity = pw.CharField(default="DAY")
    quantity = pw.IntegerField()
    filled_quantity = pw.IntegerField(default=0)
    price = pw.FloatField(default=0.0)
    trigger_price = pw.FloatField(default=0.0)
    average_price = pw.FloatField(default=0.0)
    status = pw.CharField(index=True)
    status_message = pw.TextField(null=True)
    history = pw.TextField(default="[]")
    # Epoch seconds: peewee does not read back time zones, and broker times are in IST anyway.
    placed_at = pw.FloatField()
    updated_at = pw.FloatField()

    class Meta:
        table_name = "paper_order"


class PaperTrade(BaseModel):
    """One fill of a paper order."""

    id = pw.AutoField()
    account = pw.CharField(index=True)
    order = pw.ForeignKeyField(PaperOrder, backref="trades", on_delete="CASCADE")
    instrument = pw.CharField()
    quote_key = pw.CharField()
    symbol = pw.CharField()
    exchange = pw.CharField()
    side = pw.CharField()
    product = pw.CharField()
    quantity = pw.IntegerField()
    price = pw.FloatField()
    ts = pw.FloatField()

    class Meta:
        table_name = "paper_trade"


PAPER_MODELS: list[type[BaseModel]] = [PaperOrder, PaperTrade]


def create_paper_tables() -> None:
    """Create the paper tables in the open database if they are missing (call after ``db.init_db``)."""
    database.create_tables(PAPER_MODELS, safe=True)
