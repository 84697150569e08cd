"""The short chaos run with every protection also holding a broker-held safety stop (``make test``;
``make chaos-safety`` is the long one). Its own module, so that pytest-xdist runs it beside the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.test_chaos import short_run_has_no_violations

pytestmark = pytest.mark.slow


@pytest.mark.timeout(420)
def test_short_chaos_run_with_safety_stops_has_no_violations(tmp_path: Path) -> None:
    short_run_has_no_violations(tmp_path, safety=True)
