"""The short chaos run with an order route that goes off and on (``make test``; ``make chaos`` is long).

Its own module, so that pytest-xdist (``--dist loadfile``) runs it beside the other short chaos runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow


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
        duration=float(os.environ.get("TRAILSTOP_CHAOS_ROUTE_SECONDS", "25")),
        settle_timeout=60.0,
        route_flaps=True,
        route_every=(4.0, 9.0),
    )
    lines: list[str] = []
    report = run_chaos(config, workdir=tmp_path, out=lines.append)
    (run,) = report.runs
    assert run.faults["route_off"] >= 2 and run.exits > 0
    assert report.violations == [], "\n".join(lines)
