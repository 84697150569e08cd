"""Upstox v2/v3 shapes of the simulator's objects: REST rows and the token reply (feeds: upstox_frames.py).

Enum-valued fields (``order_type``, ``validity``, ``transaction_type``) carry exactly the spellings the
official SDK's models accept; statuses are Upstox's lower-case words.
"""

from __future__ import annotations

from datetime import datetime
from datetime import time as dt_time
from typing import Any, Final

from trailstop_gui.simulator.core import UpstoxDemo
from trailstop_gui.simulator.exchange import (
    IST,
    Holding,
    Order,
    OrderState,
    OrderStatus,
    Position,
    Trade,
    format_ist,
)
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.market import Market, Quote

EXCHANGES: Final = ["NSE", "NFO", "BSE", "CDS", "BFO", "BCD"]
PRODUCTS: Final = ["D", "I", "CO", "MTF"]
ORDER_TYPES: Final = ["MARKET", "LIMIT", "SL", "SL-M"]

# Upstox reports the exchange's states in lower case; only the after-market state has its own words.
_STATUS_WORDS: Final = {
    OrderStatus.AMO_REQ_RECEIVED: "after market order req received",
}


def status_text(status: OrderStatus) -> str:
    """``TRIGGER PENDING`` -> ``trigger pending``, as Upstox spells its order statuses."""
    return _STATUS_WORDS.get(status, status.value.lower())


def product_code(product: str) -> str:
    """The core's MIS/CNC/NRML as Upstox's I (intraday) or D (delivery, and carry-forward for F&O)."""
    return "I" if product == "MIS" else "D"


def _money(value: float) -> float:
    return round(value, 4) + 0.0  # + 0.0 turns -0.0 into 0.0


def quote_key(inst: Instrument) -> str:
    """The key market-quote replies use: ``NSE_EQ:INFY``, ``NSE_INDEX:Nifty 50``."""
    segment, _, rest = inst.upstox_key.partition("|")
    return f"{segment}:{rest if inst.is_index else inst.tradingsymbol}"


# -- REST rows ---------------------------------------------------------------------------------------


def order(o: Order, state: OrderState | None = None, product: str | None = None) -> dict[str, Any]:
    """One order-book row (or one order-history entry when ``state`` is an earlier state)."""
    s = state or o.state
    inst = o.instrument
    exchange_time = s.exchange_timestamp or (s.updated_at if s.exchange_order_id else None)
    pending = 0 if s.status.is_final else s.quantity - s.filled_quantity
    return {
        "exchange": inst.exchange,
        "product": product or product_code(o.product),
        "price": s.price,
        "quantity": s.quantity,
        "status": status_text(s.status),
        "guid": None,
        "tag": o.tag,
        "instrument_token": inst.upstox_key,
        "placed_by": o.user_id,
        "tradingsymbol": inst.tradingsymbol,
        "trading_symbol": inst.tradingsymbol,
        "order_type": s.order_type,
        "validity": s.validity,
        "trigger_price": s.trigger_price,
        "disclosed_quantity": s.disclosed_quantity,
        "transaction_type": o.transaction_type,
        "average_price": _money(s.average_price),
        "filled_quantity": s.filled_quantity,
        "pending_quantity": pending,
        "status_message": s.status_message,
        "status_message_raw": s.status_message,
        "exchange_order_id": s.exchange_order_id,
        "parent_order_id": None,
        "order_id": o.order_id,
        "variety": "AMO" if o.variety == "amo" else "SIMPLE",
        "order_timestamp": format_ist(o.placed_at),
        "exchange_timestamp": format_ist(exchange_time),
        "is_amo": o.variety == "amo",
        "order_request_id": "1",
        "order_ref_id": None,
    }


def order_update(o: Order, product: str | None = None) -> dict[str, Any]:
    """A portfolio-stream order update: the order-book row plus who and what it is about."""
    row = order(o, product=product)
    row.update({"update_type": "order", "user_id": o.user_id, "instrument_key": o.instrument.upstox_key})
    return row


def trade(t: Trade, order_type: str, product: str | None = None) -> dict[str, Any]:
    inst = t.instrument
    return {
        "exchange": inst.exchange,
        "product": product or product_code(t.product),
        "tradingsymbol": inst.tradingsymbol,
        "trading_symbol": inst.tradingsymbol,
        "instrument_token": inst.upstox_key,
        "order_type": order_type,
        "transaction_type": t.transaction_type,
        "quantity": t.quantity,
        "exchange_order_id": t.exchange_order_id,
        "order_id": t.order_id,
        "exchange_timestamp": format_ist(t.filled_at),
        "average_price": t.price,
        "trade_id": t.trade_id,
        "order_ref_id": None,
        "order_timestamp": format_ist(t.order_placed_at),
    }


