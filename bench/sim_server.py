"""A simulator in its own process for benchmarks, with a faster random walk than the CLI's default.

Prints the JSON info line, then serves until stdin closes or SIGTERM. Usage:
    python -m bench.sim_server --tick-interval 0.02 --seed 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from trailstop_gui.simulator.runner import start_server


async def serve(tick_interval: float, seed: int, fill_delay: float) -> None:
    server = await start_server(
        "127.0.0.1", 0, seed=seed, auto=True, tick_interval=tick_interval, fill_delay=fill_delay
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(json.dumps(server.sim.info()), flush=True)
    await stop.wait()
    await server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tick-interval", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--fill-delay", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.tick_interval, args.seed, args.fill_delay))
    sys.exit(0)


if __name__ == "__main__":
    main()
