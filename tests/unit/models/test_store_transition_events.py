"""Journal events carried by a transition (TransitionRequest.events) commit with it, or not at all."""

from __future__ import annotations

from tests.unit.models.test_store import new_protection
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore, TransitionRequest


def test_events_ride_on_their_transition_and_vanish_with_a_refused_one(store: ProtectionStore) -> None:
    won = new_protection(store)
    lost = new_protection(store, account_id=won.account_id)
    store.transition(lost.id, Status.TRIGGERED, reason="stop")  # another thread got there first
    marker = (("exit_sending", "with the trigger"),)
    results = store.transition_many(
        [
            TransitionRequest(won.id, Status.TRIGGERED, expected=Status.OPEN, events=marker),
            TransitionRequest(lost.id, Status.TRIGGERED, expected=Status.OPEN, events=marker),
        ]
    )
    assert not isinstance(results[0], Exception) and isinstance(results[1], ConcurrentTransition)
    events = store.events(protection_id=won.id, kinds=["transition", "exit_sending"])
    assert [(e.kind, e.new or e.message) for e in events][-2:] == [
        ("transition", "TRIGGERED"),
        ("exit_sending", "with the trigger"),
    ]
    assert events[-1].account_id == won.account_id
    assert store.events(protection_id=lost.id, kinds=["exit_sending"]) == []
