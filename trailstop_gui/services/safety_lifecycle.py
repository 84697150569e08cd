"""The broker-held safety stop's state machine: which event moves which ``SafetyState`` where.

The protection's own status (models/lifecycle.py) says whether it is protected; ``SafetyState`` says where
its broker-held stop stands. Every change the safety stop manager makes goes through :func:`next_state`,
so a change this table does not list (a stop "fired" that was never placed, a move of a removed stop)
raises instead of being written::

    OFF|REMOVED|MISSING --place--> PLACING --accepted--> PLACED --move--> MOVING --settled--> PLACED
    (accepted from anything but EXIT: a stop of ours found at the broker after a crash is adopted)
                                   PLACING --refused--> MISSING --place--> PLACING ...
    MOVING --replace--> PLACING (cancelled near the modification cap, placed again at once)
    PLACED|MOVING --fire--> FIRED (its order is the exit)     PLACED|MOVING --to_exit--> EXIT (SL-M to MARKET)
    any --filled--> FIRED (the order it fired into filled: the protection is CLOSED on it)
    any held state --remove--> REMOVED     any --switch_off--> OFF     PLACED|MISSING --give_up--> OFF

Two writers outside the manager set the state directly, as they did before this table: the store when a
protection is created (PLACING or OFF), and the trader switching the stop on again (OFF|REMOVED -> PLACING).
"""

from __future__ import annotations

import enum
from types import MappingProxyType

from trailstop_gui.models.domain import SafetyState

_S = SafetyState


class SafetyEvent(enum.StrEnum):
    PLACE = "place"  # persist before acting: a stop is about to be placed
    ACCEPTED = "accepted"  # the broker took it (or it was found at the broker and adopted)
    MOVE = "move"  # a modify or a cancel is in flight
    SETTLED = "settled"  # the move is over (done, refused or failed): the broker holds a stop
    REPLACE = "replace"  # cancelled near the modification cap: placed again right after
    LOST = "lost"  # it should be at the broker and is not (refused, cancelled outside, its order failed)
    FIRE = "fire"  # the broker's stop triggered: its order is (or becomes) the exit
    FILLED = "filled"  # the order it fired into filled the position: the protection closes on it
    TO_EXIT = "to_exit"  # turned into TrailStop's own exit (an SL-M modified to MARKET)
    REMOVE = "remove"  # taken away: the protection ended, or TrailStop's own exit took over
    SWITCH_OFF = "switch_off"  # the trader switched it off, or the broker or product has none
    GIVE_UP = "give_up"  # refused for good: TrailStop's own stop protects alone (an alert says so)


# States in which a broker stop may exist or be on its way (a crash can leave any of them unrecorded).
_AT_BROKER = frozenset({_S.PLACING, _S.PLACED, _S.MOVING, _S.MISSING})
_NAMES_AN_ORDER = _AT_BROKER | {_S.FIRED, _S.EXIT, _S.OFF}

_TABLE: dict[tuple[SafetyState, SafetyEvent], SafetyState] = {
    # A placement starts from anything that holds no live stop (PLACING again: a retry, or another kind
    # or quantity; PLACED or MOVING only when no order id is recorded: a crash left the state behind).
    **{(s, SafetyEvent.PLACE): _S.PLACING for s in (*_AT_BROKER, _S.OFF, _S.REMOVED)},
    # Accepted: placed by us, or adopted after a crash or an ambiguous reply (found by tag or scan). A stop
    # of ours found at the broker is recorded whatever the state said (FIRED: written without its order id
    # before that was fixed), except EXIT, which always names its order.
    **{(s, SafetyEvent.ACCEPTED): _S.PLACED for s in (*_AT_BROKER, _S.OFF, _S.REMOVED, _S.FIRED)},
    **{(s, SafetyEvent.MOVE): _S.MOVING for s in _AT_BROKER},
    **{(s, SafetyEvent.SETTLED): _S.PLACED for s in (_S.PLACED, _S.MOVING)},
    (_S.MOVING, SafetyEvent.REPLACE): _S.PLACING,
    # Lost: also from FIRED (the order it fired into was cancelled or rejected: nothing holds the position).
    **{(s, SafetyEvent.LOST): _S.MISSING for s in (*_AT_BROKER, _S.FIRED)},
    # What the broker did is recorded from every state that can still name an order: FIRED again when the
    # exit path adopts the order of a stop already known to have fired, and OFF too (switched off after it
    # fired: the order id stays, and its order is still the exit). Never from REMOVED: it names none.
    **{(s, SafetyEvent.FIRE): _S.FIRED for s in _NAMES_AN_ORDER},
    # Filled: the broker sold through the stop, whatever the record thought; REMOVED too, a stop taken
    # away after it sold unseen (SafetyStopManager.sold_by_stop: a Kite GTT deleted for TrailStop's own
    # exit had fired just before, chaos-safety c80044e). Written only by safety_stop.close_by_safety_stop.
    **{(s, SafetyEvent.FILLED): _S.FIRED for s in _S},
    **{(s, SafetyEvent.TO_EXIT): _S.EXIT for s in _NAMES_AN_ORDER},
    **{(s, SafetyEvent.REMOVE): _S.REMOVED for s in _NAMES_AN_ORDER},
    **{(s, SafetyEvent.SWITCH_OFF): _S.OFF for s in _S},
    **{(s, SafetyEvent.GIVE_UP): _S.OFF for s in _AT_BROKER},
}

TRANSITIONS = MappingProxyType(_TABLE)
"""(state, event) -> state: every change of a safety stop's state the manager may make."""


class IllegalSafetyTransition(ValueError):
    """An event the safety stop's state machine does not allow in that state."""

    def __init__(self, state: SafetyState, event: SafetyEvent, protection_id: int | None = None) -> None:
        who = f"protection {protection_id}: " if protection_id is not None else ""
        super().__init__(f"{who}safety stop cannot {event.value} when {state.value}")
        self.state = state
        self.event = event
        self.protection_id = protection_id


def next_state(state: SafetyState, event: SafetyEvent, protection_id: int | None = None) -> SafetyState:
    """Where ``event`` takes a safety stop in ``state``; raises IllegalSafetyTransition if nowhere."""
    target = _TABLE.get((state, event))
    if target is None:
        raise IllegalSafetyTransition(state, event, protection_id)
    return target


def allowed(state: SafetyState, event: SafetyEvent) -> bool:
    return (state, event) in _TABLE


__all__ = ["TRANSITIONS", "IllegalSafetyTransition", "SafetyEvent", "allowed", "next_state"]
