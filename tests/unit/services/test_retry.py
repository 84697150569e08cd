"""The one retry policy: backoff with a ceiling, a 429's Retry-After within it, give-up rules."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    RateLimitedError,
    RejectedError,
    TemporaryError,
)
from trailstop_gui.services.retry import Backoff, call_with_retries


def test_backoff_doubles_up_to_its_ceiling() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.nth(n) for n in range(5)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.next(0.8) == 1.0


def test_retry_after_lengthens_a_pause_but_never_past_the_ceiling() -> None:
    backoff = Backoff(0.2, 5.0)
    assert backoff.honour(0.2, RateLimitedError("slow down", retry_after=1.5)) == 1.5
    # The adapters cap the header at RETRY_AFTER_CAP (10 s); the policy holds an exit to its own ceiling.
    assert backoff.honour(0.2, RateLimitedError("slow down", retry_after=9.0)) == 5.0
    assert backoff.honour(3.0, RateLimitedError("slow down", retry_after=1.0)) == 3.0
    assert backoff.honour(0.2, RateLimitedError("slow down")) == 0.2
    assert backoff.honour(0.2, TemporaryError("timeout")) == 0.2


def failing(errors: list[Exception], result: str = "ok") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return calls, fn


def test_temporary_errors_are_retried_with_the_backoff_and_retry_after() -> None:
    sleeps: list[float] = []
    calls, fn = failing(
        [TemporaryError("timeout"), RateLimitedError("429", retry_after=2.0), TemporaryError("x")]
    )
    retried: list[int] = []
    result = call_with_retries(
        fn,
        attempts=5,
        backoff=Backoff(0.2, 5.0),
        sleep=sleeps.append,
        on_retry=lambda attempt, _exc: retried.append(attempt),
        honour_retry_after=True,
    )
    assert result == "ok" and len(calls) == 4 and retried == [1, 2, 3]
    # 0.2, then the 429 asks for 2 s (0.4 was next), then doubling goes on from there.
    assert sleeps == pytest.approx([0.2, 2.0, 4.0])


def test_reads_keep_their_own_backoff_whatever_a_429_asks() -> None:
    sleeps: list[float] = []
    _calls, fn = failing([RateLimitedError("429", retry_after=2.0), TemporaryError("x")])
    assert call_with_retries(fn, attempts=5, backoff=Backoff(0.2, 5.0), sleep=sleeps.append) == "ok"
    assert sleeps == pytest.approx([0.2, 0.4])


def test_the_last_temporary_error_is_raised_after_the_attempts() -> None:
    sleeps: list[float] = []
    calls, fn = failing([TemporaryError(str(n)) for n in range(5)])
    with pytest.raises(TemporaryError, match="2"):
        call_with_retries(fn, attempts=3, backoff=Backoff(0.1, 1.0), sleep=sleeps.append)
    assert len(calls) == 3 and sleeps == pytest.approx([0.1, 0.2])


def test_give_up_stops_at_once_and_other_errors_are_never_retried() -> None:
    sleeps: list[float] = []
    calls, fn = failing([AmbiguousError("reply lost")])
    with pytest.raises(AmbiguousError):
        call_with_retries(
            fn,
            attempts=5,
            backoff=Backoff(0.1, 1.0),
            sleep=sleeps.append,
            give_up=lambda exc: isinstance(exc, AmbiguousError),
        )
    assert len(calls) == 1 and sleeps == []
    calls, fn = failing([RejectedError("refused")])
    with pytest.raises(RejectedError):
        call_with_retries(fn, attempts=5, backoff=Backoff(0.1, 1.0), sleep=sleeps.append)
    assert len(calls) == 1 and sleeps == []
