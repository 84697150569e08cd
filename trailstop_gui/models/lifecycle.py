"""The protection state machine: the one place that knows which transitions are legal.

PENDING --filled--> OPEN --stop/target hit--> TRIGGERED --exit accepted--> EXITING --exit filled--> CLOSED
PENDING --> CANCELLED | REJECTED           (entry never filled)
OPEN    --> CLOSED (reason: external)      (position closed outside the app, found by the reconciler)
OPEN    --> CLOSED (reason: safety stop)   (the broker-held safety stop filled, maybe while the app was away)
OPEN    --> REMOVED                        (user removed the protection; position left open)
EXITING --> EXIT_FAILED --user retry--> TRIGGERED

The broker-held safety stop has its own small state (``SafetyState``) beside the status; it never changes
which transitions are legal: a fired safety stop closes through OPEN -> CLOSED, or, when TrailStop's own
stop fired too, through TRIGGERED -> EXITING -> CLOSED with the safety stop's order as the exit.
"""

from __future__ import annotations

from types import MappingProxyType

from trailstop_gui.models.domain import Status

_LEGAL: dict[Status, frozenset[Status]] = {
    # PENDING -> REMOVED: the user withdrew a protection whose entry is still working.
    Status.PENDING: frozenset({Status.OPEN, Status.CANCELLED, Status.REJECTED, Status.REMOVED}),
    # OPEN -> OPEN is a quantity or rule change (a further partial fill, a modified rule).
    Status.OPEN: frozenset({Status.OPEN, Status.TRIGGERED, Status.CLOSED, Status.REMOVED}),
    # TRIGGERED -> CLOSED: crash recovery found the position already flat (nothing to exit).
    # TRIGGERED -> EXIT_FAILED: the broker refused the exit outright, so it never became EXITING.
    Status.TRIGGERED: frozenset({Status.EXITING, Status.CLOSED, Status.EXIT_FAILED}),
    Status.EXITING: frozenset({Status.CLOSED, Status.EXIT_FAILED}),
    # EXIT_FAILED -> CLOSED: the trader flattened the position by hand after a failed exit.
    Status.EXIT_FAILED: frozenset({Status.TRIGGERED, Status.CLOSED, Status.REMOVED}),
    Status.CLOSED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.REJECTED: frozenset(),
    Status.REMOVED: frozenset(),
}

LEGAL_TRANSITIONS = MappingProxyType(_LEGAL)

TERMINAL = frozenset(status for status, targets in _LEGAL.items() if not targets)
"""States a protection never leaves."""

ARMED = frozenset({Status.OPEN})
"""States in which the trailing engine watches the protection."""

EXIT_IN_FLIGHT = frozenset({Status.TRIGGERED, Status.EXITING})
"""States in which an exit has been decided and must be finished (after a crash, by the reconciler)."""

LIVE = frozenset(_LEGAL) - TERMINAL
"""States that still need attention after a restart."""


class IllegalTransition(ValueError):
    """A transition the state machine does not allow."""

    def __init__(self, current: Status, target: Status, protection_id: int | None = None) -> None:
        who = f"protection {protection_id}: " if protection_id is not None else ""
        super().__init__(f"{who}illegal transition {current.value} -> {target.value}")
        self.current = current
        self.target = target
        self.protection_id = protection_id


def can_transition(current: Status, target: Status) -> bool:
    return target in _LEGAL[current]


def check_transition(current: Status, target: Status, protection_id: int | None = None) -> None:
    """Raise IllegalTransition unless ``current -> target`` is legal."""
    if target not in _LEGAL[current]:
        raise IllegalTransition(current, target, protection_id)
