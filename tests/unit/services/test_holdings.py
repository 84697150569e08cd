"""Delivery arithmetic on the brokers' documented shapes: what may be sold, by ISIN, per broker."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from tests import factories
from tests.factories import unsaved_protection
from tests.kite_mocks import kite_mock_json
from trailstop_gui.models.domain import Product, Protection, Side
from trailstop_gui.services.brokers.base import (
    IST,
    KITE_CAPABILITIES,
    UPSTOX_CAPABILITIES,
    Holding,
    Order,
    OrderStatus,
    OrderType,
    Position,
    profile_from_reply,
)
from trailstop_gui.services.brokers.kite import holding_from_kite, position_from_kite
from trailstop_gui.services.brokers.upstox import holding_from_upstox, position_from_upstox
from trailstop_gui.services.holdings import (
    DeliveryStock,
    blocked_by_working_sales,
    covers_stock,
    delivery_shares,
    delivery_stocks,
    is_delivery_sale,
    is_demat_refusal,
    sells_need_authorisation,
)
from trailstop_gui.services.positions import open_quantity

# The kite-mocks holdings sample (zerodha/kiteconnect-mocks holdings.json): AARON on NSE and SBIN listed
# under BSE, although most trading in SBIN happens on NSE.
KITE_MOCK_HOLDINGS: list[dict[str, Any]] = kite_mock_json("holdings.json")["data"]
SBIN_NSE_TOKEN = 779521


def kite_position(
    symbol: str, quantity: int, *, product: str = "CNC", exchange: str = "NSE", token: int = 0
) -> Position:
    return position_from_kite(
        {
            "tradingsymbol": symbol,
            "exchange": exchange,
            "instrument_token": token or SBIN_NSE_TOKEN,
            "product": product,
            "quantity": quantity,
            "average_price": 800.0,
            "last_price": 790.0,
        }
    )


def kite_holding(
    quantity: int, *, t1: int = 0, used: int = 0, exchange: str = "NSE", token: int = 0
) -> Holding:
    return holding_from_kite(
        {
            "tradingsymbol": "SBIN",
            "exchange": exchange,
            "instrument_token": token or SBIN_NSE_TOKEN,
            "isin": "INE062A01020",
            "product": "CNC",
            "quantity": quantity,
            "t1_quantity": t1,
            "used_quantity": used,
            "realised_quantity": quantity - t1,
            "average_price": 700.0,
            "last_price": 790.0,
        }
    )


def protection(
    side: Side = Side.BUY, *, instrument: str = str(SBIN_NSE_TOKEN), symbol: str = "SBIN", quantity: int = 100
) -> Protection:
    return unsaved_protection(
        quantity,
        instrument=instrument,
        symbol=symbol,
        side=side,
        product=Product.CNC,
        entry_price=700.0,
        stop=686.0,
        peak=700.0,
        exit_tag="TSX1",
    )


# ----------------------------------------------------------------------------- Kite


def test_kite_parses_the_mock_holdings_with_isin_and_used_quantity() -> None:
    rows = [holding_from_kite(row) for row in KITE_MOCK_HOLDINGS]
    assert [(h.symbol, h.exchange, h.isin, h.quantity, h.used_quantity) for h in rows] == [
        ("AARON", "NSE", "INE721Z01010", 1, 0),
        ("SBIN", "BSE", "INE062A01020", 16, 0),
    ]


def test_kite_holding_listed_on_bse_counts_for_an_nse_protection() -> None:
    """The mock's SBIN holding is listed under BSE: an NSE protection may sell all 16 (matched by ISIN)."""
    holdings = [holding_from_kite(row) for row in KITE_MOCK_HOLDINGS]
    assert open_quantity(protection(), [], holdings, KITE_CAPABILITIES) == 16


def test_kite_t1_is_already_in_quantity() -> None:
    """Kite's quantity is "T+1 + realised": adding t1_quantity again would sell shares that are not there."""
    assert open_quantity(protection(), [], [kite_holding(10, t1=4)], KITE_CAPABILITIES) == 10


