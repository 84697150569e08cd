"""Feed-to-engine throughput through a real loopback WebSocket, beside the same path with the SDK's decoder.

A local server streams Kite full-mode messages (10 packets each, encoded with the simulator's own Kite
codec) as fast as the socket takes them; the client is the app's FeedLoop with the KiteFeed protocol,
feeding every tick to a TrailingEngine with 500 armed protections over 200 instruments. The baseline runs
the very same loop and engine, with ``KiteTicker._parse_binary`` (the official client's decoder) in place
of ours. (The simulator's random walk is paced for demos, so it cannot show the client's ceiling.)
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from kiteconnect import KiteTicker
from websockets.asyncio.server import ServerConnection, serve

from trailstop_gui.models.domain import Product, Side, Tick, TrailRule
from trailstop_gui.models.engine import TrailingEngine
from trailstop_gui.services.brokers.feed_loop import Depth, FeedBatch, FeedLoop
from trailstop_gui.services.brokers.kite_codec import (
    DepthLevel,
    KiteQuote,
    encode_full_packet,
    encode_message,
)
from trailstop_gui.services.brokers.kite_feed import KiteFeed

INSTRUMENTS = 200
PROTECTIONS = 500
MESSAGES = 4000
PACKETS = 10


def _messages() -> tuple[list[int], list[bytes]]:
    rng = random.Random(3)
    tokens = [(n + 1) << 8 | 1 for n in range(INSTRUMENTS)]
    prices = {t: rng.uniform(100, 3000) for t in tokens}
    out = []
    for _ in range(MESSAGES):
        packets = []
        for token in rng.sample(tokens, PACKETS):
            prices[token] *= 1 + rng.gauss(0.0002, 0.001)
            ltp = round(prices[token], 2)
            bids = tuple(DepthLevel(round(ltp - 0.05 * (i + 1), 2), 10, 1) for i in range(5))
            asks = tuple(DepthLevel(round(ltp + 0.05 * (i + 1), 2), 10, 1) for i in range(5))
            packets.append(
                encode_full_packet(
                    KiteQuote(
                        token,
                        ltp,
                        last_quantity=1,
                        average_price=ltp,
                        volume=1000,
                        buy_quantity=1,
                        sell_quantity=1,
                        open=ltp,
                        high=ltp,
                        low=ltp,
                        close=ltp,
                        bids=bids,
                        asks=asks,
                    )
                )
            )
        out.append(encode_message(packets))
    return tokens, out


class _Server:
    """The streaming server in its own process, so that it does not share the client's interpreter lock."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.feed_throughput", "--serve"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _serve(messages: list[bytes]) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the client's subscribe
        for message in messages:
            await ws.send(message)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


def _sdk_decode() -> Callable[[bytes], list[Tick]]:
    ticker: Any = KiteTicker("bench", "bench")

    def decode(data: bytes) -> list[Tick]:
        out = []
        for packet in ticker._parse_binary(data):
            depth = packet.get("depth") or {}
            buy, sell = depth.get("buy") or [{}], depth.get("sell") or [{}]
            out.append(
                Tick(
                    packet["instrument_token"],
                    packet["last_price"],
                    buy[0].get("price") or None,
                    sell[0].get("price") or None,
                    packet.get("volume_traded"),
                )
            )
        return out

    return decode


def run(server: _Server, tokens: list[int], decoder: Callable[[bytes], list[Tick]] | None) -> float:
    engine = TrailingEngine()
    for n in range(PROTECTIONS):
        engine.arm(
            str(n),
            instrument=tokens[n % INSTRUMENTS],
            side=Side.BUY if n % 3 else Side.SELL,
            product=Product.MIS if n % 2 else Product.CNC,
            entry_price=1000.0,
            tick_size=0.05,
            rule=TrailRule.percent(99.0),
        )
    protocol = KiteFeed("bench", lambda: "token", f"ws://127.0.0.1:{server.port}")
    if decoder is not None:
        sdk_decoder = decoder

        def decode(message: str | bytes) -> FeedBatch:
            return FeedBatch(ticks=sdk_decoder(message if isinstance(message, bytes) else message.encode()))

        protocol.decode = decode  # type: ignore[method-assign]
    seen = {"ticks": 0, "messages": 0, "first": 0.0, "last": 0.0}
    loop_holder: dict[str, FeedLoop] = {}

    def on_batch(batch: FeedBatch) -> None:
        if seen["messages"] == 0:
            seen["first"] = time.perf_counter()
        for tick in batch.ticks:
            engine.on_tick(tick)
        seen["ticks"] += len(batch.ticks)
        seen["messages"] += 1
        if seen["messages"] == MESSAGES:
            seen["last"] = time.perf_counter()
            loop_holder["loop"].stop()

    loop = FeedLoop(protocol, on_batch=on_batch, watchdog=10.0)
    loop_holder["loop"] = loop
    loop.set_instruments({token: Depth.DEPTH for token in tokens})
    asyncio.run(loop.run())
    # The first message is not timed; the rest arrived between first and last.
    return (seen["ticks"] - PACKETS) / (seen["last"] - seen["first"])


def main() -> None:
    tokens, _ = _messages()
    server = _Server()
    try:
        ours = max(run(server, tokens, None) for _ in range(2))
        sdk = max(run(server, tokens, _sdk_decode()) for _ in range(2))
    finally:
        server.close()
    print(
        f"feed to engine: {ours:,.0f} ticks/s through a loopback WebSocket, {ours / sdk:.1f} x the same path "
        f"with KiteTicker's decoder ({sdk:,.0f} ticks/s; "
        f"{PROTECTIONS} protections over {INSTRUMENTS} instruments)",
        flush=True,
    )


if __name__ == "__main__":
    if "--serve" in sys.argv:
        asyncio.run(_serve(_messages()[1]))
    else:
        main()
