"""ExitJobs without Qt: the exit path's jobs driven on plain threads, their outcomes as plain events."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Order, OrderRequest, OrderStatus, Position
from trailstop_gui.services.brokers.errors import RateLimitedError, RejectedError, TemporaryError
from trailstop_gui.services.exit_jobs import ExitJobs, RetryPolicy, ThreadRunner


def test_the_exit_path_logic_loads_without_qt() -> None:
    modules = ["exit_jobs", "exit_decisions", "exit_watch", "retry", "reconciler", "safety_stop"]
    code = "; ".join(f"import trailstop_gui.services.{m}" for m in modules)
    code += (
        "; import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class Broker:
    """Holds 3 INFY; its exit fills at once at 1460. ``place_errors`` are raised by the first sends."""

    capabilities = KITE_CAPABILITIES

    def __init__(self, place_errors: list[Exception] | None = None, positions_error: Exception | None = None):
        self.place_errors = place_errors or []
        self.positions_error = positions_error
        self.placed: list[OrderRequest] = []

    def positions(self) -> list[Position]:
        if self.positions_error is not None:
            raise self.positions_error
        return [Position("INFY", "NSE", 408065, "NSE:INFY", 3, 1500.0, Product.MIS, "MIS")]

    def holdings(self) -> list[Any]:
        return []

    def orders(self) -> list[Order]:
        return []

    def place_order(self, request: OrderRequest) -> str:
        if self.place_errors:
            raise self.place_errors.pop(0)
        self.placed.append(request)
        return f"X{len(self.placed)}"

    def order(self, order_id: str) -> Order:
        return Order(
            order_id=order_id,
            status=OrderStatus.COMPLETE,
            raw_status="COMPLETE",
            side=Side.SELL,
            order_type=None,
            product=Product.MIS,
            raw_product="MIS",
            symbol="INFY",
            exchange="NSE",
            instrument=408065,
            quantity=3,
            filled_quantity=3,
            pending_quantity=0,
            average_price=1460.0,
            price=0.0,
            trigger_price=0.0,
            tag=None,
            status_message=None,
            placed_at=None,
            updated_at=None,
        )


class Events:
    """Records what the jobs report, in order (the Qt adapter turns the same calls into signals)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.seen.append((name, *args))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.seen]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProtectionStore]:
    s = ProtectionStore(tmp_path / "jobs.db")
    yield s
    s.close()


def run_exit(store: ProtectionStore, broker: Broker, **policy: Any) -> tuple[int, Events, list[float]]:
    account = store.add_account("kite", "Zerodha")
    p = store.create_protection(
        account_id=account.id,
        broker="kite",
        instrument=408065,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=3,
        filled_quantity=3,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        entry_price=1500.0,
        status=Status.OPEN,
    )
    store.transition(p.id, Status.TRIGGERED, reason="stop")
    events, sleeps = Events(), []
    jobs = ExitJobs(
        store,
        lambda _account: broker,  # type: ignore[arg-type, return-value]
        events=events,
        runner=ThreadRunner(2),
        policy=RetryPolicy(poll_interval=0.01, **policy),
        sleep=sleeps.append,
    )
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


def test_a_crashing_job_reports_itself_and_frees_the_protection(store: ProtectionStore) -> None:
    broker = Broker(positions_error=RuntimeError("odd reply"))
    pid, events, _ = run_exit(store, broker)
    assert events.seen == [("exit_failed", pid, "internal error: odd reply"), ("job_finished", pid)]
    assert store.get(pid).status is Status.TRIGGERED and broker.placed == []
