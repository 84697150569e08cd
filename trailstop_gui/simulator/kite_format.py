"""Kite Connect v3 shapes of the simulator's objects, key for key as the broker sends them."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from trailstop_gui.simulator.core import KiteDemo
from trailstop_gui.simulator.exchange import IST, Holding, Order, OrderState, Position, Trade, format_ist
from trailstop_gui.simulator.instruments import Instrument
from trailstop_gui.simulator.market import Market, Quote, round_to_tick

KITE_APP_ID = 4242
EXCHANGES = ["NSE", "NFO", "BFO", "CDS", "BSE", "MCX", "BCD", "MF"]
PRODUCTS = ["CNC", "NRML", "MIS", "BO", "CO"]
ORDER_TYPES = ["MARKET", "LIMIT", "SL", "SL-M"]
INSTRUMENT_COLUMNS = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)


def _money(value: float) -> float:
    return round(value, 4) + 0.0  # + 0.0 turns -0.0 into 0.0


def order(order: Order, state: OrderState | None = None) -> dict[str, Any]:
    """One order book row (or one order_history entry when ``state`` is an earlier state)."""
    s = state or order.state
    inst = order.instrument
    exchange_time = s.exchange_timestamp or (s.updated_at if s.exchange_order_id else None)
    row: dict[str, Any] = {
        "account_id": order.user_id,
        "placed_by": order.user_id,
        "order_id": order.order_id,
        "exchange_order_id": s.exchange_order_id,
        "parent_order_id": None,
        "status": s.status.value,
        "status_message": s.status_message,
        "status_message_raw": s.status_message,
        "order_timestamp": format_ist(s.updated_at),
        "exchange_update_timestamp": format_ist(exchange_time),
        "exchange_timestamp": format_ist(exchange_time),
        "variety": order.variety,
        "modified": s.modified,
        "exchange": inst.exchange,
        "tradingsymbol": inst.tradingsymbol,
        "instrument_token": inst.kite_token,
        "order_type": s.order_type,
        "transaction_type": order.transaction_type,
        "validity": s.validity,
        "validity_ttl": 0,
        "product": order.product,
        "quantity": s.quantity,
        "disclosed_quantity": s.disclosed_quantity,
        "price": s.price,
        "trigger_price": s.trigger_price,
        "average_price": _money(s.average_price),
        "filled_quantity": s.filled_quantity,
        "pending_quantity": s.pending_quantity,
        "cancelled_quantity": s.cancelled_quantity,
        "market_protection": order.market_protection,
        "meta": {},
        "tag": order.tag,
        "guid": None,
    }
    if order.tags:
        row["tags"] = order.tags
    return row


def order_update(o: Order) -> dict[str, Any]:
    """The payload of a ticker order update (the same fields as a postback)."""
    row = order(o)
    for key in ("account_id", "validity_ttl", "modified", "tags"):
        row.pop(key, None)
    row.update(
        {
            "user_id": o.user_id,
            "unfilled_quantity": 0 if o.state.status.is_final else row["pending_quantity"],
            "app_id": KITE_APP_ID,
            "checksum": "",
        }
    )
    return row


def trade(t: Trade) -> dict[str, Any]:
    inst = t.instrument
    return {
        "trade_id": t.trade_id,
        "order_id": t.order_id,
        "exchange": inst.exchange,
        "tradingsymbol": inst.tradingsymbol,
        "instrument_token": inst.kite_token,
        "product": t.product,
        "average_price": t.price,
        "quantity": t.quantity,
        "exchange_order_id": t.exchange_order_id,
        "transaction_type": t.transaction_type,
        "fill_timestamp": format_ist(t.filled_at),
        "order_timestamp": t.order_placed_at.astimezone(IST).strftime("%H:%M:%S"),
        "exchange_timestamp": format_ist(t.filled_at),
    }


def position(p: Position, market: Market) -> dict[str, Any]:
    quote = market.quote(p.instrument)
    last = quote.ltp
    pnl = p.pnl(last)
    realised = p.realised()
    return {
        "tradingsymbol": p.instrument.tradingsymbol,
        "exchange": p.instrument.exchange,
        "instrument_token": p.instrument.kite_token,
        "product": p.product,
        "quantity": p.quantity,
        "overnight_quantity": p.overnight_quantity,
        "multiplier": 1,
        "average_price": _money(p.average_price),
        "close_price": quote.close,
        "last_price": last,
        "value": _money(p.value),
        "pnl": _money(pnl),
        "m2m": _money(pnl),
        "unrealised": _money(pnl - realised),
        "realised": _money(realised),
        "buy_quantity": p.buy_quantity,
        "buy_price": _money(p.buy_price),
        "buy_value": _money(p.buy_value),
        "buy_m2m": _money(p.buy_value),
        "sell_quantity": p.sell_quantity,
        "sell_price": _money(p.sell_price),
        "sell_value": _money(p.sell_value),
        "sell_m2m": _money(p.sell_value),
        "day_buy_quantity": p.buy_quantity,
        "day_buy_price": _money(p.buy_price),
        "day_buy_value": _money(p.buy_value),
        "day_sell_quantity": p.sell_quantity,
        "day_sell_price": _money(p.sell_price),
        "day_sell_value": _money(p.sell_value),
    }


def holding(h: Holding, market: Market) -> dict[str, Any]:
    quote = market.quote(h.instrument)
    return {
        "tradingsymbol": h.instrument.tradingsymbol,
        "exchange": h.exchange,
        "instrument_token": h.kite_token,
        "isin": h.instrument.isin,
        "product": "CNC",
        "price": 0,
        "quantity": h.quantity,
        "used_quantity": h.used_quantity,
        "t1_quantity": h.t1_quantity,
        "realised_quantity": h.quantity - h.t1_quantity,
        "authorised_quantity": 0,
        "authorised_date": datetime.now(IST).strftime("%Y-%m-%d 00:00:00"),
        "authorisation": {},
        "opening_quantity": h.quantity,
        "short_quantity": 0,
        "collateral_quantity": 0,
        "collateral_type": "",
        "discrepancy": False,
        "average_price": h.average_price,
        "last_price": quote.ltp,
        "close_price": quote.close,
        "pnl": _money((quote.ltp - h.average_price) * h.quantity),
        "day_change": _money(quote.ltp - quote.close),
        "day_change_percentage": _money(quote.change_percent),
        "mtf": {"quantity": 0, "used_quantity": 0, "average_price": 0, "value": 0, "initial_margin": 0},
    }


def _depth(levels: tuple[Any, ...]) -> list[dict[str, Any]]:
    rows = [{"price": lv.price, "quantity": lv.quantity, "orders": lv.orders} for lv in levels]
    rows += [{"price": 0, "quantity": 0, "orders": 0}] * (5 - len(rows))
    return rows


def ohlc(q: Quote) -> dict[str, float]:
    return {"open": q.open, "high": q.high, "low": q.low, "close": q.close}


def quote(q: Quote) -> dict[str, Any]:
    tick = q.instrument.tick_size or 0.05
    return {
        "instrument_token": q.instrument.kite_token,
        "timestamp": format_ist(datetime.fromtimestamp(q.timestamp, IST)),
        "last_trade_time": format_ist(datetime.fromtimestamp(q.last_trade_time, IST)),
        "last_price": q.ltp,
        "last_quantity": q.last_quantity,
        "buy_quantity": q.buy_quantity,
        "sell_quantity": q.sell_quantity,
        "volume": q.volume,
        "average_price": q.average_price,
        "oi": q.oi,
        "oi_day_high": q.oi_day_high,
        "oi_day_low": q.oi_day_low,
        "net_change": q.net_change,
        "lower_circuit_limit": round_to_tick(q.close * 0.8, tick),
        "upper_circuit_limit": round_to_tick(q.close * 1.2, tick),
        "ohlc": ohlc(q),
        "depth": {"buy": _depth(q.bids), "sell": _depth(q.asks)},
    }


def ltp(q: Quote) -> dict[str, Any]:
    return {"instrument_token": q.instrument.kite_token, "last_price": q.ltp}


def ohlc_quote(q: Quote) -> dict[str, Any]:
    return {"instrument_token": q.instrument.kite_token, "last_price": q.ltp, "ohlc": ohlc(q)}


def profile(demo: KiteDemo, demat_consent: bool = True) -> dict[str, Any]:
    return {
        "user_id": demo.user_id,
        "user_type": "individual",
        "email": demo.email,
        "user_name": demo.user_name,
        "user_shortname": demo.user_name.split()[0],
        "broker": "ZERODHA",
        "exchanges": EXCHANGES,
        "products": PRODUCTS,
        "order_types": ORDER_TYPES,
        "avatar_url": None,
        # "physical": a POA/DDPI on file; "consent": online consent, each sale authorised with the TPIN.
        "meta": {"demat_consent": "physical" if demat_consent else "consent"},
    }


def session(
    demo: KiteDemo, access_token: str, public_token: str, login_time: datetime, demat_consent: bool = True
) -> dict[str, Any]:
    return {
        **profile(demo, demat_consent),
        "avatar_url": "",
        "api_key": demo.api_key,
        "access_token": access_token,
        "public_token": public_token,
        "enctoken": "",
        "refresh_token": "",
        "silo": "",
        "login_time": format_ist(login_time),
    }


def _segment_margins(cash: float, used: float) -> dict[str, Any]:
    return {
        "enabled": True,
        "net": _money(cash - used),
        "available": {
            "adhoc_margin": 0,
            "cash": cash,
            "opening_balance": cash,
            "live_balance": _money(cash - used),
            "collateral": 0,
            "intraday_payin": 0,
        },
        "utilised": {
            "debits": _money(used),
            "exposure": 0,
            "m2m_realised": 0,
            "m2m_unrealised": 0,
            "option_premium": 0,
            "payout": 0,
            "span": 0,
            "holding_sales": 0,
            "turnover": 0,
            "liquid_collateral": 0,
            "stock_collateral": 0,
            "delivery": 0,
        },
    }


def margins(positions: list[Position]) -> dict[str, Any]:
    # A rough debit: the value of open positions (MIS at 20%), enough for a dashboard to show movement.
    used = sum(abs(p.quantity) * p.average_price * (0.2 if p.product == "MIS" else 1.0) for p in positions)
    return {"equity": _segment_margins(1_000_000.0, used), "commodity": _segment_margins(100_000.0, 0.0)}


def instruments_csv(instruments: list[Instrument], market: Market) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(INSTRUMENT_COLUMNS)
    for inst in instruments:
        writer.writerow(
            (
                inst.kite_token,
                inst.exchange_token,
                inst.tradingsymbol,
                inst.name,
                repr(market.ltp(inst)),
                inst.expiry.isoformat() if inst.expiry else "",
                repr(float(inst.strike)),
                repr(float(inst.tick_size)),
                inst.lot_size,
                inst.instrument_type,
                inst.kite_segment,
                inst.exchange,
            )
        )
    return out.getvalue()
