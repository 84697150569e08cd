"""Fuzzing the order form's validation: whatever is typed, it names the problems or gives a sound order.

Random instruments (equity, future, currency future with a fine tick, an index), sides, quantities,
products, order types, prices on and off the tick grid, rules of both kinds with the optional features on
or off, with and without a last price. ``validation_errors()`` never raises; ``entry_request()`` raises
exactly when there are errors, naming the first; and an order that passes is one the store accepts, with
a whole number of lots, a product that fits the instrument, a price on the grid and a positive stop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pytestqt.qtbot import QtBot

from tests.views.test_order_entry import FakeService
from trailstop_gui.models.domain import Product, RuleKind
from trailstop_gui.models.engine import initial_stop
from trailstop_gui.models.store import AccountRecord, InstrumentRecord, ProtectionStore
from trailstop_gui.services.brokers.base import OrderType
from trailstop_gui.services.feed_worker import Quote
from trailstop_gui.services.instruments import SETTING_PREFIX, InstrumentService
from trailstop_gui.settings import Settings
from trailstop_gui.views.order_entry import OrderEntryPanel

# Thousands of generated cases: make test runs them, make unit's quick loop leaves them out.
pytestmark = pytest.mark.fuzz

TODAY = date(2025, 7, 1)
RECORDS = [
    InstrumentRecord("kite", "408065", "INFY", "NSE", "INFOSYS", 0.05, 1, "NSE", "EQ"),
    InstrumentRecord(
        "kite", "13570306", "NIFTY25JULFUT", "NFO", "NIFTY", 0.05, 75, "NFO-FUT", "FUT", "2025-07-31"
    ),
    InstrumentRecord(
        "kite", "412675", "USDINR25JULFUT", "CDS", "USDINR", 0.0025, 1, "CDS-FUT", "FUT", "2025-07-29"
    ),
    InstrumentRecord("kite", "738561", "RELIANCE", "NSE", "RELIANCE", 0.10, 1, "NSE", "EQ"),
    InstrumentRecord("kite", "256265", "NIFTY 50", "NSE", "NIFTY 50", 0.0, 0, "INDICES", "EQ"),
]


class FakeSession:
    def __init__(self, account: AccountRecord) -> None:
        self.account = account

    @property
    def account_id(self) -> int:
        return self.account.id

    @property
    def label(self) -> str:
        return "Zerodha (AB1234)"

    def broker_if_ready(self) -> Any:
        return self

    def ltp(self, keys: list[str]) -> dict[str, float]:
        return {}  # no polled prices: the test gives them through snapshots

    def instruments(self) -> list[Any]:
        return []


class Rig:
    def __init__(self, qtbot: QtBot, store: ProtectionStore) -> None:
        store.upsert_instruments("kite", RECORDS)
        store.set_setting(SETTING_PREFIX + "kite", {"date": TODAY.isoformat(), "count": len(RECORDS)})
        account = store.add_account("kite", "Zerodha", user_id="AB1234", api_key="k")
        self.service = FakeService(store)
        self.service.sessions[account.id] = FakeSession(account)
        self.account_id = account.id
        instruments = InstrumentService(store, today=lambda: TODAY)
        settings_ = Settings(confirm_orders=False)
        self.panel = OrderEntryPanel(self.service, store, settings_, instruments)  # type: ignore[arg-type]
        qtbot.addWidget(self.panel)
        self.panel.show()

    def price_tick(self, record: InstrumentRecord, ltp: float) -> None:
        token = int(record.token)
        self.service.snapshot_ready.emit(
            {
                "account_id": self.account_id,
                "quotes": {token: Quote(token, ltp, None, None, 0.0)},
                "stops": {},
            }
        )


@pytest.fixture
def rig(qtbot: QtBot, tmp_path: Path) -> Iterator[Rig]:
    with ProtectionStore(tmp_path / "form.db") as store:
        yield Rig(qtbot, store)


spin_values = st.one_of(
    st.floats(0, 1_000_000, allow_nan=False),
    st.sampled_from([0.0, 0.01, 0.05, 0.25, 1.0, 2.0, 5.0, 99.99, 100.0, 150.0]),
)
# Raw values, or (often) a whole number of lots or ticks and a sensible rule: the valid side gets its share.
form = st.fixed_dictionaries(
    {
        "record": st.sampled_from([*RECORDS, None]),
        "typed": st.sampled_from(["", "INF", "zzz", "NIFTY"]),
        "sell": st.booleans(),
        "quantity": st.one_of(
            st.integers(0, 2000),
            st.sampled_from([0, 1, 74, 75, 150, 151]),
            st.tuples(st.just("lots"), st.integers(1, 20)),
        ),
        "product": st.sampled_from(list(Product)),
        "limit": st.booleans(),
        "price": st.one_of(
            st.floats(0, 100_000, allow_nan=False),
            st.sampled_from([0.0, 0.01, 0.03, 1500.05]),
            st.tuples(st.just("ticks"), st.integers(1, 2_000_000)),
        ),
        "ltp": st.one_of(st.none(), st.floats(0.01, 100_000, allow_nan=False)),
        "kind": st.sampled_from(list(RuleKind)),
        "value": st.one_of(spin_values, st.floats(0.5, 10, allow_nan=False)),
        "options": st.lists(
            st.tuples(st.sampled_from([False, False, False, True]), spin_values, spin_values),
            min_size=4,
            max_size=4,
        ),
    }
)


def fill(rig: Rig, f: dict[str, Any]) -> None:
    panel = rig.panel
    panel.clear()
    record: InstrumentRecord | None = f["record"]
    if record is not None:
        panel.select_instrument(record)
        if f["ltp"] is not None and record.tradable:
            rig.price_tick(record, f["ltp"])
    else:
        panel.instrument.setText(f["typed"])
    (panel.sell if f["sell"] else panel.buy).setChecked(True)
    quantity = f["quantity"]
    if isinstance(quantity, tuple):
        quantity = quantity[1] * max(record.lot_size if record else 1, 1)
    panel.quantity.setValue(quantity)
    panel.product.setCurrentIndex(panel.product.findData(f["product"].value))
    order_type = OrderType.LIMIT if f["limit"] else OrderType.MARKET
    panel.order_type.setCurrentIndex(panel.order_type.findData(order_type.value))
    price = f["price"]
    if isinstance(price, tuple):
        price = round(price[1] * (record.tick_size if record and record.tradable else 0.05), 4)
    panel.price.setValue(price)
    editor = panel.rule_editor
    editor.kind.setCurrentIndex(editor.kind.findData(f["kind"].value))
    editor.value.setValue(f["value"])
    boxes = (
        (editor.activation_on, (editor.activation,)),
        (editor.ladder_on, (editor.ladder_step, editor.ladder_raise)),
        (editor.breakeven_on, (editor.breakeven,)),
        (editor.target_on, (editor.target,)),
    )
    for (on, first, second), (box, spins) in zip(f["options"], boxes, strict=True):
        box.setChecked(on)
        for spin, value in zip(spins, (first, second), strict=False):
            spin.setValue(value)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(form)
def test_the_form_names_every_problem_or_gives_a_sound_order(rig: Rig, f: dict[str, Any]) -> None:
    fill(rig, f)
    panel = rig.panel
    problems = panel.validation_errors()
    event("refused" if problems else "accepted")
    assert all(
        isinstance(field, str) and field and isinstance(text, str) and text for field, text in problems
    )
    if problems:
        field, message = problems[0]
        with pytest.raises(ValueError) as refused:
            panel.entry_request()
        assert str(refused.value) == f"{field}: {message}"
        return
    request = panel.entry_request()
    record = panel.selected_instrument()
    assert record is not None and record.tradable
    lot = max(record.lot_size, 1)
    assert request.quantity > 0 and request.quantity % lot == 0
    derivative = bool(record.expiry) or record.instrument_type in ("FUT", "CE", "PE")
    assert request.product is not (Product.CNC if derivative else Product.NRML)
    if request.order_type is OrderType.LIMIT:
        assert request.price is not None and request.price > 0
        steps = request.price / record.tick_size
        assert abs(steps - round(steps)) < 1e-6, (request.price, record.tick_size)
        entry = request.price
    else:
        known = panel.last_price()  # this example's tick, or one an earlier example left for the instrument
        assert request.price is None and known is not None
        entry = known[0]
    stop = initial_stop(request.side, entry, record.tick_size, request.rule)
    assert math.isfinite(stop) and stop > 0
    # The service (through the real store's checks) takes what the form lets through.
    protection = rig.service.place_entry(request)
    assert protection.quantity == request.quantity
