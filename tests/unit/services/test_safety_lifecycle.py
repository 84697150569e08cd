"""The safety stop's transition table: every legal (state, event) -> state, and every other one raises."""

from __future__ import annotations

import pytest

from trailstop_gui.models.domain import SafetyState
from trailstop_gui.services.safety_lifecycle import (
    TRANSITIONS,
    IllegalSafetyTransition,
    SafetyEvent,
    allowed,
    next_state,
)

OFF, PLACING, PLACED, MOVING, MISSING, FIRED, EXIT, REMOVED = (
    SafetyState.OFF,
    SafetyState.PLACING,
    SafetyState.PLACED,
    SafetyState.MOVING,
    SafetyState.MISSING,
    SafetyState.FIRED,
    SafetyState.EXIT,
    SafetyState.REMOVED,
)
E = SafetyEvent

# Written out by hand (not derived from the module): the table must say exactly this.
EXPECTED: dict[tuple[SafetyState, SafetyEvent], SafetyState] = {
    **{(s, E.PLACE): PLACING for s in (OFF, PLACING, PLACED, MOVING, MISSING, REMOVED)},
    **{(s, E.ACCEPTED): PLACED for s in (PLACING, PLACED, MOVING, MISSING, OFF, REMOVED, FIRED)},
    **{(s, E.MOVE): MOVING for s in (PLACING, PLACED, MOVING, MISSING)},
    (PLACED, E.SETTLED): PLACED,
    (MOVING, E.SETTLED): PLACED,
    (MOVING, E.REPLACE): PLACING,
    **{(s, E.LOST): MISSING for s in (PLACING, PLACED, MOVING, MISSING, FIRED)},
    **{(s, E.FIRE): FIRED for s in (PLACING, PLACED, MOVING, MISSING, FIRED, EXIT, OFF)},
    # REMOVED too: a stop taken away may have sold just before it went (the reconciler finds it so).
    **{(s, E.FILLED): FIRED for s in SafetyState},
    **{(s, E.TO_EXIT): EXIT for s in (PLACING, PLACED, MOVING, MISSING, FIRED, EXIT, OFF)},
    **{(s, E.REMOVE): REMOVED for s in (PLACING, PLACED, MOVING, MISSING, FIRED, EXIT, OFF)},
    **{(s, E.SWITCH_OFF): OFF for s in SafetyState},
    **{(s, E.GIVE_UP): OFF for s in (PLACING, PLACED, MOVING, MISSING)},
}


def test_the_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("move", "target"), sorted(EXPECTED.items()), ids=lambda x: str(x))
def test_every_legal_transition(move: tuple[SafetyState, SafetyEvent], target: SafetyState) -> None:
    state, event = move
    assert allowed(state, event)
    assert next_state(state, event, 7) is target


ILLEGAL = sorted((s, e) for s in SafetyState for e in SafetyEvent if (s, e) not in EXPECTED)


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda x: str(x))
def test_every_other_transition_raises(state: SafetyState, event: SafetyEvent) -> None:
    assert not allowed(state, event)
    with pytest.raises(IllegalSafetyTransition) as raised:
        next_state(state, event, 7)
    assert (raised.value.state, raised.value.event, raised.value.protection_id) == (state, event, 7)
    assert f"protection 7: safety stop cannot {event.value} when {state.value}" == str(raised.value)


def test_the_usual_life_of_a_safety_stop() -> None:
    """Placed, moved twice (once near the cap: replaced), then turned into the exit; and one that fired."""
    state = OFF
    for event in (E.PLACE, E.ACCEPTED, E.MOVE, E.SETTLED, E.MOVE, E.REPLACE, E.ACCEPTED, E.TO_EXIT):
        state = next_state(state, event)
    assert state is EXIT
    state = PLACED
    for event in (E.FIRE, E.LOST, E.PLACE, E.ACCEPTED, E.REMOVE):  # its order was cancelled: placed again
        state = next_state(state, event)
    assert state is REMOVED


def test_nonsense_is_refused() -> None:
    assert ILLEGAL  # the table is not "anything goes"
    for state, event in [
        (REMOVED, E.FIRE),
        (REMOVED, E.MOVE),
        (EXIT, E.ACCEPTED),
        (EXIT, E.PLACE),
        (FIRED, E.MOVE),
    ]:
        with pytest.raises(IllegalSafetyTransition):
            next_state(state, event)
