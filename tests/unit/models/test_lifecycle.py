"""The protection state machine: every legal transition of DESIGN.md, and nothing else."""

from __future__ import annotations

import itertools

import pytest

from trailstop_gui.models.domain import Status
from trailstop_gui.models.lifecycle import (
    LEGAL_TRANSITIONS,
    LIVE,
    TERMINAL,
    IllegalTransition,
    can_transition,
    check_transition,
)

S = Status
DESIGN_EDGES = {
    (S.PENDING, S.OPEN),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.REJECTED),
    (S.OPEN, S.TRIGGERED),
    (S.OPEN, S.CLOSED),
    (S.OPEN, S.REMOVED),
    (S.TRIGGERED, S.EXITING),
    (S.EXITING, S.CLOSED),
    (S.EXITING, S.EXIT_FAILED),
    (S.EXIT_FAILED, S.TRIGGERED),
    # crash recovery: TRIGGERED and the position already flat
    (S.TRIGGERED, S.CLOSED),
}


@pytest.mark.parametrize(("current", "target"), sorted(DESIGN_EDGES))
def test_design_edges_are_legal(current: Status, target: Status) -> None:
    assert can_transition(current, target)
    check_transition(current, target)


def test_terminal_states_go_nowhere() -> None:
    assert {S.CLOSED, S.CANCELLED, S.REJECTED, S.REMOVED} == TERMINAL
    for current, target in itertools.product(TERMINAL, Status):
        with pytest.raises(IllegalTransition, match=f"{current.value} -> {target.value}"):
            check_transition(current, target, 7)


def test_no_exit_can_be_decided_twice() -> None:
    # Once TRIGGERED, the only way back to TRIGGERED is through EXIT_FAILED (a user's retry).
    assert not can_transition(S.TRIGGERED, S.TRIGGERED)
    assert not can_transition(S.EXITING, S.TRIGGERED)
    assert not can_transition(S.EXITING, S.OPEN)
    assert not can_transition(S.TRIGGERED, S.OPEN)


def test_every_state_is_covered_and_live_is_the_rest() -> None:
    assert set(LEGAL_TRANSITIONS) == set(Status)
    assert set(Status) - TERMINAL == LIVE
