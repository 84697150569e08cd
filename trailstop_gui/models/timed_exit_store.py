"""Square-off times per protection, durable beside the protections (table ``timed_exit``, schema 4)."""

from __future__ import annotations

from datetime import time

from trailstop_gui.models import db
from trailstop_gui.models.square_off import format_exit_time, parse_exit_time
from trailstop_gui.models.store import ProtectionStore


class TimedExitStore:
    """Set, clear and read protections' square-off times; every change is journalled."""

    def __init__(self, store: ProtectionStore) -> None:
        self.store = store

    def set(self, protection_id: int, at: time | str | None) -> time | None:
        """Give a protection a square-off time (HH:MM IST), or take it away with None."""
        self.store.get(protection_id)  # KeyError for an unknown protection, before anything is written
        old = self.get(protection_id)
        parsed = None if at is None else parse_exit_time(at)
        with db.database.atomic():
            if parsed is None:
                db.TimedExitRow.delete().where(db.TimedExitRow.protection == protection_id).execute()
            else:
                db.TimedExitRow.insert(
                    protection=protection_id, at=format_exit_time(parsed)
                ).on_conflict_replace().execute()
        if old != parsed:
            self.store.journal(
                "square_off_time",
                protection_id=protection_id,
                old="" if old is None else format_exit_time(old),
                new="" if parsed is None else format_exit_time(parsed),
            )
        return parsed

    def get(self, protection_id: int) -> time | None:
        row = db.TimedExitRow.get_or_none(db.TimedExitRow.protection == protection_id)
        return None if row is None else parse_exit_time(row.at)

    def all(self) -> dict[int, time]:
        """Every protection's own square-off time (ended protections included: callers filter by status)."""
        return {row.protection_id: parse_exit_time(row.at) for row in db.TimedExitRow.select()}
