"""Broker-neutral types: order types and statuses, requests, capabilities, and the Broker protocol."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests import factories
from trailstop_gui.models.domain import Product, Side
from trailstop_gui.services.brokers import base
from trailstop_gui.services.brokers.base import (
    IST,
    KITE_CAPABILITIES,
    UPSTOX_CAPABILITIES,
    Broker,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    SessionInfo,
    Validity,
    as_float,
    as_int,
    latest_with_tag,
    normalize_order_status,
    parse_ist,
    product_or_none,
    rows,
)
from trailstop_gui.services.brokers.errors import AuthError
from trailstop_gui.services.brokers.kite import KiteBroker
from trailstop_gui.services.brokers.rate_limit import KITE_ORDER_WINDOWS, UPSTOX_ORDER_WINDOWS
from trailstop_gui.services.brokers.upstox import UpstoxBroker


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MARKET", OrderType.MARKET),
        ("limit", OrderType.LIMIT),
        ("SL", OrderType.SL),
        ("SL-M", OrderType.SL_M),
        ("SL_M", OrderType.SL_M),
        ("slm", OrderType.SL_M),
        (OrderType.SL_M, OrderType.SL_M),
    ],
)
def test_order_type_spellings(text: object, expected: OrderType) -> None:
    assert OrderType.parse(text) is expected


def test_order_type_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="order type"):
        OrderType.parse("STOP")


def test_order_type_properties() -> None:
    assert [t for t in OrderType if t.is_market] == [OrderType.MARKET, OrderType.SL_M]
    assert [t for t in OrderType if t.needs_price] == [OrderType.LIMIT, OrderType.SL]
    assert [t for t in OrderType if t.needs_trigger] == [OrderType.SL, OrderType.SL_M]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Kite spellings
        ("PUT ORDER REQ RECEIVED", OrderStatus.PENDING),
        ("VALIDATION PENDING", OrderStatus.PENDING),
        ("OPEN PENDING", OrderStatus.PENDING),
        ("MODIFY VALIDATION PENDING", OrderStatus.PENDING),
        ("MODIFIED", OrderStatus.PENDING),
        ("AMO REQ RECEIVED", OrderStatus.PENDING),
        ("OPEN", OrderStatus.OPEN),
        ("TRIGGER PENDING", OrderStatus.TRIGGER_PENDING),
        ("COMPLETE", OrderStatus.COMPLETE),
        ("CANCELLED", OrderStatus.CANCELLED),
        ("REJECTED", OrderStatus.REJECTED),
        # Upstox spellings
        ("open", OrderStatus.OPEN),
        ("trigger pending", OrderStatus.TRIGGER_PENDING),
        ("complete", OrderStatus.COMPLETE),
        ("cancelled", OrderStatus.CANCELLED),
        ("rejected", OrderStatus.REJECTED),
        ("after market order req received", OrderStatus.PENDING),
        ("cancelled after market order", OrderStatus.CANCELLED),
        ("modify pending", OrderStatus.PENDING),
        ("  Open  ", OrderStatus.OPEN),
        ("teleported", OrderStatus.UNKNOWN),
        (None, OrderStatus.UNKNOWN),
    ],
)
def test_status_normalisation(raw: str | None, expected: OrderStatus) -> None:
    assert normalize_order_status(raw) is expected


def test_only_three_statuses_are_final() -> None:
    assert {s for s in OrderStatus if s.is_final} == {
        OrderStatus.COMPLETE,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
    }


def test_parse_ist() -> None:
    parsed = parse_ist("2021-05-31 09:18:57")
    assert parsed == datetime(2021, 5, 31, 9, 18, 57, tzinfo=IST)
    assert parsed is not None and parsed.utcoffset() == timedelta(hours=5, minutes=30)
    assert parse_ist(datetime(2021, 5, 31, 9, 18, 57)) == parsed  # naive datetimes are IST
    assert parse_ist("2021-05-31T03:48:57+00:00") == parsed
    assert parse_ist(None) is None
    assert parse_ist("") is None
    assert parse_ist("yesterday") is None


# ----------------------------------------------------------------------------- OrderRequest


def request(**overrides: object) -> OrderRequest:
    fields: dict[str, object] = dict(symbol="INFY", exchange="NSE", side="BUY", quantity=5, product="MIS")
    fields.update(overrides)
    return OrderRequest(**fields)  # type: ignore[arg-type]


def test_order_request_parses_strings_into_enums() -> None:
    order = request(side="sell", product="cnc", order_type="sl-m", trigger_price=99, validity="ioc")
    assert order.side is Side.SELL
    assert order.product is Product.CNC
    assert order.order_type is OrderType.SL_M
    assert order.validity is Validity.IOC
    assert order.trigger_price == 99.0
    assert order.urgent is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"order_type": "LIMIT"}, "price"),
        ({"order_type": "LIMIT", "price": -1}, "price"),
        ({"order_type": "SL", "price": 100}, "trigger price"),
        ({"order_type": "SL-M"}, "trigger price"),
        ({"side": "HOLD"}, "side"),
        ({"product": "MTF"}, "product"),
        ({"symbol": "", "instrument": None}, "symbol or an instrument"),
    ],
)
def test_order_request_validation(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        request(**overrides)


def test_order_request_is_immutable() -> None:
    order = request()
    with pytest.raises(AttributeError):
        order.quantity = 10  # type: ignore[misc]


# ----------------------------------------------------------------------------- capabilities


def test_kite_capabilities() -> None:
    caps = KITE_CAPABILITIES
    assert caps.is_valid_tag("TS12345678901234567X")  # 20 characters
    assert not caps.is_valid_tag("TS123456789012345678X")  # 21
    assert not caps.is_valid_tag("ts-1")
    assert not caps.is_valid_tag("")
    assert caps.broker_product(Product.NRML) == "NRML"
    assert caps.needs_market_protection
    assert caps.order_rate_limits == KITE_ORDER_WINDOWS
    assert "full" in caps.depth_modes


def test_upstox_capabilities_map_products_to_i_and_d() -> None:
    caps = UPSTOX_CAPABILITIES
    assert [caps.broker_product(p) for p in (Product.MIS, Product.CNC, Product.NRML)] == ["I", "D", "D"]
    assert not caps.needs_market_protection and caps.supports_market_protection
    assert caps.order_rate_limits == UPSTOX_ORDER_WINDOWS
    assert caps.ltp_mode == "ltpc"


def test_capability_limiter_keeps_a_slot_for_exits() -> None:
    limiter = KITE_CAPABILITIES.make_limiter()
    assert limiter.windows == KITE_ORDER_WINDOWS
    assert sum(limiter.try_acquire() for _ in range(10)) == 9
    assert limiter.try_acquire(priority=True)


# ----------------------------------------------------------------------------- outputs


def make_order(order_id: str, tag: str | None, placed: str | None) -> Order:
    return factories.order(
        order_id,
        OrderStatus.OPEN,
        quantity=1,
        order_type=OrderType.MARKET,
        tag=tag,
        placed_at=parse_ist(placed),
    )


def test_latest_with_tag_picks_the_newest_order_with_that_tag() -> None:
    book = [
        make_order("1", "TS1", "2024-01-01 10:00:02"),
        make_order("2", "TS1", "2024-01-01 10:00:05"),
        make_order("3", "TS2", "2024-01-01 10:00:09"),
        make_order("4", "TS1", "2024-01-01 10:00:01"),
    ]
    found = latest_with_tag(book, "TS1")
    assert found is not None and found.order_id == "2"
    assert latest_with_tag(book, "TS9") is None
    undated = [make_order("5", "TS1", None), make_order("6", "TS1", None)]
    found = latest_with_tag(undated, "TS1")
    assert found is not None and found.order_id == "6"


def test_position_side_follows_the_sign_of_the_quantity() -> None:
    def position(quantity: int) -> Position:
        return Position("INFY", "NSE", 408065, "NSE:INFY", quantity, 100.0, Product.MIS, "MIS")

    assert position(5).side is Side.BUY
    assert position(-5).side is Side.SELL
    assert position(0).side is None


def test_session_info_repr_hides_the_token() -> None:
    info = SessionInfo(access_token="tok_secret_123", user_id="AB1234", user_name="A", broker="kite")
    assert "tok_secret_123" not in repr(info)
    assert "AB1234" in repr(info)


def test_lenient_readers() -> None:
    assert rows([{"a": 1}, "junk", None, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    assert rows({"a": 1}) == []
    assert (as_int("12"), as_int(3.0), as_int(None), as_int("x")) == (12, 3, 0, 0)
    assert (as_float("1.5"), as_float(None)) == (1.5, 0.0)
    assert product_or_none("CO") is None and product_or_none("mis") is Product.MIS


def test_error_classes_are_importable_from_base() -> None:
    assert base.AuthError is AuthError


def test_both_adapters_satisfy_the_broker_protocol() -> None:
    kite = KiteBroker("key", "token", root="http://127.0.0.1:9")
    upstox = UpstoxBroker("client", "token", api_root="http://127.0.0.1:9")
    assert isinstance(kite, Broker)
    assert isinstance(upstox, Broker)
    assert kite.capabilities is KITE_CAPABILITIES
    assert upstox.capabilities is UPSTOX_CAPABILITIES