def position(p: Position, market: Market) -> dict[str, Any]:
    quote = market.quote(p.instrument)
    last = quote.ltp
    pnl = p.pnl(last)
    realised = p.realised()
    inst = p.instrument
    return {
        "exchange": inst.exchange,
        "multiplier": 1.0,
        "value": _money(p.value),
        "pnl": _money(pnl),
        "product": product_code(p.product),
        "instrument_token": inst.upstox_key,
        "average_price": _money(p.average_price),
        "buy_value": _money(p.buy_value),
        "overnight_quantity": p.overnight_quantity,
        "day_buy_value": _money(p.buy_value),
        "day_buy_price": _money(p.buy_price),
        "overnight_buy_amount": 0.0,
        "overnight_buy_quantity": 0,
        "day_buy_quantity": p.buy_quantity,
        "day_sell_value": _money(p.sell_value),
        "day_sell_price": _money(p.sell_price),
        "overnight_sell_amount": 0.0,
        "overnight_sell_quantity": 0,
        "day_sell_quantity": p.sell_quantity,
        "quantity": p.quantity,
        "last_price": last,
        "unrealised": _money(pnl - realised),
        "realised": _money(realised),
        "sell_value": _money(p.sell_value),
        "tradingsymbol": inst.tradingsymbol,
        "trading_symbol": inst.tradingsymbol,
        "close_price": quote.close,
        "buy_price": _money(p.buy_price),
        "sell_price": _money(p.sell_price),
    }


def position_update(p: Position, market: Market, user_id: str) -> dict[str, Any]:
    row = position(p, market)
    row.update({"update_type": "position", "user_id": user_id, "instrument_key": p.instrument.upstox_key})
    return row


def holding(h: Holding, market: Market) -> dict[str, Any]:
    quote = market.quote(h.instrument)
    inst = h.instrument
    return {
        "isin": inst.isin,
        "cnc_used_quantity": h.used_quantity,
        "collateral_type": "WC",
        "company_name": inst.name,
        "haircut": 0.2,
        "product": "D",
        "quantity": h.quantity,
        "tradingsymbol": inst.tradingsymbol,
        "trading_symbol": inst.tradingsymbol,
        "last_price": quote.ltp,
        "close_price": quote.close,
        "pnl": _money((quote.ltp - h.average_price) * h.quantity),
        "day_change": _money(quote.ltp - quote.close),
        "day_change_percentage": _money(quote.change_percent),
        "instrument_token": h.upstox_key,
        "average_price": h.average_price,
        "collateral_quantity": 0,
        "collateral_update_quantity": 0,
        "t1_quantity": h.t1_quantity,
        "exchange": h.exchange,
    }


def master_row(inst: Instrument) -> dict[str, Any]:
    """One row of the instrument master (``complete.json.gz``); tick sizes in paise, as Upstox gives them."""
    expiry = None
    if inst.expiry is not None:
        # Upstox gives the expiry as epoch milliseconds of the expiry day's end in India.
        day_end = datetime.combine(inst.expiry, dt_time(23, 59, 59), IST)
        expiry = int(day_end.timestamp()) * 1000
    row: dict[str, Any] = {
        "segment": inst.upstox_segment,
        "name": inst.name,
        "exchange": "NSE",
        "isin": inst.isin or None,
        "instrument_type": "INDEX" if inst.is_index else inst.instrument_type,
        "instrument_key": inst.upstox_key,
        "lot_size": inst.lot_size,
        "freeze_quantity": float(inst.freeze_quantity),
        "exchange_token": str(inst.exchange_token),
        "tick_size": round(inst.tick_size * 100, 4),
        "trading_symbol": inst.upstox_key.split("|", 1)[1] if inst.is_index else inst.tradingsymbol,
        "short_name": inst.name,
        "expiry": expiry,
        "strike_price": inst.strike if inst.instrument_type in ("CE", "PE") else None,
    }
    return {k: v for k, v in row.items() if v is not None}


def ltp(q: Quote) -> dict[str, Any]:
    return {"last_price": q.ltp, "instrument_token": q.instrument.upstox_key}


def ltp_v3(q: Quote) -> dict[str, Any]:
    return {
        "last_price": q.ltp,
        "instrument_token": q.instrument.upstox_key,
        "ltq": q.last_quantity,
        "volume": q.volume,
        "cp": q.close,
    }


def profile(demo: UpstoxDemo, poa: bool = True) -> dict[str, Any]:
    return {
        "email": demo.email,
        "exchanges": list(EXCHANGES),
        "products": list(PRODUCTS),
        "broker": "UPSTOX",
        "user_id": demo.user_id,
        "user_name": demo.user_name,
        "order_types": list(ORDER_TYPES),
        "user_type": "individual",
        "poa": poa,  # DDPI/POA on file: sales from the demat need no daily TPIN
        "is_active": True,
    }


def token_reply(demo: UpstoxDemo, access_token: str, poa: bool = True) -> dict[str, Any]:
    """The token exchange's reply: the profile plus the tokens, NOT wrapped in status/data."""
    return {**profile(demo, poa), "access_token": access_token, "extended_token": None}
