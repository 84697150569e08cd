"""Suite-wide set-up: Qt renders offscreen (no display in CI); an in-memory keyring for every test; the
run fails if it opened a file beside the repository (a clone has nothing there), in every xdist worker too."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keyring
import keyring.backend
import pytest
from pytestqt.qt_compat import qt_api

from tests.outside_reads import OutsideReads

if TYPE_CHECKING:
    from trailstop_gui.models.store import ProtectionStore

# Before any Qt import: pytest-qt creates the QApplication lazily, so this is early enough.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Installed while conftest loads, before any test module is imported (module-level reads count too).
OUTSIDE_READS = OutsideReads.for_this_interpreter(Path(__file__).resolve().parents[1]).install()


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        # An xdist worker: its reads travel to the controller, which fails the run and names them.
        workeroutput["outside_reads"] = sorted(OUTSIDE_READS.paths)
        return
    OUTSIDE_READS.fail_session(session)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist it is never called
def pytest_testnodedown(node: Any, error: object) -> None:
    OUTSIDE_READS.paths.update(getattr(node, "workeroutput", {}).get("outside_reads", ()))


# A test that takes one of pytest-qt's fixtures needs a QApplication: marked ``qt``, so that ``make unit``
# (``-m "not qt"``) runs only what needs no Qt event loop.
QT_FIXTURES = frozenset({"qtbot", "qapp", "qtmodeltester", "qtlog"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if QT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.qt)
    if hasattr(config, "workerinput"):
        _longest_modules_first(items)


def _expected_seconds(item: pytest.Item) -> float:
    """What a test's own marks say of its length: its timeout, else a guess for the slow tier."""
    timeout = item.get_closest_marker("timeout")
    if timeout is not None and timeout.args:
        return float(timeout.args[0])
    return 60.0 if item.get_closest_marker("slow") is not None else 0.0


def _longest_modules_first(items: list[pytest.Item]) -> None:
    """On xdist workers: the work units whose tests run longest first (the chaos runs' lane, the frozen
    bundle), each kept whole. With ``--dist loadfile --no-loadscope-reorder`` the workers then start on them
    at once; by default xdist orders modules by their number of tests, which left a one-test chaos run for
    last. Every worker sorts the same collection the same way, as xdist requires."""
    longest: dict[str, float] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        longest[module] = max(longest.get(module, 0.0), _expected_seconds(item))
    units: dict[str, float] = {}
    for module, seconds in longest.items():
        units[_work_unit(module)] = units.get(_work_unit(module), 0.0) + seconds
    items.sort(key=lambda item: -units[_work_unit(item.nodeid)])  # stable: order within kept


def _work_unit(nodeid: str) -> str:
    """What one xdist worker runs whole: a test module, or every chaos run (``CHAOS_RUNS``)."""
    module = nodeid.split("::", 1)[0]
    return "chaos runs" if module in CHAOS_RUNS else module


# The short chaos runs: each drives a headless app, a simulator and its kills for a minute, with latency
# budgets (flat within 10 s of working feed). Side by side on three workers they took most of both cores
# between them, and one run went over its budget by 0.3 s; one after another on a lane of their own they
# take about four minutes, while the other workers run the rest of the suite.
CHAOS_RUNS = frozenset(
    f"tests/reliability/{name}.py"
    for name in ("test_chaos", "test_chaos_safety", "test_chaos_baskets", "test_chaos_route")
)


@pytest.hookimpl(optionalhook=True)  # an xdist hook, called on the controller with --dist loadfile
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the chaos runs in one work unit (one worker, one after another)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ChaosLaneScheduling(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return ChaosLaneScheduling(config, log)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    OUTSIDE_READS.write_summary(terminalreporter)


class MemoryKeyring(keyring.backend.KeyringBackend):
    """Keeps passwords in a dict: tests never touch (or need) the OS keyring."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.passwords.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    """A fresh store in the test's own folder, closed after the test."""
    # Imported here, not at the top, so that the app's module-level file reads happen under the guard.
    from trailstop_gui.models.store import ProtectionStore

    s = ProtectionStore(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture
def qasync_loop(qapp: qt_api.QtWidgets.QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """The app's asyncio loop (qasync's) over pytest-qt's QApplication, counted as running: pytest-qt's
    waitSignal and waitUntil spin Qt's loop, and with it the window's async flows."""
    from trailstop_gui.event_loop import caller_driven_event_loop

    with caller_driven_event_loop(qapp) as loop:
        yield loop


@pytest.fixture(autouse=True)
def _qasync_for_qt_tests(request: pytest.FixtureRequest) -> None:
    """Every test that uses Qt (``qtbot`` or ``qapp``) runs with the app's qasync loop, as the app does."""
    if {"qtbot", "qapp"} & set(request.fixturenames):
        request.getfixturevalue("qasync_loop")
