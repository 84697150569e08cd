"""The short chaos run of ``make test`` (``make chaos`` is the long one): it must end with 0 violations.

See bench/chaos.py for what runs and what is checked. ``TRAILSTOP_CHAOS_SEED`` picks another seed and
``TRAILSTOP_CHAOS_SECONDS`` another length; the run's figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow


@pytest.mark.timeout(420)
def test_short_chaos_run_has_no_violations(tmp_path: Path) -> None:
    config = ChaosConfig(
        seed=int(os.environ.get("TRAILSTOP_CHAOS_SEED", "20240")),
        runs=1,
        duration=float(os.environ.get("TRAILSTOP_CHAOS_SECONDS", "75")),
        settle_timeout=60.0,
    )
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        print(line)

    report = run_chaos(config, workdir=tmp_path, out=out)
    (run,) = report.runs
    assert run.episodes["kite"] and run.episodes["upstox"], "both brokers must be exercised"
    assert run.episodes["long"] and run.episodes["short"] and run.episodes["MIS"] and run.episodes["CNC"]
    assert run.kills["SIGKILL"] > 0 and len(run.faults) >= 5 and run.exits > 0
    assert report.violations == [], "\n".join(lines)
