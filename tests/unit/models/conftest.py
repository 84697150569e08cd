"""What the store tests of models/ share: a fresh store, and an OPEN protection to hang things on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "t.db")
    yield s
    s.close()


def _open_protection(store: ProtectionStore) -> int:
    account = store.add_account("kite", "k")
    p = store.create_protection(
        account_id=account.id,
        broker="kite",
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=1,
        filled_quantity=1,
        entry_price=100.0,
        tick_size=0.05,
        rule=TrailRule.percent(2),
        status=Status.OPEN,
    )
    return p.id


@pytest.fixture
def open_protection() -> Callable[[ProtectionStore], int]:
    """Makes an OPEN protection (a new kite account, 1 INFY MIS) in the given store; returns its id."""
    return _open_protection
