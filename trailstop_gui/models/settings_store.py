"""Settings in the protections' database: one JSON value per key (never a secret: those are in keyring)."""

from __future__ import annotations

import json
from typing import Any

import peewee as pw

from trailstop_gui.models import db


class SettingsRepository:
    """Key -> JSON value. Safe to call from any thread."""

    def __init__(self, database: pw.Database) -> None:
        self._db = database

    def get(self, key: str, default: Any = None) -> Any:
        row = db.Setting.get_or_none(db.Setting.key == key)
        return default if row is None else json.loads(row.value)

    def set(self, key: str, value: Any) -> None:
        with self._db.atomic():
            db.Setting.insert(key=key, value=json.dumps(value)).on_conflict_replace().execute()
