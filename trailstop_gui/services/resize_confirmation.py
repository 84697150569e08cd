"""When a positions read may change a protection's quantity: only once a later read confirms it.

A positions endpoint trails fills by a moment (PROTOCOLS: "replies can lie by omission"; the chaos runs
measured 0.5-2 s on a bad day). One read that trails the rest of a partly filled entry showed 10 of 30:
the protection shrank to 10 on it, and its exit later sold 10 and left 20 open and unprotected. A read that
trails a sale shows more than is held: a protection grown on it, with its broker-held stop, would sell
what is not there. So a change is applied only when a read sent at least ``confirm_seconds`` after the
read that first showed it still shows a change the same way (the newer read's quantity is applied). The
protected quantity is read before the first positions read is sent, so every fill it counts is older than
that read; a read ``confirm_seconds`` later shows every one of them when the endpoint lags by no more.

Nothing waits: the sighting is remembered here (quantity covered and when first seen, per protection and
direction) and the next reconcile decides. A read that shows no change forgets it; a protection whose
covered quantity changed meanwhile (an entry fill, a resize) starts over. Meanwhile an exit is sized from
the live quantity at send time (positions.exit_share: never more than is held). Kept in memory only: after
a restart the first read is a first sighting again. No Qt; thread-safe (one reconcile per account at a
time, several accounts in parallel).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Collection
from dataclasses import dataclass

from trailstop_gui.models.domain import Protection


class Change(enum.Enum):
    SHRINK = "shrink"
    GROW = "grow"


@dataclass(frozen=True, slots=True)
class Sighting:
    """A change first seen in a read: of which account, from what covered quantity, when the read was sent."""

    account_id: int
    protected: int
    first_read_at: float


def covered(p: Protection) -> int:
    """What the protection covers now: its filled quantity (its ordered quantity before any fill)."""
    return p.filled_quantity or p.quantity


class ResizeConfirmation:
    """Sightings of changed quantities, per protection and direction, until a later read confirms them."""

    def __init__(self, confirm_seconds: float) -> None:
        self.confirm_seconds = confirm_seconds
        self._lock = threading.Lock()
        self._sightings: dict[tuple[int, Change], Sighting] = {}

    def seen(self, p: Protection, change: Change, read_at: float) -> bool:
        """A read sent at ``read_at`` shows ``p`` changed this way: True when it confirms an earlier sighting
        (one at least ``confirm_seconds`` older, from the same covered quantity; then forgotten), False when
        it is a first sighting (remembered) or too soon after one."""
        key = (p.id, change)
        protected = covered(p)
        with self._lock:
            first = self._sightings.get(key)
            if first is None or first.protected != protected or first.first_read_at > read_at:
                self._sightings[key] = Sighting(p.account_id, protected, read_at)
                return False
            if read_at - first.first_read_at < self.confirm_seconds:
                return False
            del self._sightings[key]
            return True

    def remember(self, p: Protection, change: Change, read_at: float) -> None:
        """A read shows ``p`` changed this way, and this read is not to confirm anything (a flat read, which
        has its own confirmation): a first sighting unless one from the same covered quantity is held."""
        key = (p.id, change)
        protected = covered(p)
        with self._lock:
            first = self._sightings.get(key)
            if first is None or first.protected != protected:
                self._sightings[key] = Sighting(p.account_id, protected, read_at)

    def unchanged(self, protection_id: int, change: Change) -> None:
        """A read shows no such change (the full quantity again): the sighting is forgotten."""
        with self._lock:
            self._sightings.pop((protection_id, change), None)

    def keep_only(self, account_id: int, protection_ids: Collection[int]) -> None:
        """Forget the account's sightings of protections that are not among ``protection_ids`` (no longer
        OPEN: closed, exiting or removed)."""
        with self._lock:
            for key, sighting in list(self._sightings.items()):
                if sighting.account_id == account_id and key[0] not in protection_ids:
                    del self._sightings[key]

    def confirmable_at(self, protection_ids: Collection[int]) -> float | None:
        """The earliest time a read may confirm a sighting of one of ``protection_ids`` (None: none held)."""
        with self._lock:
            times = [
                s.first_read_at + self.confirm_seconds
                for (pid, _change), s in self._sightings.items()
                if pid in protection_ids
            ]
        return min(times, default=None)

    def pending(self, protection_id: int) -> list[Change]:
        """The changes of one protection waiting for a confirming read (for logs and tests)."""
        with self._lock:
            return [change for (pid, change) in self._sightings if pid == protection_id]
