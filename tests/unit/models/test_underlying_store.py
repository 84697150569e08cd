"""Underlying rules are stored, replaced and read back whole; a rule commits with the stop it moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.models.underlying import UnderlyingRule
from trailstop_gui.models.underlying_store import UnderlyingStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "u.db")
    yield s
    s.close()


def protection(store: ProtectionStore) -> int:
    account = store.add_account("kite", "k")
    p = store.create_protection(
        account_id=account.id,
        broker="kite",
        instrument=12345,
        symbol="NIFTY26DEC24000CE",
        exchange="NFO",
        side=Side.BUY,
        product=Product.NRML,
        quantity=75,
        filled_quantity=75,
        entry_price=100.0,
        tick_size=0.05,
        rule=TrailRule.percent(2),
        status=Status.OPEN,
    )
    return p.id


NIFTY = UnderlyingRule("256265", "NIFTY 50", "NSE", Side.BUY, 0.05, 24000.0)


def test_put_replaces_and_all_reads_back_every_field(store: ProtectionStore) -> None:
    rules = UnderlyingStore()
    pid = protection(store)
    assert rules.all() == {}
    rules.put(pid, NIFTY)
    assert rules.all() == {pid: NIFTY}
    bank = UnderlyingRule("260105", "NIFTY BANK", "NSE", Side.SELL, 0.05, 51000.5)
    rules.put(pid, bank)  # one rule per protection: the newer replaces it
    assert rules.all() == {pid: bank}
    assert UnderlyingStore().all() == {pid: bank}  # durable, not a cache of this instance


def test_a_failed_transaction_keeps_neither_the_rule_nor_the_stop(store: ProtectionStore) -> None:
    rules = UnderlyingStore()
    pid = protection(store)
    before = store.get(pid).stop
    with pytest.raises(RuntimeError, match="after both writes"), rules.transaction():
        rules.put(pid, NIFTY)
        store.update(pid, kind="underlying_set", message="trails on NSE:NIFTY 50", stop=23500.0)
        raise RuntimeError("after both writes")
    assert rules.all() == {}
    assert store.get(pid).stop == before
