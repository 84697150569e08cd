"""Feed decoders against the SDKs' own parsers, on the same messages in the same run.

- Kite: full-mode messages of 10 packets (5 depth levels a side) vs ``KiteTicker._parse_binary``.
- Upstox: live full-feed frames of 10 instruments, shaped like the server's full_d5 frames (5 depth
  quotes, daily and 1-minute OHLC, open-interest and volume fields) vs ``FeedResponse.FromString`` followed
  by ``MessageToDict``, which is what the SDK's streamer does with every frame.

Each figure is the best of a few repeats; the whole run takes a few seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from kiteconnect import KiteTicker
from upstox_client.feeder.proto import MarketDataFeedV3_pb2

from trailstop_gui.services.brokers import kite_feed, upstox_feed
from trailstop_gui.services.brokers.kite_codec import (
    DepthLevel,
    KiteQuote,
    encode_full_packet,
    encode_message,
)

PACKETS_PER_MESSAGE = 10
MESSAGES = 100
REPEATS = 5
SECONDS_PER_REPEAT = 0.12

_pb: Any = MarketDataFeedV3_pb2


def _kite_messages(rng: random.Random) -> list[bytes]:
    tokens = [
        (rng.randrange(1, 1 << 20) << 8) | rng.choice((1, 2, 4, 5, 7)) for _ in range(PACKETS_PER_MESSAGE)
    ]
    messages = []
    for _ in range(MESSAGES):
        packets = []
        for token in tokens:
            ltp = rng.randrange(10_000, 500_000) / 100
            bids = tuple(
                DepthLevel(ltp - 0.05 * (i + 1), rng.randrange(1, 5000), rng.randrange(1, 50))
                for i in range(5)
            )
            asks = tuple(
                DepthLevel(ltp + 0.05 * (i + 1), rng.randrange(1, 5000), rng.randrange(1, 50))
                for i in range(5)
            )
            quote = KiteQuote(
                token,
                ltp,
                last_quantity=rng.randrange(1, 500),
                average_price=ltp,
                volume=rng.randrange(0, 10**8),
                buy_quantity=rng.randrange(0, 10**6),
                sell_quantity=rng.randrange(0, 10**6),
                open=ltp,
                high=ltp + 1,
                low=ltp - 1,
                close=ltp,
                last_trade_time=1_700_000_000,
                exchange_ts=1_700_000_001,
                bids=bids,
                asks=asks,
            )
            packets.append(encode_full_packet(quote))
        messages.append(encode_message(packets))
    return messages


def _upstox_frames(rng: random.Random) -> list[bytes]:
    keys = [f"NSE_EQ|INE{rng.randrange(10**8):08d}1" for _ in range(PACKETS_PER_MESSAGE)]
    frames = []
    for _ in range(MESSAGES):
        response = _pb.FeedResponse(type=_pb.live_feed, currentTs=1_700_000_000_123)
        for key in keys:
            ltp = rng.randrange(10_000, 500_000) / 100
            feed = response.feeds[key]
            feed.requestMode = _pb.full_d5
            market = feed.fullFeed.marketFF
            market.ltpc.ltp, market.ltpc.ltt, market.ltpc.ltq, market.ltpc.cp = ltp, 1_700_000_000_000, 5, ltp
            for i in range(5):
                market.marketLevel.bidAskQuote.add(
                    bidQ=rng.randrange(1, 5000),
                    bidP=ltp - 0.05 * (i + 1),
                    askQ=rng.randrange(1, 5000),
                    askP=ltp + 0.05 * (i + 1),
                )
            for interval in ("1d", "I1"):
                market.marketOHLC.ohlc.add(
                    interval=interval,
                    open=ltp,
                    high=ltp + 1,
                    low=ltp - 1,
                    close=ltp,
                    vol=rng.randrange(10**6),
                    ts=1_700_000_000_000,
                )
            market.atp, market.vtt, market.tbq, market.tsq = ltp, rng.randrange(10**8), 1000.0, 2000.0
        frames.append(response.SerializeToString())
    return frames


def _best_seconds_per_pass(decode: Callable[[bytes], object], messages: list[bytes]) -> float:
    """Best time of one pass over ``messages``, each repeat looping for about SECONDS_PER_REPEAT."""
    start = time.perf_counter()
    for message in messages:
        decode(message)
    loops = max(1, round(SECONDS_PER_REPEAT / max(time.perf_counter() - start, 1e-9)))
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(loops):
            for message in messages:
                decode(message)
        best = min(best, (time.perf_counter() - start) / loops)
    return best


def _ticks_per_message(
    decode: Callable[[bytes], Sequence[object]], baseline_count: int, message: bytes
) -> int:
    # A decoder that dropped ticks would look fast for the wrong reason.
    count = len(decode(message))
    if count != baseline_count:
        raise RuntimeError(f"decoder gave {count} ticks where the SDK gave {baseline_count}")
    return count


def _sdk_upstox_decode(frame: bytes) -> dict[str, Any]:
    """What the SDK's MarketDataStreamerV3.handle_message does with each frame."""
    message: dict[str, Any] = MessageToDict(_pb.FeedResponse.FromString(frame))
    return message


def main() -> None:
    rng = random.Random(20240501)

    kite_messages = _kite_messages(rng)
    ticker = KiteTicker("bench", "bench")  # never connected: only its parser runs
    ticks = _ticks_per_message(
        kite_feed.decode_message, len(ticker._parse_binary(kite_messages[0])), kite_messages[0]
    )
    ours = _best_seconds_per_pass(kite_feed.decode_message, kite_messages)
    sdk = _best_seconds_per_pass(ticker._parse_binary, kite_messages)
    rate = ticks * len(kite_messages) / ours
    print(f"kite decode: {rate:.0f} ticks/s, {sdk / ours:.1f} x KiteTicker")

    upstox_frames = _upstox_frames(rng)
    sdk_count = len(_sdk_upstox_decode(upstox_frames[0])["feeds"])
    ticks = _ticks_per_message(upstox_feed.decode_message, sdk_count, upstox_frames[0])
    ours = _best_seconds_per_pass(upstox_feed.decode_message, upstox_frames)
    sdk = _best_seconds_per_pass(_sdk_upstox_decode, upstox_frames)
    rate = ticks * len(upstox_frames) / ours
    print(f"upstox decode: {rate:.0f} ticks/s, {sdk / ours:.1f} x SDK FromString+MessageToDict")


if __name__ == "__main__":
    main()
