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
from trailstop_gui.services.retry import Backoff, call_with_retries, polls


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


def test_polls_pause_by_the_backoff_until_the_window_has_passed_on_the_clock() -> None:
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds + 0.5  # each look takes 0.5 s of its own: the clock counts it

    looks = list(polls(Backoff(0.2, 1.0), 3.0, sleep=sleep, clock=lambda: now[0]))
    # Looks at 0, 0.7, 1.6 and 2.9 s; the next would be at 4.4 s, past the window. Pauses alone (2.4 s)
    # would have allowed a fifth.
    assert looks == [0, 1, 2, 3]
    assert pauses == pytest.approx([0.2, 0.4, 0.8, 1.0])


def test_polls_without_a_clock_count_the_pauses_alone() -> None:
    pauses: list[float] = []
    looks = list(polls(Backoff(0.2, 1.0), 4.0, sleep=pauses.append))
    # 0.2 + 0.4 + 0.8 + 1.0 + 1.0 = 3.4 < 4.0: a sixth look, then 4.4 >= 4.0 ends it.
    assert pauses == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert looks == [0, 1, 2, 3, 4, 5]


def test_polls_stop_when_the_caller_breaks_without_another_pause() -> None:
    pauses: list[float] = []
    for look in polls(Backoff(0.2, 2.0), 20.0, sleep=pauses.append):
        if look == 2:
            break
    assert pauses == pytest.approx([0.2, 0.4])
