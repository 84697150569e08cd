"""What the store tests of models/ share: a fresh store, and an OPEN protection to hang things on."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.factories import account_id, protection
from trailstop_gui.models.store import ProtectionStore


def _open_protection(store: ProtectionStore) -> int:
    return protection(store, account_id(store, "kite", "k"), quantity=1, entry_price=100.0).id


@pytest.fixture
def open_protection() -> Callable[[ProtectionStore], int]:
    """Makes an OPEN protection (a new kite account, 1 INFY MIS) in the given store; returns its id."""
    return _open_protection