def test_kite_sale_from_holdings_shows_as_negative_cnc_and_is_not_counted_twice() -> None:
    """100 held, 40 sold today: the CNC row is -40 and used_quantity is 40; 60 remain (not 20, not 100)."""
    holdings = [kite_holding(100, used=40)]
    positions = [kite_position("SBIN", -40)]
    assert open_quantity(protection(), positions, holdings, KITE_CAPABILITIES) == 60


def test_kite_same_day_buy_back_restores_what_was_sold() -> None:
    """Sold 40 and bought 40 back: net 0, the holdings intact, all 100 may be sold (the chaos defect)."""
    positions = [kite_position("SBIN", 0)]
    assert open_quantity(protection(), positions, [kite_holding(100, used=40)], KITE_CAPABILITIES) == 100


def test_kite_sums_every_listing_and_every_cnc_row_of_the_isin() -> None:
    holdings = [kite_holding(10), kite_holding(6, exchange="BSE", token=128028676)]
    positions = [
        kite_position("SBIN", 5),
        kite_position("SBIN", -8, exchange="BSE", token=128028676),
        kite_position("SBIN", 50, product="MIS"),  # intraday: not delivery shares
    ]
    assert open_quantity(protection(), positions, holdings, KITE_CAPABILITIES) == 10 + 6 + 5 - 8


def test_kite_selling_everything_leaves_nothing() -> None:
    positions = [kite_position("SBIN", -100)]
    assert open_quantity(protection(), positions, [kite_holding(100, used=100)], KITE_CAPABILITIES) == 0


def test_a_delivery_protection_on_the_sell_side_never_buys_back() -> None:
    """A negative CNC row is a sale out of holdings: its 'exit' would BUY delivery shares. Never."""
    positions = [kite_position("SBIN", -40)]
    p = protection(Side.SELL, quantity=40)
    assert open_quantity(p, positions, [kite_holding(100, used=40)], KITE_CAPABILITIES) == 0
    assert is_delivery_sale(positions[0])


# ----------------------------------------------------------------------------- Upstox

UPSTOX_KEY = "NSE_EQ|INE062A01020"


def upstox_holding(quantity: int, used: int = 0, *, exchange: str = "NSE", t1: int = 0) -> Holding:
    # The documented shape (Upstox API docs, Get Holdings).
    return holding_from_upstox(
        {
            "isin": "INE062A01020",
            "cnc_used_quantity": used,
            "collateral_type": "WC",
            "company_name": "STATE BANK OF INDIA",
            "haircut": 0.2,
            "product": "D",
            "quantity": quantity,
            "trading_symbol": "SBIN",
            "tradingsymbol": "SBIN",
            "last_price": 790.0,
            "close_price": 785.0,
            "instrument_token": f"{exchange}_EQ|INE062A01020",
            "average_price": 700.0,
            "collateral_quantity": 0,
            "collateral_update_quantity": 0,
            "t1_quantity": t1,
            "exchange": exchange,
        }
    )


def upstox_position(quantity: int, product: str = "D", key: str = UPSTOX_KEY) -> Position:
    return position_from_upstox(
        {
            "exchange": key.split("_", 1)[0],
            "product": product,
            "instrument_token": key,
            "trading_symbol": "SBIN",
            "quantity": quantity,
            "average_price": 800.0,
            "last_price": 790.0,
        }
    )


def upstox_protection() -> Protection:
    return protection(instrument=UPSTOX_KEY)


def test_upstox_parses_cnc_used_quantity() -> None:
    assert upstox_holding(36, used=4).used_quantity == 4


def test_upstox_sale_from_holdings() -> None:
    positions = [upstox_position(-40)]
    assert open_quantity(upstox_protection(), positions, [upstox_holding(100, 40)], UPSTOX_CAPABILITIES) == 60


def test_upstox_is_capped_by_what_is_not_blocked() -> None:
    """cnc_used_quantity also counts shares blocked by an open sell order: they cannot be sold twice."""
    holdings = [upstox_holding(100, used=30)]
    assert open_quantity(upstox_protection(), [], holdings, UPSTOX_CAPABILITIES) == 70


