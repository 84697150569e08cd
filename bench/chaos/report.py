"""What a campaign found and what it prints: `Violation`, each run's figures (`RunReport`), the
campaign's (`ChaosReport`), and `describe`, the lines printed for a run."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.config import ChaosConfig
from bench.chaos.kills import KILL_REASONS


@dataclass(frozen=True)
class Violation:
    run: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"run {self.run}: {self.kind}: {self.detail}"


@dataclass
class RunReport:
    run: int
    seed: int
    seconds: float = 0.0
    episodes: Counter[str] = field(default_factory=Counter)
    ticks: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    exits: int = 0
    protections: int = 0
    exits_refused: int = 0  # injected rejections: EXIT_FAILED and an alert, as designed
    basket_breaches: int = 0
    basket_exits: int = 0  # exits of protections that a basket's breach exited
    safety_held: int = 0  # protections that held a broker-held safety stop at some point
    safety_orders: int = 0  # SL-M orders and GTTs placed for them (re-placements included)
    safety_closes: int = 0  # protections closed by the broker-held stop (its order was the exit)
    entries_not_placed: int = 0
    latencies: list[float] = field(default_factory=list)  # crossing -> flat, seconds of working feed
    holdings: Counter[str] = field(default_factory=Counter)  # plays and their outcomes
    wall_latencies: list[float] = field(default_factory=list)
    restart_to_live: list[float] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    data_dir: Path | None = None
    soak_seconds: float = 0.0  # how long one instance stayed up in the soak (0: no soak)

    def add(self, other: RunReport) -> None:
        """Another run's figures added to these (the line of all runs)."""
        for name in _SUMMED:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, name, mine + theirs)


# What the line of all runs adds up (as it always has: not the holding plays, so that line leaves them out).
_SUMMED = (
    "seconds",
    "episodes",
    "ticks",
    "faults",
    "kills",
    "exits",
    "protections",
    "exits_refused",
    "safety_held",
    "safety_orders",
    "safety_closes",
    "entries_not_placed",
    "basket_breaches",
    "basket_exits",
    "latencies",
    "wall_latencies",
    "restart_to_live",
    "violations",
)


@dataclass
class ChaosReport:
    config: ChaosConfig
    runs: list[RunReport] = field(default_factory=list)

    @property
    def violations(self) -> list[Violation]:
        return [v for r in self.runs for v in r.violations]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def _counts(counter: Counter[str], keys: Iterable[str] | None = None) -> str:
    items = [(k, counter[k]) for k in keys] if keys is not None else sorted(counter.items())
    return ", ".join(f"{k} {v}" for k, v in items if v) or "none"


def describe(report: RunReport, config: ChaosConfig) -> list[str]:
    e = report.episodes
    lat = report.latencies
    lines = [
        f"run {report.run}: seed {report.seed}, {report.seconds:.0f} s, "
        f"{e['kite'] + e['upstox']} positions (kite {e['kite']}, upstox {e['upstox']}; long {e['long']}, "
        f"short {e['short']}; MIS {e['MIS']}, CNC {e['CNC']}, NRML {e['NRML']}; "
        f"{e['holding']} holdings traded outside; {e['protected twice']} protected twice), "
        f"{report.ticks} ticks",
        f"  faults: {_counts(report.faults)}",
        f"  kills: SIGKILL {report.kills['SIGKILL']}, SIGTERM {report.kills['SIGTERM']} "
        f"({_counts(report.kills, KILL_REASONS)})",
        f"  exits: {report.exits} sent by the app for {report.protections} protections; "
        f"{report.exits_refused} refused by an injected rejection (EXIT_FAILED + alert; the trader closed it)"
        + (f"; {report.entries_not_placed} entries not placed" if report.entries_not_placed else ""),
    ]
    if report.safety_held:
        lines.append(
            f"  broker-held safety stops: {report.safety_held} protections held one "
            f"({report.safety_orders} SL-M orders and GTTs in all); "
            f"{report.safety_closes} closed by the broker-held stop"
        )
    if report.holdings:
        lines.append(f"  holdings traded outside: {_counts(report.holdings)}")
    if report.basket_breaches or report.basket_exits:
        lines.append(
            f"  baskets: {report.basket_breaches} breached, "
            f"{report.basket_exits} protections exited by a basket"
        )
    if lat:
        lines.append(
            f"  stop crossed -> flat, seconds of working feed: median {statistics.median(lat):.2f}, "
            f"p95 {_pct(lat, 95):.2f}, max {max(lat):.2f} (budget {config.flat_budget:g}); "
            f"wall clock max {max(report.wall_latencies):.1f}"
        )
    if report.restart_to_live:
        r = report.restart_to_live
        lines.append(
            f"  process start -> both feeds live: median {statistics.median(r):.2f} s, max {max(r):.2f} s"
        )
    lines.append(f"  violations: {len(report.violations)}")
    lines += [f"    {v}" for v in report.violations]
    return lines
