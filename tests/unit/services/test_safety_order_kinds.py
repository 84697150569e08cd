"""Which order holds a safety stop per segment, and which refusals say the order type is not offered."""

from __future__ import annotations

import pytest

from trailstop_gui.models.domain import SafetyKind
from trailstop_gui.services.safety_stop import order_type_refused, slm_unavailable


@pytest.mark.parametrize(
    ("exchange", "symbol", "unavailable"),
    [
        ("NFO", "NIFTY26DEC24300CE", True),  # index option: withdrawn by NSE in 2021
        ("NFO", "RELIANCE26DEC1300PE", True),  # stock option
        ("NFO", "NIFTY26DECFUT", False),  # futures keep SL-M
        ("NSE", "INFY", False),
        ("NSE", "PCJEWELLER", False),  # an equity that merely ends in "...ER", not an option
        ("BSE", "INFY", True),  # BSE discontinued SL-M in every segment in 2023
        ("BFO", "SENSEX26DECFUT", True),
        ("NSE_FO", "NIFTY 24300 CE 30 DEC 26", False),  # Upstox names carry no trailing strike+CE
        ("NSE_FO", "NIFTY26DEC24300CE", True),
    ],
)
def test_where_the_exchange_has_no_sl_m(exchange: str, symbol: str, unavailable: bool) -> None:
    assert slm_unavailable(exchange, symbol) is unavailable


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("16052: Function not available", True),
        ("RMS:16052 : Function not available", True),
        ("SL-M orders are not allowed for index and stock options", True),
        ("Stoploss market orders are blocked for this instrument", True),
        ("Stop loss market order type is not supported on BSE", True),
        ("RMS:Margin Exceeds,Required:0, Available:0", False),
        ("Trigger price for stoploss sell orders should be lower than the last traded price.", False),
        ("Quantity exceeds the freeze limit of 1800 for this instrument.", False),
    ],
)
def test_refusals_that_name_the_order_type(text: str, refused: bool) -> None:
    assert order_type_refused(text) is refused


def test_both_stop_orders_are_orders_and_a_gtt_is_not() -> None:
    assert SafetyKind.SL_M.is_order and SafetyKind.SL.is_order
    assert not SafetyKind.GTT.is_order and not SafetyKind.NONE.is_order
