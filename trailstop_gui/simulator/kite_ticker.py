"""The Kite ticker WebSocket: binary ltp/quote/full packets, heartbeats and order updates as text."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from typing import Any

from aiohttp import web

from trailstop_gui.simulator import kite_format as fmt
from trailstop_gui.simulator.core import SimListener, Simulator
from trailstop_gui.simulator.exchange import Order
from trailstop_gui.simulator.feeds import FeedConnection
from trailstop_gui.simulator.instruments import SEGMENT_INDICES, Instrument
from trailstop_gui.simulator.kite_api import BROKER
from trailstop_gui.simulator.market import DEPTH_LEVELS, Quote

log = logging.getLogger(__name__)

WS_PATH = "/kite-ws"
MODE_LTP, MODE_QUOTE, MODE_FULL = "ltp", "quote", "full"
MODES = (MODE_LTP, MODE_QUOTE, MODE_FULL)
HEARTBEAT = b"\x00"
HEARTBEAT_INTERVAL = 1.0
MAX_SUBSCRIPTIONS = 3000


def _divisor(segment: int) -> int:
    if segment == 3:  # CDS
        return 10_000_000
    if segment in (6, 12):  # BCD, NCO
        return 10_000
    return 100


def _price(value: float, divisor: int) -> int:
    return max(0, round(value * divisor))


def encode_packet(quote: Quote, mode: str) -> bytes:
    """One ticker packet (without the length prefix) for ``quote`` in ``mode``."""
    inst = quote.instrument
    token = inst.kite_token
    div = _divisor(inst.segment_id)
    ltp = _price(quote.ltp, div)
    if mode == MODE_LTP:
        return struct.pack(">II", token, ltp)
    ohlc_high, ohlc_low = _price(quote.high, div), _price(quote.low, div)
    ohlc_open, ohlc_close = _price(quote.open, div), _price(quote.close, div)
    if inst.segment_id == SEGMENT_INDICES:
        change = round((quote.ltp - quote.close) * div)  # may be negative: signed
        packet = struct.pack(">IIIIIIi", token, ltp, ohlc_high, ohlc_low, ohlc_open, ohlc_close, change)
        if mode == MODE_FULL:
            packet += struct.pack(">I", quote.timestamp)
        return packet
    packet = struct.pack(
        ">IIIIIIIIIII",
        token,
        ltp,
        quote.last_quantity,
        _price(quote.average_price, div),
        quote.volume,
        quote.buy_quantity,
        quote.sell_quantity,
        ohlc_open,
        ohlc_high,
        ohlc_low,
        ohlc_close,
    )
    if mode != MODE_FULL:
        return packet
    packet += struct.pack(
        ">IIIII", quote.last_trade_time, quote.oi, quote.oi_day_high, quote.oi_day_low, quote.timestamp
    )
    for levels in (quote.bids, quote.asks):
        for i in range(DEPTH_LEVELS):
            if i < len(levels):
                level = levels[i]
                packet += struct.pack(">IIHxx", level.quantity, _price(level.price, div), level.orders)
            else:
                packet += struct.pack(">IIHxx", 0, 0, 0)
    return packet


def encode_message(packets: list[bytes]) -> bytes:
    """A whole binary message: ``uint16 count`` then each packet as ``uint16 length`` + bytes."""
    parts = [struct.pack(">H", len(packets))]
    for packet in packets:
        parts.append(struct.pack(">H", len(packet)))
        parts.append(packet)
    return b"".join(parts)


class KiteTickerHub(SimListener):
    """Accepts ticker connections and fans ticks, heartbeats and order updates out to them."""

    streams_order_updates = True

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._conns: set[FeedConnection] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        api_key = request.query.get("api_key", "")
        token = request.query.get("access_token", "")
        session = self.sim.sessions.validate(BROKER, token, api_key)
        if session is None:
            # Kite refuses the upgrade itself; the client sees a failed handshake and retries.
            return web.Response(status=403, text="403 Forbidden: invalid api_key or access_token")
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, timeout=1.0)
        await ws.prepare(request)
        conn = FeedConnection(ws, request, self.sim.faults, BROKER, session.user_id, token, "kite-ticker")
        self._conns.add(conn)
        self.sim.feeds.add(conn)
        try:
            await conn.run(on_text=lambda text: self._on_client_message(conn, text))
        finally:
            self._conns.discard(conn)
            self.sim.feeds.remove(conn)
        return ws

    # -- client messages -------------------------------------------------------------------------

    def _on_client_message(self, conn: FeedConnection, text: str) -> None:
        try:
            message = json.loads(text)
            action, value = message["a"], message["v"]
        except (ValueError, KeyError, TypeError):
            conn.send_str(json.dumps({"type": "error", "data": "Invalid message"}))
            return
        if action == "subscribe":
            self._subscribe(conn, value)
        elif action == "unsubscribe":
            for inst in self._instruments(value):
                conn.subscriptions.pop(str(inst.kite_token), None)
        elif action == "mode":
            self._set_mode(conn, value)
        else:
            conn.send_str(json.dumps({"type": "error", "data": f"Unknown action: {action}"}))

    def _instruments(self, tokens: Any) -> list[Instrument]:
        if not isinstance(tokens, list):
            return []
        found = []
        for token in tokens:
            if isinstance(token, int) and not isinstance(token, bool):
                inst = self.sim.instruments.by_kite_token(token)
                if inst is not None:  # unknown tokens are ignored, as Kite does
                    found.append(inst)
        return found

    def _subscribe(self, conn: FeedConnection, tokens: Any) -> None:
        instruments = self._instruments(tokens)
        for inst in instruments:
            if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
                conn.send_str(json.dumps({"type": "error", "data": "Subscription limit exceeded"}))
                break
            conn.subscriptions[str(inst.kite_token)] = (
                MODE_QUOTE  # KiteTicker assumes quote after a subscribe
            )
        self._snapshot(conn, instruments)

    def _set_mode(self, conn: FeedConnection, value: Any) -> None:
        if not (isinstance(value, list) and len(value) == 2 and value[0] in MODES):
            conn.send_str(json.dumps({"type": "error", "data": "Invalid mode message"}))
            return
        mode, tokens = value
        changed = []
        for inst in self._instruments(tokens):
            key = str(inst.kite_token)
            if key in conn.subscriptions:
                conn.subscriptions[key] = mode
                changed.append(inst)
        self._snapshot(conn, changed)

    def _snapshot(self, conn: FeedConnection, instruments: list[Instrument]) -> None:
        """The current quote at once, as Kite sends it after a subscribe or a mode change."""
        quotes = [self.sim.market.quote(i) for i in instruments]
        self._send_ticks(conn, quotes)

    # -- pushing ---------------------------------------------------------------------------------

    def _send_ticks(self, conn: FeedConnection, quotes: list[Quote]) -> None:
        packets = []
        for quote in quotes:
            mode = conn.subscriptions.get(str(quote.instrument.kite_token))
            if mode is not None:
                packets.append(encode_packet(quote, mode))
        if packets:
            conn.send_bytes(encode_message(packets))

    def on_ticks(self, quotes: list[Quote]) -> None:
        for conn in list(self._conns):
            self._send_ticks(conn, quotes)

    def on_order_update(self, order: Order) -> None:
        if order.broker != BROKER:
            return
        text = json.dumps({"type": "order", "data": fmt.order_update(order)})
        for conn in list(self._conns):
            if conn.user_id == order.user_id:
                conn.send_str(text)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            for conn in list(self._conns):
                conn.send_bytes(HEARTBEAT)

    async def on_startup(self, app: web.Application) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="kite-heartbeat")

    async def on_cleanup(self, app: web.Application) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat


def register(app: web.Application, sim: Simulator) -> None:
    hub = KiteTickerHub(sim)
    sim.add_listener(hub)
    app.router.add_get(WS_PATH, hub.handle)
    app.on_startup.append(hub.on_startup)
    app.on_cleanup.append(hub.on_cleanup)
