"""The paper broker's store: accounts kept apart, every state in the history, a fill all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trailstop_gui.models import db
from trailstop_gui.models.paper_store import PaperStore


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "paper.db"
    db.init_db(path)  # a new file gets the paper tables with every other table
    yield path
    db.database.close()


def add(store: PaperStore, *, tag: str | None = None, status: str = "OPEN", key: str = "NSE:INFY") -> Any:
    return store.add_order(
        10.0,
        tag=tag,
        instrument="408065" if key == "NSE:INFY" else key,
        quote_key=key,
        symbol="INFY",
        exchange="NSE",
        side="BUY",
        product="MIS",
        order_type="MARKET",
        quantity=5,
        status=status,
        placed_at=10.0,
        updated_at=10.0,
    )


def test_orders_get_ids_from_their_rows_and_accounts_stay_apart(database: Path) -> None:
    one, two = PaperStore("1"), PaperStore("2")
    first = add(one, tag="A1")
    second = add(one, tag="A1", status="TRIGGER PENDING")
    other = add(two, tag="A1")
    assert [str(first.order_id), str(second.order_id)] == ["P0000000001", "P0000000002"]
    assert [str(r.order_id) for r in one.orders()] == ["P0000000001", "P0000000002"]
    assert str(one.latest_by_tag("A1").order_id) == "P0000000002"
    assert str(two.latest_by_tag("A1").order_id) == str(other.order_id)
    assert one.latest_by_tag("B2") is None
    assert one.order(str(other.order_id)) is None  # another account's order is not this one's
    assert sorted(one.waiting(["TRIGGER PENDING"])) == [("408065", "P0000000002")]
    assert one.quote_keys(["P0000000001"]) == {"408065": "NSE:INFY"}
    assert one.instrument_for_quote_key("NSE:INFY") == "408065"
    assert one.instrument_for_quote_key("NSE:TCS") is None
    assert [str(r.order_id) for r in one.orders_by_id(["P0000000002", "P0000000001"])] == [
        "P0000000001",
        "P0000000002",
    ]


def test_save_appends_each_state_to_the_history(database: Path) -> None:
    store = PaperStore("1")
    row = add(store)
    row.status = "CANCELLED"
    row.updated_at = 11.0
    store.save(row, 11.0)
    stored = store.order(str(row.order_id))
    assert [(s["status"], s["ts"]) for s in store.states(stored)] == [("OPEN", 10.0), ("CANCELLED", 11.0)]
    assert str(stored.status) == "CANCELLED"


def test_a_fill_that_fails_leaves_no_trade(database: Path) -> None:
    store = PaperStore("1")
    row = add(store)
    with pytest.raises(RuntimeError, match="before the order"), store.transaction():
        store.add_trade(row, 5, 101.5, 12.0)
        raise RuntimeError("before the order is saved")
    assert store.trades() == []
    with store.transaction():
        store.add_trade(row, 5, 101.5, 12.0)
    assert [(int(t.quantity), float(t.price), str(t.account)) for t in store.trades()] == [(5, 101.5, "1")]
    assert PaperStore("2").trades() == []
