"""Service tests run against the loopback simulator on a background thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    """A simulator whose prices move only when a test moves them."""
    handle = start_simulator(seed=1, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()


def control(sim: SimulatorHandle, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the simulator's control API the way any client would: over HTTP."""
    url = f"{sim.url}/_sim/{path}"
    headers = sim.control_headers
    response = (
        requests.post(url, json=body, headers=headers, timeout=5)
        if body is not None
        else requests.get(url, headers=headers, timeout=5)
    )
    response.raise_for_status()
    return response.json()
