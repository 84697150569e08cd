"""Every service module on the exit path (a tick's way to the exit order, and back from the broker) has a
test module of its own name: tests/unit/services/ when it runs without Qt, tests/services/ when it needs Qt
or the simulator. A newcomer finds the tests of services/X.py in test_X.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "trailstop_gui" / "services"
EXIT_PATH = (
    "feed_worker",
    "protection_service",
    "session",
    "exit_jobs",
    "exit_executor",
    "exit_decisions",
    "exit_watch",
    "exit_send_log",
    "retry",
    "reconciler",
    "positions",
    "safety_stop",
)


@pytest.mark.parametrize("module", EXIT_PATH)
def test_each_exit_path_module_has_its_own_test_module(module: str) -> None:
    assert (SERVICES / f"{module}.py").is_file(), f"services/{module}.py is gone: update this list"
    homes = [ROOT / "tests" / "unit" / "services", ROOT / "tests" / "services"]
    found = [home / f"test_{module}.py" for home in homes if (home / f"test_{module}.py").is_file()]
    assert found, f"services/{module}.py has no test_{module}.py in tests/unit/services or tests/services"