def test_upstox_todays_delivery_buys_count_beside_the_cap() -> None:
    holdings = [upstox_holding(100, used=30)]
    positions = [upstox_position(20)]
    assert open_quantity(upstox_protection(), positions, holdings, UPSTOX_CAPABILITIES) == 90


def test_upstox_bse_listing_counts_for_an_nse_protection_by_isin() -> None:
    holdings = [upstox_holding(10), upstox_holding(6, exchange="BSE")]
    positions = [upstox_position(-3, key="BSE_EQ|INE062A01020")]
    assert open_quantity(upstox_protection(), positions, holdings, UPSTOX_CAPABILITIES) == 13


def test_upstox_fo_carry_rows_are_not_delivery_shares() -> None:
    """Product D is also F&O carry-forward: an NSE_FO row is NRML, never counted with holdings."""
    fo = upstox_position(-750, key="NSE_FO|53005")
    assert fo.product is Product.NRML and not is_delivery_sale(fo)
    assert open_quantity(upstox_protection(), [fo], [upstox_holding(16)], UPSTOX_CAPABILITIES) == 16


# ----------------------------------------------------------------------------- stocks to protect


def test_delivery_stocks_one_entry_per_isin_named_by_its_nse_listing() -> None:
    holdings = [kite_holding(6, exchange="BSE", token=128028676), kite_holding(10)]
    stocks = delivery_stocks([kite_position("SBIN", -4)], holdings, "kite")
    assert len(stocks) == 1
    stock = stocks[0]
    assert (stock.exchange, stock.instrument, stock.quantity, stock.held) == ("NSE", SBIN_NSE_TOKEN, 12, 16)
    assert stock.is_holding and stock.side is Side.BUY and stock.product is Product.CNC
    assert stock.average_price == pytest.approx(700.0)


def test_delivery_stocks_drop_what_was_all_sold_and_never_offer_a_short() -> None:
    holdings = [kite_holding(40, used=40)]
    assert delivery_stocks([kite_position("SBIN", -40)], holdings, "kite") == []


def test_todays_delivery_buy_without_holdings_is_not_a_holding() -> None:
    stock = delivery_stocks([kite_position("SBIN", 5)], [], "kite")[0]
    assert stock.quantity == 5 and not stock.is_holding and stock.average_price == pytest.approx(800.0)


def test_a_protection_on_either_listing_covers_the_stock() -> None:
    holdings = [kite_holding(6, exchange="BSE", token=128028676)]
    stock = DeliveryStock("SBIN", "BSE", 128028676, "BSE:SBIN", "INE062A01020", 6, 700.0, 6)
    assert covers_stock(protection(), stock, holdings)
    assert not covers_stock(protection(Side.SELL), stock, holdings)


def test_delivery_shares_names_the_isin_from_an_upstox_key() -> None:
    shares = delivery_shares(UPSTOX_KEY, "SBIN", "NSE", [], [])
    assert shares.isin == "INE062A01020" and shares.sellable("upstox") == 0


# ----------------------------------------------------------------------------- demat consent


def test_kite_mock_profile_has_standing_demat_consent() -> None:
    profile = profile_from_reply(kite_mock_json("profile.json")["data"], "ZERODHA", "kite profile")
    assert profile.demat_consent == "physical" and sells_need_authorisation(profile.demat_consent) is False


@pytest.mark.parametrize(
    ("reply", "consent", "needs"),
    [
        ({"user_id": "AB1234", "meta": {"demat_consent": "physical"}}, "physical", False),
        ({"user_id": "AB1234", "meta": {"demat_consent": "consent"}}, "consent", True),
        ({"user_id": "AB1234", "meta": {"demat_consent": ""}}, "empty", True),
        ({"user_id": "U1", "poa": True}, "poa", False),
        ({"user_id": "U1", "poa": False}, "empty", True),
        ({"user_id": "U1"}, None, None),
    ],
)
def test_profile_reads_demat_consent(reply: dict[str, Any], consent: str | None, needs: bool | None) -> None:
    profile = profile_from_reply(reply, "ZERODHA", "profile")
    assert profile.demat_consent == consent
    assert sells_need_authorisation(profile.demat_consent) is needs


