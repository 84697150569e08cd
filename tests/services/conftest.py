"""Service tests run against the loopback simulator on a background thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests

from trailstop_gui.services.exit_executor import RetryPolicy
from trailstop_gui.services.session import REQUEST_TIMEOUT
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator

if TYPE_CHECKING:
    from pytestqt.qtbot import QtBot

    from tests.services.test_protection_flow import Rig
    from trailstop_gui.models.store import ProtectionStore

BROKERS = ["kite", "upstox"]


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


@pytest.fixture
def rig_policy() -> RetryPolicy | None:
    """The ``rig`` service's retry policy (None: the Rig's own); a module overrides this fixture."""
    return None


@pytest.fixture
def rig_flat_confirm() -> float | None:
    """The ``rig`` reconciler's flat confirmation (None: its retry policy's); a module overrides this."""
    return None


@pytest.fixture
def rig_request_timeout() -> float:
    """How long the ``rig`` session's REST calls may take (the app's); a test may parametrize this."""
    return REQUEST_TIMEOUT


@pytest.fixture(params=BROKERS)
def rig(
    request: pytest.FixtureRequest,
    simulator: SimulatorHandle,
    store: ProtectionStore,
    qtbot: QtBot,
    rig_policy: RetryPolicy | None,
    rig_flat_confirm: float | None,
    rig_request_timeout: float,
) -> Iterator[Rig]:
    """The services logged in to the simulator (test_protection_flow.Rig), once per broker."""
    from tests.services.test_protection_flow import Rig  # that module imports this one: not at the top

    r = Rig(
        simulator,
        store,
        request.param,
        qtbot,
        policy=rig_policy,
        flat_confirm=rig_flat_confirm,
        request_timeout=rig_request_timeout,
    )
    yield r
    r.close()
