"""``trailstop-sim``: serve the loopback exchange, print one JSON line, run until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailstop-sim",
        description="Loopback exchange speaking the Kite Connect and Upstox protocols (demo and tests).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random walk (default: random)")
    parser.add_argument(
        "--no-auto", dest="auto", action="store_false", help="prices move only through the control API"
    )
    parser.add_argument(
        "--registered-ip",
        dest="registered_ips",
        action="append",
        default=[],
        metavar="IP",
        help="a static IP registered for both demo users' orders (repeatable, at most 2); orders from "
        "any other source address are refused as the brokers do (default: none, orders from anywhere)",
    )
    parser.add_argument(
        "--require-token",
        action="store_true",
        help="every /_sim/ call but the instrument list must carry the JSON line's control_token in an "
        "X-Sim-Token header (default: not required; Host, Origin and body checks apply always)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level on stderr (default WARNING)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    from trailstop_gui.simulator.runner import start_server  # imported here so --help stays instant

    server = await start_server(
        args.host,
        args.port,
        seed=args.seed,
        auto=args.auto,
        registered_ips=args.registered_ips,
        require_token=args.require_token,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    sys.stdout.write(json.dumps(server.sim.info()) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"trailstop-sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