@pytest.mark.parametrize(
    ("message", "demat"),
    [
        (
            "RMS: Holdings not authorised for sale. Authorise with your CDSL TPIN or submit DDPI/POA.",
            True,
        ),
        (
            "Sell order not authorized on CDSL using TPIN. Authorise your holdings or enable DDPI to sell.",
            True,
        ),
        ("Demat debit not authorised for this delivery sale", True),
        ("Insufficient holdings for ITC: available 0.", False),
        ("Orders from this IP are not authorised", False),
        ("Invalid token used to access API", False),
        (None, False),
    ],
)
def test_demat_refusal_is_recognised_and_nothing_else(message: str | None, demat: bool) -> None:
    assert is_demat_refusal(message) is demat


def test_a_holdings_trail_starts_from_todays_price_not_its_old_average() -> None:
    """SBIN bought at 700 on average and trading at 600: a 2 % stop from 700 (686) would sell it at once."""
    holdings = [replace(kite_holding(10), last_price=600.0)]
    stock = delivery_stocks([], holdings, "kite")[0]
    assert stock.average_price == pytest.approx(700.0) and stock.reference_price == 600.0
    today = delivery_stocks([kite_position("SBIN", 5)], [], "kite")[0]
    assert today.reference_price == pytest.approx(800.0)  # today's buys: their own average price


# ----------------------------------------------------------------------------- working sales


def working_sale(
    quantity: int,
    *,
    filled: int = 0,
    status: OrderStatus = OrderStatus.OPEN,
    side: Side = Side.SELL,
    product: Product = Product.CNC,
    exchange: str = "NSE",
    tag: str | None = None,
) -> Order:
    return factories.order(
        f"{quantity}{exchange}{tag}",
        status,
        quantity=quantity,
        filled=filled,
        side=side,
        order_type=OrderType.LIMIT,
        product=product,
        raw_product=product.value,
        symbol="SBIN",
        exchange=exchange,
        instrument=SBIN_NSE_TOKEN if exchange == "NSE" else 128028676,
        price=900.0,
        tag=tag,
        placed_at=datetime.now(IST),
    )


def test_working_delivery_sales_block_their_unfilled_shares_on_every_listing() -> None:
    holdings = [kite_holding(10), kite_holding(6, exchange="BSE", token=128028676)]
    orders = [
        working_sale(4, filled=1),  # 3 still to deliver
        working_sale(2, exchange="BSE"),  # the same ISIN, listed on BSE
        working_sale(5, status=OrderStatus.COMPLETE, filled=5),  # done: positions show it
        working_sale(7, side=Side.BUY),
        working_sale(8, product=Product.MIS),
        working_sale(9, tag="TSOURS"),  # our own exit in flight: counted as such elsewhere
    ]
    blocked = blocked_by_working_sales(
        SBIN_NSE_TOKEN, "SBIN", "NSE", orders, holdings, ignore_tags=["TSOURS"]
    )
    assert blocked == 5
    shares = delivery_shares(SBIN_NSE_TOKEN, "SBIN", "NSE", [kite_position("SBIN", -5)], holdings)
    assert shares.sellable("kite") == 11
    assert shares.sellable_besides("kite", blocked) == 6
    assert shares.sellable_besides("kite", 40) == 0


def test_upstox_used_quantity_already_holds_working_sales_and_is_not_taken_twice() -> None:
    """Upstox counts a working sale in ``cnc_used_quantity``: 100 held, 30 blocked by a working sale."""
    shares = delivery_shares(UPSTOX_KEY, "SBIN", "NSE", [], [upstox_holding(100, used=30)])
    assert shares.sellable("upstox") == 70
    assert shares.sellable_besides("upstox", 30) == 70
