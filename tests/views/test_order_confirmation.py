"""The confirmation's text: what is sent, where the stop starts, and what else the protection gets."""

from __future__ import annotations

from trailstop_gui.models.domain import Product, Side, TrailRule
from trailstop_gui.models.store import InstrumentRecord
from trailstop_gui.services.protection_service import EntryRequest
from trailstop_gui.views.order_confirmation import Confirmation, confirmation_html
from trailstop_gui.views.order_preview import compute_preview

CALL = InstrumentRecord(
    "kite", "1", "NIFTY26DEC24300CE", "NFO", "NIFTY", 0.05, 75, "NFO-OPT", "CE", "2026-12-29"
)


def confirmation(**changes: object) -> Confirmation:
    rule = TrailRule.points(60.0)
    request = EntryRequest(1, 1, CALL.symbol, "NFO", Side.BUY, 75, Product.NRML, 0.05, rule)
    preview = compute_preview(Side.BUY, 75, 212.35, 0.05, rule, "last price")
    base = Confirmation(request, preview, CALL, "Zerodha (DM1234)", None, "#d32f2f")
    return Confirmation(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_the_stop_on_this_instrument_with_its_risk() -> None:
    html = confirmation_html(confirmation())
    assert "starts at <b>₹152.35</b>" in html and "Risk if the stop is hit" in html


def test_a_stop_on_the_underlying_replaces_the_option_s_own_stop_and_risk() -> None:
    extra = "Stop on NIFTY 50 (long view): starts at <b>24,290.00</b> from its price 24,350.00"
    html = confirmation_html(
        confirmation(stop_on_underlying=True, extras=(extra, "Exit at 15:15 IST if still open"))
    )
    assert "₹152.35" not in html and "Risk if the stop is hit" not in html
    assert "on the underlying" in html and f"<p>{extra}</p>" in html
    assert html.endswith("<p>Exit at 15:15 IST if still open</p>")
