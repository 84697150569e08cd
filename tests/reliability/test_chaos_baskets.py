"""A short chaos run with baskets: every account's positions in one basket whose breach exits them all,
often with a SIGKILL in the middle of the basket's exits; the checker counts exits per position."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow


@pytest.mark.timeout(420)
def test_short_chaos_run_with_baskets_has_no_violations(tmp_path: Path) -> None:
    config = ChaosConfig(
        seed=int(os.environ.get("TRAILSTOP_CHAOS_SEED", "20240")) + 2,
        runs=1,
        duration=float(os.environ.get("TRAILSTOP_CHAOS_BASKET_SECONDS", "40")),
        settle_timeout=60.0,
        baskets=True,
        basket_max_loss=800.0,
    )
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        print(line)

    report = run_chaos(config, workdir=tmp_path, out=out)
    (run,) = report.runs
    assert run.basket_breaches >= 1 and run.basket_exits >= 1, "\n".join(lines)
    assert run.kills["SIGKILL"] > 0 and run.exits > 0
    assert report.violations == [], "\n".join(lines)
