"""The short chaos run of ``make test`` (``make chaos`` is the long one): it must end with 0 violations.

See bench/chaos/__init__.py for what runs and what is checked. ``TRAILSTOP_CHAOS_SEED`` picks another seed and
``TRAILSTOP_CHAOS_SECONDS`` another length; the run's figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow


@pytest.mark.timeout(420)
@pytest.mark.parametrize("safety", [False, True], ids=["client-stops", "with-safety-stops"])
def test_short_chaos_run_has_no_violations(tmp_path: Path, safety: bool) -> None:
    """``with-safety-stops``: every protection also holds a broker-held stop (SL-M or GTT), which the
    crossings sometimes reach while the app is down: the broker's order is then the one exit."""
    config = ChaosConfig(
        seed=int(os.environ.get("TRAILSTOP_CHAOS_SEED", "20240")) + (1 if safety else 0),
        runs=1,
        duration=float(os.environ.get("TRAILSTOP_CHAOS_SECONDS", "75")),
        settle_timeout=60.0,
        safety=safety,
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
    assert run.episodes["holding"] == 8  # every demo holding of both brokers traded outside the app
    if safety:
        # (a protection whose stop is crossed right after adoption may end before its broker stop is placed)
        assert run.safety_held >= 0.8 * run.protections and run.safety_orders >= run.safety_held
    assert report.violations == [], "\n".join(lines)


@pytest.mark.timeout(300)
def test_chaos_with_an_order_route_that_goes_off_and_on(tmp_path: Path) -> None:
    """Orders only from registered IPs: the app's exits take a real SOCKS5 proxy on 127.0.0.2 that the chaos
    cuts and restores, besides every other fault and kill. Nothing may be lost or sent twice."""
    from tests.proxies import loopback_alias_works

    if not loopback_alias_works("127.0.0.3"):
        pytest.skip("needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")
    config = ChaosConfig(
        seed=int(os.environ.get("TRAILSTOP_CHAOS_SEED", "20240")) + 2,
        runs=1,
        duration=float(os.environ.get("TRAILSTOP_CHAOS_ROUTE_SECONDS", "40")),
        settle_timeout=60.0,
        route_flaps=True,
        route_every=(4.0, 9.0),
    )
    lines: list[str] = []
    report = run_chaos(config, workdir=tmp_path, out=lines.append)
    (run,) = report.runs
    assert run.faults["route_off"] >= 2 and run.exits > 0
    assert report.violations == [], "\n".join(lines)
