"""build_runtime: a run against a simulator never loads, protects or sends for a real account."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from trailstop_gui.app import main
from trailstop_gui.models.domain import TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.runtime import build_runtime
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.settings import data_dir, database_path
from trailstop_gui.simulator.runner import SimulatorHandle


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    # build_runtime replaces the root logger's handlers with the app's own; give pytest's back.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def a_real_account(folder: Path) -> int:
    """A Zerodha account of the data folder, logged in (a token in the keyring), as a real user has it."""
    store = ProtectionStore(database_path(data_dir(str(folder))))
    try:
        account = store.add_account(
            "kite",
            "My Zerodha",
            user_id="AB1234",
            api_key="realapikey",
            redirect_url="http://127.0.0.1:5000/",
        )
    finally:
        store.close()
    SecretStore().set(account.id, "access_token", "a-real-access-token")
    return account.id


@pytest.mark.parametrize("paper", [False, True])
def test_a_simulator_run_leaves_real_accounts_alone(
    simulator: SimulatorHandle, tmp_path: Path, qtbot: QtBot, paper: bool
) -> None:
    real = a_real_account(tmp_path)
    runtime = build_runtime(
        data_directory=str(tmp_path),
        sim_url=simulator.url,
        brokers=("kite", "upstox"),
        auto_protect=TrailRule.percent(2.0),
        paper=paper,
    )
    try:
        sessions = runtime.service.sessions
        assert real not in sessions
        assert real not in runtime.service.reconciler.auto_protect
        assert sorted(s.account.broker for s in sessions.values()) == ["kite", "upstox"]
        assert all(s.account.api_root == simulator.url for s in sessions.values())
        assert all(s.account.is_paper is paper for s in sessions.values())
        assert set(runtime.service.reconciler.auto_protect) == set(sessions)
        # The real account is still stored, untouched.
        assert real in {a.id for a in runtime.store.accounts()}
    finally:
        runtime.close()


def test_a_paper_run_then_a_live_simulator_run_keep_their_accounts_apart(
    simulator: SimulatorHandle, tmp_path: Path, qtbot: QtBot
) -> None:
    paper = build_runtime(data_directory=str(tmp_path), sim_url=simulator.url, paper=True)
    paper_ids = set(paper.service.sessions)
    paper.close()
    live = build_runtime(data_directory=str(tmp_path), sim_url=simulator.url)
    try:
        assert paper_ids.isdisjoint(live.service.sessions)
        assert not any(s.account.is_paper for s in live.service.sessions.values())
    finally:
        live.close()


def test_a_run_without_a_simulator_loads_real_accounts(tmp_path: Path, qtbot: QtBot) -> None:
    real = a_real_account(tmp_path)
    runtime = build_runtime(data_directory=str(tmp_path))
    try:
        assert list(runtime.service.sessions) == [real]
    finally:
        runtime.close()


def test_paper_without_a_simulator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--paper"):
        build_runtime(data_directory=str(tmp_path), paper=True)
    with pytest.raises(SystemExit) as exited:
        main(["--headless", "--paper", "--data-dir", str(tmp_path)])
    assert exited.value.code == 2


def test_the_next_start_reads_the_exit_send_log_of_the_last(tmp_path: Path, qtbot: QtBot) -> None:
    """The restart's look-up (services/exit_send_log.py) needs the previous run's record and which journal
    entries were written before it started."""
    first = build_runtime(data_directory=str(tmp_path))
    try:
        send_log = first.service.executor.send_log
        assert send_log is not None and send_log.previous is None
        send_log.sending()
        send_log.ended()
        first.store.journal("exit_sending", message="a marker of the first run")
        marker = first.store.last_event_id()
    finally:
        first.close()
    second = build_runtime(data_directory=str(tmp_path))
    try:
        send_log = second.service.executor.send_log
        assert send_log is not None and send_log.first_event_id >= marker
        quiet = send_log.seconds_quiet()
        assert quiet is not None and 0.0 <= quiet < 60.0
        assert (data_dir(str(tmp_path)) / "exit-sends").stat().st_mode & 0o777 == 0o600
    finally:
        second.close()


def test_a_route_that_works_again_reconciles_its_account_at_once(
    tmp_path: Path, qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exits an IP refusal held back go out when the route is restored, not at the next 30 s reconcile."""
    real = a_real_account(tmp_path)
    runtime = build_runtime(data_directory=str(tmp_path))
    try:
        asked: list[int] = []
        monkeypatch.setattr(runtime.service, "_reconcile_now", asked.append)
        runtime.routes.route_restored.emit(real)
        qtbot.waitUntil(lambda: asked == [real], timeout=5_000)
    finally:
        runtime.close()
