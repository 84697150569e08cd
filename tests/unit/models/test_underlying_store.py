"""Underlying rules are stored, replaced and read back whole; a rule commits with the stop it moves."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trailstop_gui.models.domain import Side
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.models.underlying import UnderlyingRule
from trailstop_gui.models.underlying_store import UnderlyingStore

OpenProtection = Callable[[ProtectionStore], int]
NIFTY = UnderlyingRule("256265", "NIFTY 50", "NSE", Side.BUY, 0.05, 24000.0)


def test_put_replaces_and_all_reads_back_every_field(
    store: ProtectionStore, open_protection: OpenProtection
) -> None:
    rules = UnderlyingStore()
    pid = open_protection(store)
    assert rules.all() == {}
    rules.put(pid, NIFTY)
    assert rules.all() == {pid: NIFTY}
    bank = UnderlyingRule("260105", "NIFTY BANK", "NSE", Side.SELL, 0.05, 51000.5)
    rules.put(pid, bank)  # one rule per protection: the newer replaces it
    assert rules.all() == {pid: bank}
    assert UnderlyingStore().all() == {pid: bank}  # durable, not a cache of this instance


def test_a_failed_transaction_keeps_neither_the_rule_nor_the_stop(
    store: ProtectionStore, open_protection: OpenProtection
) -> None:
    rules = UnderlyingStore()
    pid = open_protection(store)
    before = store.get(pid).stop
    with pytest.raises(RuntimeError, match="after both writes"), rules.transaction():
        rules.put(pid, NIFTY)
        store.update(pid, kind="underlying_set", message="trails on NSE:NIFTY 50", stop=23500.0)
        raise RuntimeError("after both writes")
    assert rules.all() == {}
    assert store.get(pid).stop == before
