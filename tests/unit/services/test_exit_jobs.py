"""ExitJobs without Qt: the exit path's jobs driven on plain threads, their outcomes as plain events."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.factories import Events, exit_jobs, triggered
from tests.factories import FakeBroker as Broker
from trailstop_gui.models.domain import Side, Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.errors import (
    RateLimitedError,
    RejectedError,
    TemporaryError,
    UnregisteredIPError,
)

REFUSED_IP = "orders from this IP are refused by Zerodha: register it or set an order route"


def ip_refusal() -> UnregisteredIPError:
    # What errors.map_kite_exception makes of the simulator's (and Kite's) 403 "IP (...) is not allowed".
    return UnregisteredIPError("IP (127.0.0.1) is not allowed", broker="Zerodha", status=403)


def test_the_exit_path_logic_loads_without_qt() -> None:
    modules = ["exit_jobs", "exit_decisions", "exit_watch", "retry", "reconciler", "safety_stop"]
    code = "; ".join(f"import trailstop_gui.services.{m}" for m in modules)
    code += (
        "; import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def run_exit(store: ProtectionStore, broker: Broker, **policy: Any) -> tuple[int, Events, list[float]]:
    p = triggered(store)
    jobs, events, sleeps = exit_jobs(store, broker, **policy)
    try:
        assert jobs.submit(p.id)
        assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    return p.id, events, sleeps


def test_an_exit_is_sent_watched_and_closed_on_plain_threads(store: ProtectionStore) -> None:
    broker = Broker()
    pid, events, sleeps = run_exit(store, broker)
    assert [(r.side, r.quantity) for r in broker.placed] == [(Side.SELL, 3)]
    assert events.seen == [("exit_placed", pid, "X1"), ("exit_filled", pid, 1460.0), ("job_finished", pid)]
    assert store.get(pid).status is Status.CLOSED and sleeps == []


def test_temporary_errors_past_the_attempts_leave_it_triggered_for_the_reconciler(
    store: ProtectionStore,
) -> None:
    broker = Broker(place_errors=[TemporaryError("timeout")] * 3)
    pid, events, sleeps = run_exit(store, broker, attempts=3)
    assert broker.placed == [] and store.get(pid).status is Status.TRIGGERED
    assert sleeps == pytest.approx([0.2, 0.4])
    assert events.kinds() == ["exit_delayed", "job_finished"]
    assert len(store.events(protection_id=pid, kinds=["exit_not_sent"])) == 3


def test_a_429_waits_what_it_asks_but_never_past_the_policy_ceiling(store: ProtectionStore) -> None:
    broker = Broker(place_errors=[RateLimitedError("429", retry_after=9.0)])
    pid, events, sleeps = run_exit(store, broker, max_delay=5.0)
    assert sleeps == [5.0] and store.get(pid).status is Status.CLOSED
    assert events.kinds() == ["exit_placed", "exit_filled", "job_finished"]


def test_a_refusal_is_exit_failed_with_its_reason(store: ProtectionStore) -> None:
    broker = Broker(place_errors=[RejectedError("insufficient margin")])
    pid, events, sleeps = run_exit(store, broker)
    assert store.get(pid).status is Status.EXIT_FAILED and sleeps == []
    assert events.kinds() == ["exit_failed", "job_finished"] and "insufficient margin" in events.seen[0][2]


def test_an_exit_refused_for_the_ip_is_named_at_the_first_refusal_and_sent_once_it_passes(
    store: ProtectionStore,
) -> None:
    # The check passed at login; the IP changed later in the day. The first refusal is alerted at once in
    # the trader's words (an exit is urgent), and the retry that gets through sends it, once.
    broker = Broker(place_errors=[ip_refusal(), ip_refusal()])
    pid, events, sleeps = run_exit(store, broker)
    assert events.kinds() == ["exit_delayed", "exit_placed", "exit_filled", "job_finished"]
    assert REFUSED_IP in events.seen[0][2]
    assert len(broker.placed) == 1 and store.get(pid).status is Status.CLOSED and len(sleeps) == 2


def test_an_exit_refused_for_the_ip_past_the_attempts_is_alerted_once_per_exit(
    store: ProtectionStore,
) -> None:
    broker = Broker(place_errors=[ip_refusal()] * 6)
    p = triggered(store)
    jobs, events, _sleeps = exit_jobs(store, broker, attempts=3)
    try:
        for _job in range(2):  # the job, then the reconciler's resume of it: still refused
            assert jobs.submit(p.id, recover=True)
            assert jobs.wait_idle(10)
        assert broker.placed == [] and store.get(p.id).status is Status.TRIGGERED
        assert events.kinds() == ["exit_delayed", "job_finished", "job_finished"]
        assert REFUSED_IP in events.seen[0][2]
        # The journal names the refusal at the end of each job too, not just "after 3 attempts".
        delays = [e.message for e in store.events(protection_id=p.id, kinds=["exit_delayed"])]
        assert len(delays) == 3 and all(REFUSED_IP in why for why in delays)
        # Sent at last: a later refusal of the same protection would be alerted again.
        assert jobs.submit(p.id, recover=True) and jobs.wait_idle(10)
        assert len(broker.placed) == 1 and store.get(p.id).status is Status.CLOSED
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)


class RefusedSafetyStop:
    """A broker-held SL-M that the exit would modify to MARKET: the modify is refused for the IP."""

    def prepare_exit(self, p: Any, broker: Any, quantity: int) -> Any:
        raise ip_refusal()


def test_a_safety_stop_exit_refused_for_the_ip_is_named_once_per_exit(store: ProtectionStore) -> None:
    broker = Broker()
    p = triggered(store)
    jobs, events, _sleeps = exit_jobs(store, broker)
    jobs.safety = RefusedSafetyStop()  # type: ignore[assignment]
    try:
        for _job in range(2):  # the job, then the reconciler's resume of it
            assert jobs.submit(p.id, recover=True)
            assert jobs.wait_idle(10)
    finally:
        jobs.stopping.set()
        jobs.shutdown(5_000)
    assert events.kinds() == ["exit_delayed", "job_finished", "job_finished"]
    assert events.seen[0][2] == f"the exit was not sent: {REFUSED_IP}"
    assert broker.placed == [] and store.get(p.id).status is Status.TRIGGERED


def test_a_crashing_job_reports_itself_and_frees_the_protection(store: ProtectionStore) -> None:
    broker = Broker(positions_error=RuntimeError("odd reply"))
    pid, events, _ = run_exit(store, broker)
    assert events.seen == [("exit_failed", pid, "internal error: odd reply"), ("job_finished", pid)]
    assert store.get(pid).status is Status.TRIGGERED and broker.placed == []
