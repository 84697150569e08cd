"""A follow-up of a watched exit that cannot reach the broker (or finds the token expired) is not a crash:
the protection stays in flight and the reconciler finishes it, the exit's tag looked up first."""

from __future__ import annotations

import pytest

from tests.unit.services.test_exit_jobs_own_sale import Broker, Safety, order, run_exit
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import OrderStatus, Position
from trailstop_gui.services.brokers.errors import AuthError, TemporaryError


class ReadsFailAfterTheSend(Broker):
    """The exit goes out, then is refused (REJECTED); the fresh positions read of the refusal's recheck
    meets ``failure`` (the token expired meanwhile, or the broker stopped answering)."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(order("T1", OrderStatus.COMPLETE, tag="mine", filled=3, price=1457.0))
        self.failure = failure

    def positions(self) -> list[Position]:
        if self.placed:
            raise self.failure
        return super().positions()


@pytest.mark.parametrize(
    ("failure", "reported"),
    [
        (AuthError("TokenException: Incorrect `api_key` or `access_token`."), "login_needed"),
        (TemporaryError("HTTP 503"), "exit_delayed"),
    ],
    ids=["token expired", "broker unreachable"],
)
def test_a_refused_delivery_exit_whose_recheck_fails_is_left_to_the_reconciler(
    store: ProtectionStore,
    failure: Exception,
    reported: str,
) -> None:
    """Found by chaos seed 31021: the recheck's read met an expired token; the job was logged as crashed
    (an ERROR the checker counts) and the trader told "internal error"."""
    broker = ReadsFailAfterTheSend(failure)
    pid, events = run_exit(store, broker, Safety(None))
    assert "exit_failed" not in events.kinds() and reported in events.kinds()
    p = store.get(pid)
    assert p.status is Status.EXITING and p.exit_order_id == "X1"  # the reconciler resumes it
    assert [r.quantity for r in broker.placed] == [3]
