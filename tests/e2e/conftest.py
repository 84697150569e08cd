"""What the headless end-to-end tests share: a simulator of their own, no price walk, instant fills."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    handle = start_simulator(seed=3, auto=False, fill_delay=0.0)
    yield handle
    handle.stop()
