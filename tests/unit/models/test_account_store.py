"""Accounts as their own repository behind ProtectionStore; removing one is all or nothing."""

from __future__ import annotations

import pytest

from tests.factories import protection
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import AccountHasLiveProtections, ProtectionStore


def protect(store: ProtectionStore, account_id: int) -> int:
    return protection(store, account_id, quantity=1).id


def test_the_store_and_its_account_repository_see_the_same_rows(store: ProtectionStore) -> None:
    a = store.add_account("kite", " Zerodha ", user_id="AB1234")
    assert store.accounts_repo.get(a.id) == store.account(a.id) and a.label == "Zerodha"
    store.update_account(a.id, label="Main")
    assert [x.label for x in store.accounts_repo.all()] == ["Main"]
    with pytest.raises(ValueError, match="cannot change broker"):
        store.update_account(a.id, broker="upstox")


def test_an_account_with_a_live_protection_is_not_removed(store: ProtectionStore) -> None:
    a = store.add_account("kite", "Zerodha")
    pid = protect(store, a.id)
    with pytest.raises(AccountHasLiveProtections):
        store.remove_account(a.id)
    assert store.account(a.id) and store.get(pid).status is Status.OPEN
    assert store.events(protection_id=pid)  # its journal is kept too


def test_removing_an_account_takes_its_ended_protections_and_their_journal(store: ProtectionStore) -> None:
    a, b = store.add_account("kite", "Zerodha"), store.add_account("upstox", "Upstox")
    ended, other = protect(store, a.id), protect(store, b.id)
    store.transition(ended, Status.REMOVED, reason="user")
    assert store.protection_count(a.id) == 1
    store.remove_account(a.id)
    assert [x.id for x in store.accounts()] == [b.id] and store.protection_count(a.id) == 0
    assert store.events(protection_id=ended) == [] and store.events(protection_id=other)
    with pytest.raises(KeyError):
        store.account(a.id)
