"""store.live_like: the live protections that may share one position, read without the account's others
(the exit job reads them while the feed thread commits TRIGGERED)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.models.test_store import new_protection
from trailstop_gui.models.domain import Product, Side, Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.positions import position_key, position_name


def test_every_protection_of_the_position_and_none_of_another(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "like.db") as store:
        account = store.add_account("kite", "Zerodha", user_id="AB1234").id
        mine = new_protection(store, account)
        same = new_protection(store, account, quantity=4, filled_quantity=4)
        sent = new_protection(store, account)
        store.transition(sent.id, Status.TRIGGERED)
        store.transition(sent.id, Status.EXITING, exit_order_id="1", exit_quantity=10)
        ended = new_protection(store, account)
        store.transition(ended.id, Status.REMOVED)
        other_product = new_protection(store, account, product=Product.NRML)
        other_side = new_protection(store, account, side=Side.SELL)
        other_stock = new_protection(store, account, instrument=2953217, symbol="TCS")
        elsewhere = new_protection(store, store.add_account("kite", "Other", user_id="ZZ9999").id)
        found = store.live_like(account, "MIS", "BUY", instrument=mine.instrument, name=position_name(mine))
        assert [p.id for p in found] == [mine.id, same.id, sent.id]
        left_out = {ended.id, other_product.id, other_side.id, other_stock.id, elsewhere.id}
        assert not left_out & {p.id for p in found}


def test_delivery_shares_of_every_listing_are_one_position(tmp_path: Path) -> None:
    # A CNC stock is one position on NSE and BSE (position_key): by symbol on Kite, by ISIN on Upstox.
    with ProtectionStore(tmp_path / "like.db") as store:
        account = store.add_account("upstox", "Upstox", user_id="AB1234").id

        def cnc(exchange: str, instrument: str, symbol: str = "SBIN"):  # type: ignore[no-untyped-def]
            return new_protection(
                store, account, product=Product.CNC, exchange=exchange, instrument=instrument, symbol=symbol
            )

        nse = cnc("NSE", "NSE_EQ|INE062A01020")
        bse = cnc("BSE", "BSE_EQ|INE062A01020", symbol="SBIN-BSE")
        kite_style = cnc("BSE", "779521", symbol="INE062A01020")
        other = cnc("NSE", "NSE_EQ|INE002A01018", symbol="RELIANCE")
        found = store.live_like(account, "CNC", "BUY", instrument=nse.instrument, name=position_name(nse))
        assert {p.id for p in found} >= {nse.id, bse.id, kite_style.id}
        assert other.id not in {p.id for p in found}
        # A superset: what is returned and has the position's key is exactly what live() would give.
        everyone = [p for p in store.live(account) if position_key(p) == position_key(nse)]
        assert [p.id for p in found if position_key(p) == position_key(nse)] == [p.id for p in everyone]
