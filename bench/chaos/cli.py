"""The command line of the chaos campaign: ``python -m bench.chaos`` (make chaos, make chaos-safety)."""

from __future__ import annotations

import argparse

import bench.chaos
from bench.chaos.config import ChaosConfig
from bench.chaos.run import run_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=(bench.chaos.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of workload per run")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed)
    parser.add_argument("--slots", type=int, default=ChaosConfig.slots)
    parser.add_argument("--soak", type=float, default=300.0, help="seconds of the no-kill endurance run")
    parser.add_argument("--keep", action="store_true", help="keep data folders and transcripts")
    parser.add_argument(
        "--safety-stop", action="store_true", help="every protection also holds a broker-held safety stop"
    )
    parser.add_argument(
        "--baskets",
        action=argparse.BooleanOptionalAction,
        default=True,  # issue 18: the campaign counts basket exits per position unless told not to
        help="a basket of every position per account, its breach exits all (on by default; --no-baskets)",
    )
    parser.add_argument(
        "--route-flaps",
        action="store_true",
        help="orders only from registered IPs: the app's order route (a real proxy) goes off and on",
    )
    args = parser.parse_args(argv)
    config = ChaosConfig(
        seed=args.seed,
        runs=args.runs,
        duration=args.duration,
        slots=args.slots,
        soak=args.soak,
        keep=args.keep,
        safety=args.safety_stop,
        route_flaps=args.route_flaps,
        baskets=args.baskets,
    )
    report = run_chaos(config)
    return 1 if report.violations else 0
