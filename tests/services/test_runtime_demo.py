"""--demo across starts: the demo account is reused (pointed at the new simulator), never duplicated."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
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
        p = first.store.create_protection(
            account_id=account.id,
            broker="kite",
            instrument=408065,
            symbol="INFY",
            exchange="NSE",
            side=Side.BUY,
            product=Product.CNC,
            quantity=1,
            filled_quantity=1,
            tick_size=0.05,
            rule=TrailRule.percent(2.0),
            entry_price=1500.0,
            status=Status.OPEN,
        )
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
