"""--demo across starts: the demo account is reused (pointed at the new simulator), never duplicated."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import protection
from trailstop_gui.models.domain import Product
from trailstop_gui.runtime import build_runtime


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """build_runtime configures logging for the app; give the test runner its handlers back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_each_demo_start_reuses_the_demo_account(tmp_path: Path, root_handlers: None) -> None:
    first = build_runtime(data_directory=str(tmp_path), demo=True)
    try:
        [account] = first.store.accounts()
        p = protection(first.store, account.id, quantity=1, product=Product.CNC)
        first_url = first.simulator.url
    finally:
        first.close()
    second = build_runtime(data_directory=str(tmp_path), demo=True)
    try:
        accounts = second.store.accounts()
        assert [a.id for a in accounts] == [account.id]  # no second, offline "Zerodha simulator"
        assert accounts[0].api_root == second.simulator.info["http"] != first_url
        assert accounts[0].api_key == second.simulator.info["kite"]["api_key"]
        # The earlier demo protection belongs to an account this run connects: it is watched, not stranded.
        assert account.id in second.service.sessions
        assert second.store.get(p.id).account_id in second.service.sessions
    finally:
        second.close()
